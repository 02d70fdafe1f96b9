"""Optimizers from ``config.optimizer``: optax, a warmup + decay schedule, clipping, masks.

Weight decay applies to dense ``kernel`` matrices only: never to biases,
norm scales, embeddings or state-space parameters. When
``ssm_learning_rate > 0``, parameters whose leaf name is in
:data:`SSM_PARAMETER_NAMES` train at that rate with no weight decay (the S4/S5
recipe); everything else at ``learning_rate``.
"""

from __future__ import annotations

import jax
import optax

from sequax.registry import Registry

# Leaf names of state-space parameters (dynamics and time steps) across mixers.
SSM_PARAMETER_NAMES = frozenset(
    {"Lambda_re", "Lambda_im", "log_dt", "A_log", "A_re", "A_im", "P", "B", "B_re", "B_im", "inv_dt"}
)

OPTIMIZERS = Registry("optimizer")
SCHEDULES = ("cosine", "constant", "linear")


@OPTIMIZERS.register("adamw")
def _adamw(c, lr, mask):
    return optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=mask)


@OPTIMIZERS.register("adam")
def _adam(c, lr, mask):
    return optax.adam(lr, b1=c.b1, b2=c.b2, eps=c.eps)


@OPTIMIZERS.register("lamb")
def _lamb(c, lr, mask):
    return optax.lamb(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=mask)


@OPTIMIZERS.register("sgd")
def _sgd(c, lr, mask):
    return optax.sgd(lr, momentum=c.b1)


def make_schedule(c, peak: float, num_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then ``schedule``."""
    if c.schedule not in SCHEDULES:
        raise ValueError(f"unknown optimizer.schedule {c.schedule!r}; choose one of {SCHEDULES}")
    warmup = min(int(c.warmup_steps), max(num_steps - 1, 0))
    end = peak * c.end_learning_rate_ratio
    decay_steps = max(num_steps - warmup, 1)
    if c.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=c.end_learning_rate_ratio)
    elif c.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    else:
        after = optax.constant_schedule(peak)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, "key", getattr(last, "name", last)))


def decay_mask(params):
    """True for leaves that take weight decay (dense kernels)."""
    return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p) == "kernel", params)


def ssm_labels(params):
    """``"ssm"`` for state-space parameters, ``"default"`` for the rest."""
    return jax.tree_util.tree_map_with_path(
        lambda p, _: "ssm" if _leaf_name(p) in SSM_PARAMETER_NAMES else "default", params
    )


def make_optimizer(c, num_steps: int) -> optax.GradientTransformation:
    """The optax transformation for ``config.optimizer`` over ``num_steps`` steps."""
    build = OPTIMIZERS.get(c.name)
    if c.learning_rate <= 0:
        raise ValueError(f"optimizer.learning_rate must be positive, got {c.learning_rate}")
    main = build(c, make_schedule(c, c.learning_rate, num_steps), decay_mask)
    if c.ssm_learning_rate > 0:
        ssm = optax.adam(make_schedule(c, c.ssm_learning_rate, num_steps), b1=c.b1, b2=c.b2, eps=c.eps)
        main = optax.multi_transform({"default": main, "ssm": ssm}, ssm_labels)
    if c.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(c.grad_clip), main)
    return main
