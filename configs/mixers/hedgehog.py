"""Hedgehog linear attention with learned softmax-mimicking feature maps on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/hedgehog.py --workdir /tmp/hedgehog
"""

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "hedgehog"
    config.model.mixer_kwargs = dict(feature_dim=0, sow_distillation_loss=False)  # 0: head_dim
    return config
