r"""Byte-level language modelling on local text; by default the Python standard library's sources.

    python experiments/lm.py --config lm/bytes --workdir /tmp/lm_bytes
    python experiments/lm.py --config lm/bytes:attention,mamba,gla --workdir /tmp/lm_bytes3 \
        --config.data.task_kwargs.path=/path/to/a/text/file/or/folder
    python experiments/sample.py --workdir /tmp/lm_bytes/attention --prompt "def " --temperature 0.8

The argument is comma-separated mixers (default attention), one run each (WORKDIR/<mixer>).
Data: every ``.py`` file beside Python's ``os.py`` (about 170 files, 4.7 MB on CPython 3.11), so
it runs offline; ``data.task_kwargs.path`` points at any file or folder instead. Documents are
packed with ``segment_ids`` (convolution mixers, which cannot honour them, read one document
per row instead). 4 layers, d_model 256, windows of 512 bytes, batch 32. The validation split
(every 20th file) is scored in full: ``bits_per_byte`` in metrics.json and bits_per_byte.png.
Budget: 3,000 steps.
"""

from configs.recall._mixers import mixer_model, mixer_names
from sequax.train.config import default_config

SEQ_LEN = 512
UNPACKED = ("s4", "s4d", "hyena", "sgconv", "long_conv", "h3")  # convolutions cross packed segments


def lm_config(seq_len: int = SEQ_LEN, num_steps: int = 3000):
    c = default_config()
    c.model.vocab_size = 256
    c.model.d_model = 256
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.mlp_ratio = 2.0
    c.data.task = "byte_text"
    c.data.task_kwargs = dict(seq_len=seq_len)
    c.train.num_steps = num_steps
    c.train.batch_size = 32
    c.train.log_every = 50
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 200
    c.eval.every = 500
    c.checkpoint.every = 500
    c.evals = {"validation": {"split": "validation", "num_batches": "full"}}
    return c


def get_config(arg: str = "attention"):
    c = lm_config()
    runs = {}
    for mixer in mixer_names(arg):
        overrides = mixer_model(mixer, SEQ_LEN)
        overrides.pop("optimizer")  # one learning rate for language modelling
        overrides["data"] = {"task_kwargs": dict(seq_len=SEQ_LEN, packing=mixer not in UNPACKED)}
        runs[mixer] = overrides
    c.experiment.runs = runs
    return c
