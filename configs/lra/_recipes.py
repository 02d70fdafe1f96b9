"""Published Long Range Arena recipes, task x mixer, and the config built from one.

Sources (hyper-parameters as the papers' released configs give them):

- ``transformer``: the LRA paper's configs (google-research/long-range-arena,
  ``*/configs/base_*_config.py``). Their ``constant * linear_warmup *
  rsqrt_decay`` schedule peaks at ``lr / sqrt(warmup)``; that peak is used
  here with warmup and cosine decay. Absolute learned positions, bidirectional.
- ``s4``: S4 v2 (state-spaces/s4 ``configs/experiment/lra/s4-lra-*.yaml``):
  layers, width, ``d_state`` 64, lr, weight decay, batch, epochs, dropout;
  SSM parameters at their own lr without weight decay; bidirectional.
- ``s4d``: the S4D paper trains LRA with S4's settings; ``ssm_init="legs"``
  (S4D-LegS, the published row).
- ``s5``: S5 (lindermanlab/S5 ``bin/run_experiments/run_lra_*.sh``): depth,
  ``d_model`` (H), ``state_size`` (P), ``blocks`` (J), lr = ``lr_factor x
  ssm_lr_base``, ``ssm_lr``, weight decay, batch, epochs, dropout, warmup
  (``warmup_end`` epochs); bidirectional.
- ``sgconv``: the SGConv paper builds on the S4 code and settings; S4's recipe
  with the SGConv kernel (``kernel_dim`` 32, ``alpha`` 0.5).
- ``mamba``, ``hyena``, ``gla``: no published LRA recipe; S4's shape and
  schedule, their own usual lr, causal (Mamba and GLA have no bidirectional
  form here; Hyena runs two-sided filters).

The backbone is sequax's (pre-norm RMSNorm blocks); the S4/S5 codes use
batch norm, post-norm for some tasks. Mixers whose block carries its own GLU
output projection (S4, S4D, S5, SGConv) run without the gated MLP, as in
their codes. Step counts are ``epochs x ceil(N_train / batch)``.
"""

from __future__ import annotations

import math

from sequax.experiments.runner import merge
from sequax.train.config import default_config

# task -> what the data is: task name, options, examples in the training split, model head.
TASKS = {
    "listops": dict(task="listops", task_kwargs={}, num_train=96_000, classes=10, vocab=16, seq_len=2000),
    "text": dict(task="lra_text", task_kwargs=dict(max_length=4096), num_train=25_000, classes=2, vocab=256,
                 seq_len=4096),
    "retrieval": dict(task="lra_retrieval", task_kwargs=dict(max_length=4000), num_train=147_086, classes=2,
                      vocab=256, seq_len=4000, head="retrieval"),
    "image": dict(task="lra_image", task_kwargs={}, num_train=45_000, classes=10, vocab=256, seq_len=1024),
    "pathfinder": dict(task="pathfinder", task_kwargs=dict(resolution=32), num_train=160_000, classes=2,
                       vocab=256, seq_len=1024),
    "path_x": dict(task="pathfinder", task_kwargs=dict(resolution=128), num_train=160_000, classes=2,
                   vocab=256, seq_len=16384),
}


def _s4(layers, width, lr, wd, batch, epochs, dropout=0.0, ssm_lr=1e-3, warmup_epochs=1.0, pooling="mean",
        dt_min=1e-3):
    return dict(mixer="s4", mixer_kwargs=dict(d_state=64, dt_min=dt_min), layers=layers, d_model=width, lr=lr,
                ssm_lr=ssm_lr, wd=wd, batch=batch, epochs=epochs, dropout=dropout, warmup_epochs=warmup_epochs,
                pooling=pooling, mlp_ratio=0.0, causal=False)


