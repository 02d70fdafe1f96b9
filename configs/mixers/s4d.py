"""S4D (diagonal state-space model, S4D-Lin init, FFT convolution) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/s4d.py --workdir /tmp/s4d
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "s4d"
    config.model.mixer_kwargs = dict(d_state=64, ssm_init="lin", discretization="zoh")
    return config
