"""A tiny, fast 300-step run for the preemption tests (subprocesses of experiments/train.py).

    python experiments/train.py --config tests/train/tiny_run_config.py --workdir /tmp/tiny
"""

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.d_model = 16
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.model.vocab_size = 16
    config.model.dropout = 0.1  # the RNG must be restored too
    config.data.task_kwargs = dict(vocab_size=16, seq_len=16, num_kv_pairs=2)
    config.train.num_steps = 300
    config.train.batch_size = 4
    config.train.log_every = 10
    config.optimizer.warmup_steps = 20
    config.eval.every = 100
    config.eval.num_batches = 1
    config.checkpoint.every = 20
    config.checkpoint.keep = 2
    return config
