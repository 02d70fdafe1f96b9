"""Mixer settings shared by the recall configs: options per mixer, and the runs of a sweep.

``MIXERS`` holds each mixer's options for recall at lengths up to ``max_len``
(conv filters and S4 kernels are sized to the longest evaluation) and the
learning rate it is trained at (Zoology sweeps the rate per mixer; these are
the rates configs/mixers/ found on MQAR).
"""

from __future__ import annotations

import sequax.mixers

# mixer -> (options, learning rate); options may name "MAX_LEN", replaced by the longest length.
MIXERS = {
    "attention": ({}, 3e-3),
    "linear_attention": ({"feature_map": "elu"}, 3e-3),
    "hedgehog": ({}, 3e-3),
    "retention": ({}, 3e-3),
    "gla": ({"chunk_size": 16}, 1e-2),
    "deltanet": ({"chunk_size": 16}, 1e-2),
    "mamba": ({"d_state": 16, "expand": 2}, 3e-3),
    "mamba2": ({"head_dim": 16, "d_state": 16, "chunk_size": 32}, 3e-3),
    "h3": ({"d_state": 64}, 3e-3),
    "hyena": ({"order": 2, "filter_width": 64, "max_length": "MAX_LEN"}, 3e-3),
    "s4": ({"d_state": 64, "l_max": "MAX_LEN"}, 3e-3),
    "s4d": ({"d_state": 64}, 3e-3),
    "s5": ({"state_size": 32, "blocks": 4}, 3e-3),
    "sgconv": ({"kernel_dim": 16, "max_length": "MAX_LEN"}, 3e-3),
    "long_conv": ({"max_length": "MAX_LEN"}, 3e-3),
}
ZOOLOGY = ("attention", "mamba", "gla", "hyena", "deltanet")


def mixer_names(arg: str):
    """``arg``: comma-separated mixer names, ``zoology`` (the issue's five) or ``all`` (every registered one)."""
    if arg == "all":
        names = [m for m in sequax.mixers.available() if m in MIXERS]
    elif arg == "zoology":
        names = list(ZOOLOGY)
    else:
        names = [m.strip() for m in arg.split(",") if m.strip()]
    unknown = [m for m in names if m not in MIXERS]
    if unknown or not names:
        raise ValueError(f"no recall settings for {unknown or arg!r}; choose from {', '.join(MIXERS)}, "
                         "'zoology' or 'all'")
    return names


def mixer_model(mixer: str, max_len: int) -> dict:
    """Model overrides for ``mixer`` at lengths up to ``max_len``, and its learning rate."""
    options, lr = MIXERS[mixer]
    options = {k: (max_len if v == "MAX_LEN" else v) for k, v in options.items()}
    return {"model": {"mixer": mixer, "mixer_kwargs": options}, "optimizer": {"learning_rate": lr}}


EVAL_EXAMPLES = 128  # sequences per length evaluation


def eval_batch(length: int) -> int:
    """Sequences per evaluation batch: fewer as they grow (attention's scores are length^2)."""
    return max(2, min(32, 65536 // length))


def length_evals(lengths, every) -> dict:
    """``{"len_<L>": evaluation}`` of ``EVAL_EXAMPLES`` sequences at each length; ``every(L)``: its period."""
    return {
        f"len_{n}": {"task_kwargs": {"seq_len": n}, "batch_size": eval_batch(n),
                     "num_batches": EVAL_EXAMPLES // eval_batch(n), "every": every(n)}
        for n in lengths
    }
