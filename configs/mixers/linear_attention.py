"""Kernelized linear attention (elu + 1 features, normalised) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/linear_attention.py --workdir /tmp/linear_attention
"""

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "linear_attention"
    config.model.mixer_kwargs = dict(feature_map="elu", normalize=True)
    return config
