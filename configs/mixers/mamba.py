"""Mamba: a selective state-space scan with a short conv and a gate, on a small MQAR task.

    python experiments/train.py --config configs/mixers/mamba.py --workdir /tmp/mamba

The task is an easier MQAR variant than the quickstart's: a vocabulary of 16 (7 possible keys, 8
values), 4 key-value pairs, sequences of 32 tokens. On the quickstart task (vocabulary 64, 8 pairs,
length 64) and on vocabulary 64 with 4 pairs (lengths 32 and 64, learning rates 3e-3 to 1e-2, with
and without the gated MLP, d_state 8 and 16) runs stayed at eval accuracy 0.21-0.32 through step
500. On the CPU the scan runs in the ``sequential`` mode: the same recurrence as the default
associative scan, about twice as fast on one CPU core in a micro-benchmark (88 against 165 ms a layer's
forward and backward pass at batch 32, length 64, d_state 8).

Measured on the 2-core CPU: 600 steps, eval accuracy 1.0 at the end (0.89 at step 250, 0.95 at step
300, 0.995 at step 400), 211 s of CPU time (390 s wall, evaluating every 50 steps, one core each
for two runs, machine shared at load ~4).
"""
import jax

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "mamba"
    config.model.vocab_size = 16
    # The sequential scan only where it was measured faster, the CPU; elsewhere mode None lets
    # backend "auto" pick the Pallas kernel.
    mode = "sequential" if jax.default_backend() == "cpu" else None
    config.model.mixer_kwargs = dict(d_state=16, expand=2, mode=mode)
    config.data.task_kwargs = dict(vocab_size=16, seq_len=32, num_kv_pairs=4)
    config.train.num_steps = 600
    return config
