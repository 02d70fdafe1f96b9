"""Mamba-2: state-space duality (SSD) with scalar per-head decay, on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/mamba2.py --workdir /tmp/mamba2
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "mamba2"
    config.model.mixer_kwargs = dict(head_dim=16, d_state=16, chunk_size=32)
    return config
