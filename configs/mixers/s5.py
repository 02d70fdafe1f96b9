"""S5 (one MIMO diagonal SSM, block HiPPO-N init, parallel scan) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/s5.py --workdir /tmp/s5
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "s5"
    config.model.mixer_kwargs = dict(state_size=32, blocks=4, discretization="zoh")
    return config
