"""S4D (diagonal state-space model, S4D-Lin init, FFT convolution) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/s4d.py --workdir /tmp/s4d

Not yet tuned: no run of this config on the 2-core CPU has yet been measured to reach 0.9 eval
accuracy within its 1000-step budget (tests/test_configs.py lists it in NOT_YET_TUNED).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "s4d"
    config.model.mixer_kwargs = dict(d_state=64, ssm_init="lin", discretization="zoh")
    return config
