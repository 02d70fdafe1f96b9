"""Mamba: a selective state-space scan with a short conv and a gate, on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/mamba.py --workdir /tmp/mamba
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "mamba"
    # scan_mode "chunked" bounds memory on long sequences; "associative" is fastest here.
    config.model.mixer_kwargs = dict(d_state=16, expand=2, scan_mode="associative")
    return config
