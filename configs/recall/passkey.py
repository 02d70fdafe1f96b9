"""Passkey retrieval (Mohtashami & Jaggi 2023): a 5-digit key hidden in a long haystack.

    python experiments/recall.py --config recall/passkey --workdir /tmp/passkey
    python experiments/recall.py --config recall/passkey:mamba --workdir /tmp/passkey_mamba

The argument is comma-separated mixers (default attention,mamba). The haystack is a repeated
16-token phrase (as the paper's repeated sentences); the key sits at a uniformly random depth.
Trained at 1024 tokens; evaluations ``len_<L>`` at L = 1K ... 16K score all five digits
(exact match). ``accuracy_vs_length.png`` draws them per run. Budget: 4,000 steps of batch 32.
"""

from configs.recall._mixers import length_evals, mixer_model, mixer_names
from sequax.train.config import default_config

TRAIN_LEN = 1024
EVAL_LENGTHS = (1024, 2048, 4096, 8192, 16384)


def get_config(arg: str = "attention,mamba"):
    c = default_config()
    c.model.vocab_size = 64
    c.model.d_model = 128
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.data.task = "passkey"
    c.data.task_kwargs = dict(seq_len=TRAIN_LEN, num_digits=5, vocab_size=64, filler="repeat")
    c.train.num_steps = 4000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.optimizer.warmup_steps = 200
    c.eval.every = 1000
    c.checkpoint.every = 1000
    c.evals = length_evals(EVAL_LENGTHS, every=lambda n: 1000 if n == TRAIN_LEN else 0)
    c.experiment.runs = {m: mixer_model(m, max(EVAL_LENGTHS)) for m in mixer_names(arg)}
    return c
