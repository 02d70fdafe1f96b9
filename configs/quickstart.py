"""Quickstart: a 2-layer attention model learns multi-query associative recall.

Trains on a 2-core CPU in a couple of minutes, no download:

    python experiments/train.py --config configs/quickstart.py --workdir /tmp/quickstart
"""

from sequax.train.config import default_config


def get_config():
    config = default_config()
    config.model.mixer = "attention"
    config.model.vocab_size = 64
    config.model.d_model = 64
    config.model.num_layers = 2
    config.model.num_heads = 4
    config.data.task = "mqar"
    config.data.task_kwargs = dict(vocab_size=64, seq_len=64, num_kv_pairs=8)
    config.train.num_steps = 1000
    config.train.batch_size = 64
    config.optimizer.learning_rate = 3e-3
    config.optimizer.warmup_steps = 50
    config.eval.every = 250
    config.checkpoint.every = 500
    return config
