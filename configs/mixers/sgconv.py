"""SGConv (multi-scale decaying global convolution) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/sgconv.py --workdir /tmp/sgconv

Not yet tuned: no run of this config on the 2-core CPU has yet been measured to reach 0.9 eval
accuracy within its 1000-step budget (tests/test_configs.py lists it in NOT_YET_TUNED).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "sgconv"
    config.model.mixer_kwargs = dict(max_length=256, kernel_dim=16, alpha=0.5)
    return config
