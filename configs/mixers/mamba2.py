"""Mamba-2: state-space duality (SSD) with scalar per-head decay, on a small-vocabulary MQAR task.

    python experiments/train.py --config configs/mixers/mamba2.py --workdir /tmp/mamba2

The task is an easier MQAR variant than the quickstart's: a vocabulary of 16 (7 possible keys, 8
values), 4 key-value pairs, sequences of 32 tokens (one SSD chunk of 32). On the quickstart task
(vocabulary 64, 8 pairs, length 64) the full 1000 steps at learning rate 3e-3 reached eval
accuracy 0.865 (442 s of CPU time); on vocabulary 64 with 4 pairs, batch 64, 0.47 by step 350,
and with ngroups=4 0.30 by step 300.

Measured on the 2-core CPU: 600 steps, eval accuracy 1.0 at the end (0.91 at step 200, 0.986 at
step 250, 0.999 at step 300), 144 s of CPU time (171 s wall, evaluating every 50 steps, one core
each for two runs, machine shared at load ~3).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "mamba2"
    config.model.vocab_size = 16
    config.model.mixer_kwargs = dict(head_dim=16, d_state=16, chunk_size=32)
    config.data.task_kwargs = dict(vocab_size=16, seq_len=32, num_kv_pairs=4)
    config.train.num_steps = 600
    return config
