r"""MQAR sweep over width and length for each mixer (Zoology, Arora et al. 2023, figure 2).

    python experiments/recall.py --config recall/mqar_sweep --workdir /tmp/mqar_sweep
    python experiments/recall.py --config recall/mqar_sweep:attention,mamba --workdir /tmp/mqar_two
    python experiments/recall.py --config recall/mqar_sweep:all --workdir /tmp/mqar_all \
        --config.experiment.only='*_T256_*'

The argument is comma-separated mixers, ``zoology`` (default: attention, mamba, gla, hyena,
deltanet) or ``all`` (every mixer with recall settings in configs/recall/_mixers.py). Runs are
``<mixer>_T<seq_len>_d<d_model>`` for Zoology's (seq_len, key-value pairs) in {(64, 4),
(128, 8), (256, 16)} and d_model in {64, 128, 256, 512}: vocabulary 8192, 2 layers, no MLP,
each trained in WORKDIR/<run>. ``mqar_width.png``: accuracy against width, one line per mixer,
one panel per length; ``--config.experiment.only`` picks runs (fnmatch patterns).

Published (Zoology): attention ~100% at every width; gated convolutions (Hyena, H3) degrade as
the sequence grows; GLA ~95%, Mamba at most ~85% at comparable state sizes; DeltaNet ~99%.
Budget: 8,000 steps of batch 64 a run (Zoology trains longer, sweeping the learning rate).
GLA, Mamba and Hyena train at 1e-3 here (``LEARNING_RATES``): measured on an H200 at T = 256,
d_model 128, 8,000 steps, token accuracy GLA 36.4% at 1e-3 against 0.13% at 3e-4 (and 0.02% after
4,000 steps at the recall configs' 1e-2), Mamba 3.46% / 0.38%, Hyena 0.84% / 0.03% (RESULTS.md
row 5); GLA leaves the plateau only after ~5,000 steps, so 4,000 were too few.
"""

from configs.recall._mixers import mixer_model, mixer_names
from sequax.train.config import default_config

LENGTHS = ((64, 4), (128, 8), (256, 16))
LEARNING_RATES = {"gla": 1e-3, "mamba": 1e-3, "hyena": 1e-3}  # this task's measured rates
WIDTHS = (64, 128, 256, 512)


def get_config(arg: str = "zoology"):
    c = default_config()
    c.model.vocab_size = 8192
    c.model.num_layers = 2
    c.model.num_heads = 4
    c.model.mlp_ratio = 0.0
    c.data.task = "mqar"
    c.data.task_kwargs = dict(vocab_size=8192, seq_len=256, num_kv_pairs=16)
    c.train.num_steps = 8000
    c.train.batch_size = 64
    c.train.log_every = 100
    c.optimizer.warmup_steps = 200
    c.optimizer.weight_decay = 0.1
    c.eval.every = 1000
    c.eval.num_batches = 16
    c.checkpoint.every = 1000
    runs = {}
    for mixer in mixer_names(arg):
        for seq_len, pairs in LENGTHS:
            for width in WIDTHS:
                overrides = mixer_model(mixer, seq_len)
                overrides["model"]["d_model"] = width
                overrides["data"] = {"task_kwargs": dict(vocab_size=8192, seq_len=seq_len, num_kv_pairs=pairs)}
                if mixer in LEARNING_RATES:
                    overrides["optimizer"]["learning_rate"] = LEARNING_RATES[mixer]
                runs[f"{mixer}_T{seq_len}_d{width}"] = overrides
    c.experiment.runs = runs
    return c
