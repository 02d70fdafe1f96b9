"""Position schemes and the shared decoder-only setup of the length-generalisation configs.

Each task config (copy, reverse, addition, sort) takes an argument: comma-separated position
schemes or ``all`` (default) from :data:`SCHEMES` (nope, rope, alibi, t5, learned), each a run
``<task>_<scheme>``; RoPE is also scored with position interpolation (linear) and NTK scaling at
every length (``experiment.rope_scalings``). A 4-layer decoder-only transformer (d_model 256)
trains on n in [1, 20] (Kazemnejad et al. 2023: train <= 20, test <= 40); evaluations
``len_<n>`` at n = 10 ... 60 score exact match and ``accuracy_vs_length.png`` draws them.
Published: NoPE generalises best, then T5's bias; ALiBi, RoPE and learned positions fall off soon
past the training lengths. Budget: 10,000 steps of batch 64 a run.
"""

from __future__ import annotations

from sequax.train.config import default_config

# scheme -> model overrides (attention mixer). "learned": absolute embeddings added to the tokens.
SCHEMES = {
    "nope": {"mixer_kwargs": {"positional": "none"}},
    "rope": {"mixer_kwargs": {"positional": "rope"}},
    "alibi": {"mixer_kwargs": {"positional": "alibi"}},
    "t5": {"mixer_kwargs": {"positional": "t5", "t5_num_buckets": 32, "t5_max_distance": 128}},
    "learned": {"mixer_kwargs": {"positional": "none"}, "position_embedding": "learned"},
}


def scheme_names(arg: str):
    names = list(SCHEMES) if arg == "all" else [s.strip() for s in arg.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCHEMES]
    if unknown or not names:
        raise ValueError(f"unknown position scheme(s) {unknown or arg!r}; choose from {', '.join(SCHEMES)} or all")
    return names


def decoder_config(task: str, task_kwargs: dict, eval_lengths, max_seq_len: int, num_steps: int):
    """A decoder-only transformer on ``task``, evaluated at each ``n`` of ``eval_lengths`` (``len_<n>``)."""
    c = default_config()
    c.model.mixer = "attention"
    c.model.d_model = 256
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.mlp_ratio = 2.0
    c.model.vocab_size = 256
    c.model.max_length = max_seq_len  # for learned positions: the longest evaluation
    c.data.task = task
    c.data.task_kwargs = dict(task_kwargs)
    c.train.num_steps = num_steps
    c.train.batch_size = 64
    c.train.log_every = 100
    c.optimizer.learning_rate = 3e-4
    c.optimizer.warmup_steps = 500
    c.optimizer.weight_decay = 0.05
    c.eval.every = 2000
    c.checkpoint.every = 2000
    c.evals = {f"len_{n}": {"task_kwargs": {"min_len": n, "max_len": n}, "num_batches": 4, "batch_size": 64,
                            "every": 2000 if n == min(eval_lengths) else 0}
               for n in eval_lengths}
    c.experiment.rope_scalings = "linear,ntk"
    return c


def scheme_runs(prefix: str, schemes, extra=None):
    """``{<prefix>_<scheme>: overrides}``."""
    runs = {}
    for scheme in schemes:
        model = dict(SCHEMES[scheme])
        runs[f"{prefix}_{scheme}"] = {"model": model, **(extra or {})}
    return runs
