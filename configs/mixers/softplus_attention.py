"""Softplus attention (l1-normalised, log-length scaled; LSSA-style) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/softplus_attention.py --workdir /tmp/softplus_attention
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "attention"
    # The length factor log(n) / log(softplus_train_len) is 1 at the training length.
    config.model.mixer_kwargs = dict(score="softplus", softplus_train_len=64)
    return config
