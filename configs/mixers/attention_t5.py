"""Softmax attention with T5's learned, bucketed relative position bias on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/attention_t5.py --workdir /tmp/attention_t5
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "attention"
    config.model.mixer_kwargs = dict(positional="t5", t5_num_buckets=32, t5_max_distance=64)
    return config
