"""Helpers shared by the mixer modules: argument checks, state in/out, output blocks, SSM parameters.

Every mixer family imports from here (never from a sibling mixer module), so
each helper has one home:

- checks: :func:`check_input`, :func:`check_positive`, :func:`check_choice`,
  :func:`check_even_state`, :func:`require_causal` (setup), :func:`step_guard`
  (``init_state``/``step``), :func:`no_segments`;
- state in/out of the parallel form (the contract in :mod:`sequax.mixers`):
  :func:`start_state`, :func:`end_segment`;
- :class:`GeluGLU`: the S4-style output block ``GLU(Dense(GELU(y)))``;
- complex SSM parameters stored as float pairs: :func:`complex_normal_param`,
  :func:`complex_const_param`, :func:`eigenvalues`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sequax.ops.segments import carry_state, last_segment

# Real parts of SSM eigenvalues are clipped to at most this, keeping every SSM stable.
MAX_REAL_PART = -1e-4


# ----------------------------------------------------------------------------- checks


def check_input(x, d_model):
    """``ValueError`` unless ``x`` is ``[batch >= 1, length >= 1, d_model]``."""
    if x.ndim != 3 or x.shape[-1] != d_model or min(x.shape[:2]) < 1:
        raise ValueError(
            f"x must be [batch >= 1, length >= 1, d_model={d_model}]; got shape {x.shape}"
        )


def check_positive(name, value):
    """``ValueError`` unless ``value`` is a positive int (``mixer_kwargs.<name>``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"mixer_kwargs.{name} must be a positive int; got {value!r}")


def check_choice(name, value, choices):
    """``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"mixer_kwargs.{name} must be one of {choices}; got {value!r}")


def check_even_state(name, value):
    """``ValueError`` unless ``value`` is an even int >= 2 (``d_state``-like fields)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2 or value % 2:
        raise ValueError(
            f"mixer_kwargs.{name} must be an even int >= 2 (states come in conjugate pairs); "
            f"got {value!r}"
        )


def require_causal(mixer, causal):
    """``ValueError`` for a causal-only mixer built with ``causal=False``."""
    if not causal:
        raise ValueError(f"{mixer} is causal only (it looks back only); set model.causal=True")


def step_guard(mixer, causal):
    """``ValueError`` when ``init_state``/``step`` (or a state in/out) is asked of a non-causal mixer."""
    if not causal:
        raise ValueError(
            f"{mixer}: init_state/step and initial_state/return_state need the causal form "
            "(causal=False mixes in the future); set model.causal=True to decode or continue a state"
        )


def no_segments(mixer, segment_ids):
    """``NotImplementedError`` when a convolution mixer is given ``segment_ids``."""
    if segment_ids is not None:
        raise NotImplementedError(
            f"{mixer} cannot honour segment_ids: its convolution mixes packed sequences; "
            "pass segment_ids=None (unpacked batches) or use a scan-based mixer such as s5 or mamba"
        )


# ----------------------------------------------------------------------------- state in/out


def start_state(module, batch_size, initial_state, segment_ids=None):
    """The state a piece starts from.

    ``module.init_state(batch_size)`` when ``initial_state`` is None; else
    ``initial_state``, with the rows whose piece starts a new packed segment
    zeroed (:func:`sequax.ops.segments.carry_state`) when the state has a
    ``"segment"`` entry (the id of the last token it saw).
    """
    if initial_state is None:
        return module.init_state(batch_size)
    if isinstance(initial_state, dict) and "segment" in initial_state:
        return carry_state(initial_state, initial_state["segment"], segment_ids)
    return initial_state


def end_segment(state, segment_ids):
    """The ``"segment"`` entry of the state after a piece: its last token's id
    (``[batch]`` int32), unchanged when the piece has no ``segment_ids``."""
    return last_segment(state["segment"], segment_ids)


# ----------------------------------------------------------------------------- output block


class GeluGLU(nn.Module):
    """GELU, then ``Dense(2 * features)`` and a GLU ``a * sigmoid(b)`` (the S4-style output).

    ``[..., features_in]`` -> ``[..., features]`` in ``dtype``.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y):
        dense = nn.Dense(2 * self.features, dtype=self.dtype, name="dense")
        y = dense(nn.gelu(y.astype(self.dtype)))
        a, b = jnp.split(y, 2, axis=-1)
        return a * nn.sigmoid(b)


# ----------------------------------------------------------------------------- SSM parameters


def complex_normal_param(module, name, shape, scale=None):
    """A complex parameter stored as float32 ``shape + (2,)`` (real, imag).

    Initialised complex normal with ``E|c|^2 = 1``, times ``scale`` (broadcast
    to ``shape``) if given. Returns the complex64 value.
    """

    def init(key, full_shape):
        c = jax.random.normal(key, full_shape, jnp.float32) * jnp.sqrt(0.5)
        if scale is not None:
            z = (c[..., 0] + 1j * c[..., 1]) * scale
            c = jnp.stack([z.real, z.imag], -1).astype(jnp.float32)
        return c

    p = module.param(name, init, tuple(shape) + (2,))
    return p[..., 0] + 1j * p[..., 1]


def complex_const_param(module, name, value):
    """A complex parameter stored as float32 ``value.shape + (2,)``, initialised to ``value``."""
    value = jnp.asarray(value)
    p = module.param(name, lambda _: jnp.stack([value.real, value.imag], -1).astype(jnp.float32))
    return p[..., 0] + 1j * p[..., 1]


def eigenvalues(module, Lambda0, shape):
    """Parameters ``Lambda_re``/``Lambda_im`` initialised to ``Lambda0`` broadcast to
    ``shape``; returns the complex eigenvalues with the real part clipped to
    ``MAX_REAL_PART``."""
    f32 = jnp.float32
    re = module.param("Lambda_re", lambda _: jnp.broadcast_to(Lambda0.real, shape).astype(f32))
    im = module.param("Lambda_im", lambda _: jnp.broadcast_to(Lambda0.imag, shape).astype(f32))
    return jnp.minimum(re, MAX_REAL_PART) + 1j * im


__all__ = [
    "GeluGLU", "MAX_REAL_PART", "check_choice", "check_even_state", "check_input", "check_positive",
    "complex_const_param", "complex_normal_param", "eigenvalues", "end_segment", "no_segments",
    "require_causal", "start_state", "step_guard",
]
