"""DeltaNet (delta-rule fast weights, short conv + SiLU, L2-normalised q/k) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/deltanet.py --workdir /tmp/deltanet
"""

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "deltanet"
    config.model.mixer_kwargs = dict(short_conv_size=4, chunk_size=64)
    config.train.num_steps = 600  # passes 0.99 eval accuracy by step ~300
    return config
