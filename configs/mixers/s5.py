"""S5 (one MIMO diagonal SSM, block HiPPO-N init, parallel scan) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/s5.py --workdir /tmp/s5

Not yet tuned: no run of this config on the 2-core CPU has yet been measured to reach 0.9 eval
accuracy within its 1000-step budget (tests/test_configs.py lists it in NOT_YET_TUNED).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "s5"
    config.model.mixer_kwargs = dict(state_size=32, blocks=4, discretization="zoh")
    return config
