"""H3 (shift SSM + diagonal SSM with multiplicative q/k/v gating) on a small-vocabulary MQAR task.

    python experiments/train.py --config configs/mixers/h3.py --workdir /tmp/h3

The task is an easier MQAR variant than the quickstart's: a vocabulary of 16 (7 possible keys, 8
values), 4 key-value pairs, sequences of 32 tokens. On the quickstart task (vocabulary 64, 8 pairs,
length 64) at learning rate 1e-2 a run was at eval accuracy 0.22 by step 350 of 400.

Measured on the 2-core CPU: 600 steps, eval accuracy 1.0 at the end (0.41 at step 100, 0.97 at step
150, 1.0 from step 200), 166 s of CPU time (166 s wall, evaluating every 50 steps, one core each
for two runs, machine shared at load ~3).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "h3"
    config.model.vocab_size = 16
    config.model.mixer_kwargs = dict(d_state=64)
    config.data.task_kwargs = dict(vocab_size=16, seq_len=32, num_kv_pairs=4)
    config.train.num_steps = 600
    return config
