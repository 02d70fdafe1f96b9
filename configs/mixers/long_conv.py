"""Directly learned long convolution, squashed and smoothed, on a 2-pair MQAR task.

    python experiments/train.py --config configs/mixers/long_conv.py --workdir /tmp/long_conv

The task is a much easier MQAR variant than the quickstart's: a vocabulary of 16 (7 possible keys,
8 values), 2 key-value pairs, sequences of 32 tokens; the model is twice as wide (d_model 128) and
keeps the gated MLP (mlp_ratio 2), as configs/mixers/s4d.py, which says why: time-invariant mixers
showed no recall with 4 pairs. At learning rate 3e-3 runs stayed at eval accuracy 0.54-0.58
through steps 350-500 (also without the smoothing, or with init_scale 0.2: 0.75 at step 600); at
1e-2 a 600-step schedule reached 0.83.

Measured on the 2-core CPU: 1000 steps, eval accuracy 1.0 at the end (0.85 at step 450, 0.93 at
step 500, 0.99 at step 600), 109 s of CPU time (108 s wall, evaluating every 50 steps, one core
each for two runs, machine shared at load ~2.3).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "long_conv"
    config.model.vocab_size = 16
    config.model.d_model = 128
    config.model.mlp_ratio = 2.0
    config.model.mixer_kwargs = dict(max_length=64, regularizer="both", squash_lambda=0.003)
    config.data.task_kwargs = dict(vocab_size=16, seq_len=32, num_kv_pairs=2)
    config.optimizer.learning_rate = 1e-2
    config.train.num_steps = 1000
    return config
