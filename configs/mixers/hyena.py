"""Hyena (order-2 gated implicit long convolutions) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/hyena.py --workdir /tmp/hyena

Not yet tuned: no run of this config on the 2-core CPU has yet been measured to reach 0.9 eval
accuracy within its 1000-step budget (tests/test_configs.py lists it in NOT_YET_TUNED).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "hyena"
    # max_length bounds the filters and the decode cache; MQAR sequences are 64 long.
    config.model.mixer_kwargs = dict(order=2, max_length=256, filter_width=64)
    return config
