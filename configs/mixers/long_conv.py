"""Directly learned long convolution, squashed and smoothed, on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/long_conv.py --workdir /tmp/long_conv

Not yet tuned: no run of this config on the 2-core CPU has yet been measured to reach 0.9 eval
accuracy within its 1000-step budget (tests/test_configs.py lists it in NOT_YET_TUNED).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "long_conv"
    config.model.mixer_kwargs = dict(max_length=256, regularizer="both", squash_lambda=0.003)
    return config
