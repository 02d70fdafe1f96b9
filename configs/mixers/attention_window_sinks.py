"""Sliding-window attention with sinks and a distance cap (LM-Infinite) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/attention_window_sinks.py --workdir /tmp/attention_window_sinks

Measured on the 2-core CPU: 1000 steps, eval accuracy 0.998 by step 600, where the run was stopped
(65 s of CPU time, 489 s wall with the machine shared at load ~19); 0.37 at step 500.
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "attention"
    # Λ-shaped mask: 4 sink tokens + a 32-token window; RoPE sees sinks at distance <= 32.
    # Decoding keeps a ring-buffer KV cache of 4 + 32 + 1 slots.
    config.model.mixer_kwargs = dict(window=32, num_sinks=4, max_distance=32)
    return config
