"""DeltaNet (delta-rule fast weights, SiLU + L2-normalised q/k) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/deltanet.py --workdir /tmp/deltanet
"""

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "deltanet"
    config.model.mixer_kwargs = dict(qk_activation="silu", chunk_size=64)
    return config