def _s5(layers, width, state, blocks, lr_factor, ssm_lr, wd, batch, epochs, dropout, warmup_epochs, dt_min=1e-3):
    return dict(mixer="s5", mixer_kwargs=dict(state_size=state, blocks=blocks, dt_min=dt_min), layers=layers,
                d_model=width, lr=lr_factor * ssm_lr, ssm_lr=ssm_lr, wd=wd, batch=batch, epochs=epochs,
                dropout=dropout, warmup_epochs=warmup_epochs, pooling="mean", mlp_ratio=0.0, causal=False)


def _transformer(layers, width, heads, mlp, lr, warmup, wd, batch, steps, dropout=0.0, pooling="mean"):
    return dict(mixer="attention", mixer_kwargs=dict(positional="none"), layers=layers, d_model=width, heads=heads,
                lr=lr / math.sqrt(warmup), ssm_lr=0.0, wd=wd, batch=batch, steps=steps, warmup_steps=warmup,
                dropout=dropout, pooling=pooling, mlp_ratio=mlp / width, causal=False, learned_positions=True)


S4 = {
    "listops": _s4(8, 128, 0.01, 0.05, 50, 40),
    "text": _s4(6, 256, 0.01, 0.05, 16, 32),
    "retrieval": _s4(6, 256, 0.01, 0.05, 64, 20),
    "image": _s4(6, 512, 0.01, 0.05, 50, 200, dropout=0.1),
    "pathfinder": _s4(6, 256, 0.004, 0.03, 64, 200, pooling="last"),
    "path_x": _s4(6, 256, 0.001, 0.05, 16, 50, ssm_lr=5e-4, warmup_epochs=5, dt_min=1e-4),
}

RECIPES = {
    "transformer": {
        "listops": _transformer(6, 512, 8, 2048, 0.05, 1000, 0.1, 32, 5000),
        "text": _transformer(4, 256, 4, 1024, 0.05, 8000, 0.1, 32, 20000),
        "retrieval": _transformer(4, 128, 4, 512, 0.05, 8000, 0.1, 32, 5000),
        "image": dict(_transformer(1, 32, 1, 64, 5e-4, 1, 0.0, 256, 200 * 176, dropout=0.3),
                      warmup_steps=176),
        "pathfinder": dict(_transformer(1, 128, 4, 128, 1e-3, 1, 0.0, 512, 200 * 313, dropout=0.2),
                           warmup_steps=313),
        "path_x": dict(_transformer(1, 128, 4, 128, 1e-3, 1, 0.0, 512, 200 * 313, dropout=0.2),
                       warmup_steps=313),
    },
    "s4": S4,
    "s4d": {task: dict(r, mixer="s4d", mixer_kwargs=dict(d_state=64, ssm_init="legs",
                                                         dt_min=r["mixer_kwargs"]["dt_min"]))
            for task, r in S4.items()},
    "s5": {
        "listops": _s5(8, 128, 16, 8, 3, 1e-3, 0.04, 50, 40, 0.0, 1),
        "text": _s5(6, 256, 192, 12, 4, 1e-3, 0.07, 50, 35, 0.1, 0),
        "retrieval": _s5(6, 128, 256, 16, 2, 1e-3, 0.05, 32, 20, 0.0, 1),
        "image": _s5(6, 512, 384, 3, 4.5, 1e-3, 0.07, 50, 250, 0.1, 1),
        "pathfinder": _s5(6, 192, 256, 8, 5, 9e-4, 0.03, 64, 200, 0.05, 1),
        "path_x": _s5(6, 128, 256, 16, 3, 6e-4, 0.06, 32, 75, 0.0, 1, dt_min=1e-4),
    },
    "sgconv": {task: dict(r, mixer="sgconv", mixer_kwargs=dict(kernel_dim=32, alpha=0.5)) for task, r in S4.items()},
    "mamba": {task: dict(r, mixer="mamba", mixer_kwargs=dict(d_state=16, expand=2), lr=1e-3, ssm_lr=0.0, wd=0.1,
                         mlp_ratio=2.0, causal=True)
              for task, r in S4.items()},
    "hyena": {task: dict(r, mixer="hyena", mixer_kwargs=dict(order=2, filter_width=64), lr=1e-3, ssm_lr=0.0,
                         mlp_ratio=2.0)
              for task, r in S4.items()},
    "gla": {task: dict(r, mixer="gla", mixer_kwargs=dict(), lr=1e-3, ssm_lr=0.0, wd=0.1, mlp_ratio=2.0, causal=True,
                       heads=4)
            for task, r in S4.items()},
}
MIXERS = tuple(RECIPES)


