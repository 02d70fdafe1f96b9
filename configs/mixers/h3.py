"""H3 (shift SSM + diagonal SSM with multiplicative q/k/v gating) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/h3.py --workdir /tmp/h3

Not yet tuned: no run of this config on the 2-core CPU has yet been measured to reach 0.9 eval
accuracy within its 1000-step budget (tests/test_configs.py lists it in NOT_YET_TUNED).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "h3"
    config.model.mixer_kwargs = dict(d_state=64)
    return config
