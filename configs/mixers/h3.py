"""H3 (shift SSM + diagonal SSM with multiplicative q/k/v gating) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/h3.py --workdir /tmp/h3
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "h3"
    config.model.mixer_kwargs = dict(d_state=64)
    return config
