"""Selective copying (Mamba paper, table 1): 16 tokens scattered in 4096 positions, copied in order.

    python experiments/recall.py --config recall/selective_copying --workdir /tmp/selective_copying
    python experiments/recall.py --config recall/selective_copying:mamba,s4,hyena --workdir /tmp/sc3

The argument is comma-separated mixers (default mamba,hyena,s4d,attention). 2 layers, d_model
64, vocabulary 16; the evaluation scores every copied token (and, in metrics.json, whole
sequences). Published (token accuracy): Mamba 99.8, H3 with S6 99.7, S4 18.3, Hyena 28.4.
Budget: 8,000 steps of batch 32 (the paper trains 400K steps).
"""

from configs.recall._mixers import mixer_model, mixer_names
from sequax.train.config import default_config

REGION, TOKENS = 4096, 16


def get_config(arg: str = "mamba,hyena,s4d,attention"):
    c = default_config()
    c.model.vocab_size = 16
    c.model.d_model = 64
    c.model.num_layers = 2
    c.data.task = "selective_copying"
    c.data.task_kwargs = dict(vocab_size=16, seq_len=REGION, num_tokens=TOKENS)
    c.train.num_steps = 8000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.optimizer.warmup_steps = 500
    c.eval.every = 1000
    c.eval.num_batches = 4
    c.checkpoint.every = 1000
    c.experiment.runs = {m: mixer_model(m, REGION + TOKENS) for m in mixer_names(arg)}
    return c
