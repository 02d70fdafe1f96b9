"""Softplus attention (l1-normalised, log-length scaled; LSSA-style) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/softplus_attention.py --workdir /tmp/softplus_attention

Measured on the 2-core CPU: 1000 steps, eval accuracy 0.99 by step 600, where the run was stopped
(75 s of CPU time, 584 s wall with the machine shared at load ~18).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "attention"
    # The length factor log(n) / log(softplus_train_len) is 1 at the training length.
    config.model.mixer_kwargs = dict(score="softplus", softplus_train_len=64)
    return config