def _set_length_options(recipe, seq_len):
    kwargs = dict(recipe["mixer_kwargs"])
    if recipe["mixer"] in ("sgconv", "hyena"):
        kwargs["max_length"] = seq_len
    if recipe["mixer"] == "s4":
        kwargs["l_max"] = seq_len
    return kwargs


def run_overrides(task: str, mixer: str) -> dict:
    """The nested config overrides of one (task, mixer) recipe."""
    if task not in TASKS:
        raise ValueError(f"unknown LRA task {task!r}; choose one of {', '.join(TASKS)}")
    if mixer not in RECIPES:
        raise ValueError(f"no LRA recipe for {mixer!r}; choose one of {', '.join(MIXERS)} or 'all'")
    t, r = TASKS[task], RECIPES[mixer][task]
    steps_per_epoch = -(-t["num_train"] // r["batch"])
    steps = r.get("steps") or int(r["epochs"] * steps_per_epoch)
    warmup = r.get("warmup_steps", int(r.get("warmup_epochs", 0) * steps_per_epoch))
    eval_every = min(steps_per_epoch, max(steps // 10, 1))
    return {
        "model": dict(mixer=r["mixer"], mixer_kwargs=_set_length_options(r, t["seq_len"]), d_model=r["d_model"],
                      num_layers=r["layers"], num_heads=r.get("heads", 4), mlp_ratio=r["mlp_ratio"],
                      causal=r["causal"], dropout=r["dropout"], pooling=r["pooling"],
                      position_embedding="learned" if r.get("learned_positions") else "none",
                      max_length=t["seq_len"] if r.get("learned_positions") else 0,
                      # bf16 where attention needs it to be fast (cuDNN); the SSM recipes are fp32 as published.
                      dtype="bfloat16" if r["mixer"] == "attention" else "float32"),
        "optimizer": dict(learning_rate=r["lr"], ssm_learning_rate=r["ssm_lr"], weight_decay=r["wd"],
                          warmup_steps=warmup),
        "train": dict(num_steps=steps, batch_size=r["batch"]),
        "eval": dict(every=eval_every),
        "checkpoint": dict(every=eval_every),
    }


def lra_config(task: str, arg: str):
    """The config of ``task`` for mixer ``arg`` (one run), or every mixer (``arg="all"``, one run each)."""
    if task not in TASKS:
        raise ValueError(f"unknown LRA task {task!r}; choose one of {', '.join(TASKS)}")
    t = TASKS[task]
    c = default_config()
    c.model.vocab_size = t["vocab"]
    c.model.head = t.get("head", "classification")
    c.model.num_classes = t["classes"]
    c.model.causal = False
    c.data.task = t["task"]
    c.data.task_kwargs = dict(t["task_kwargs"])
    c.optimizer.b2 = 0.999
    c.optimizer.schedule = "cosine"
    c.train.log_every = 100
    c.eval.batch_size = 0
    c.evals = {
        "validation": {"split": "validation", "num_batches": "full"},
        "test": {"split": "test", "num_batches": "full", "every": 0},
    }
    mixers = MIXERS if arg == "all" else tuple(m.strip() for m in arg.split(",") if m.strip())
    if len(mixers) == 1:
        # One run: the config itself is that run, so --config.KEY=VALUE overrides reach it and
        # experiments/train.py trains it too.
        merge(c, run_overrides(task, mixers[0]), f"lra/{task}")
        c.experiment.runs = {f"{task}_{mixers[0]}": {}}
    else:  # each run carries its whole recipe (its keys win over command-line overrides of the same keys)
        c.experiment.runs = {f"{task}_{m}": run_overrides(task, m) for m in mixers}
    return c
