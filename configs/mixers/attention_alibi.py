"""Softmax attention with ALiBi linear distance biases instead of RoPE on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/attention_alibi.py --workdir /tmp/attention_alibi
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "attention"
    config.model.mixer_kwargs = dict(positional="alibi")
    return config
