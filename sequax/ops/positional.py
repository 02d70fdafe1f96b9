"""Positional schemes as pure functions.

RoPE rotates pairs of query/key features by position-dependent angles. Tensors
are ``[batch, length, heads, head_dim]``; ``positions`` is ``[length]`` or
``[batch, length]`` (integer or float).
"""

from __future__ import annotations

import jax.numpy as jnp


def rope_frequencies(head_dim: int, base: float = 10000.0) -> jnp.ndarray:
    """Inverse frequencies ``base ** (-2i / head_dim)``, shape ``[head_dim // 2]``."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}; change the head size")
    return base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)


def apply_rope(x: jnp.ndarray, positions: jnp.ndarray, *, base: float = 10000.0) -> jnp.ndarray:
    """Rotary position embedding (rotate-half convention).

    Args:
      x: ``[batch, length, heads, head_dim]``.
      positions: ``[length]`` or ``[batch, length]``.
      base: the RoPE base (theta).

    Returns:
      ``x`` rotated, same shape and dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [batch, length, heads, head_dim], got shape {x.shape}")
    inv_freq = rope_frequencies(x.shape[-1], base)
    positions = jnp.asarray(positions, jnp.float32)
    if positions.ndim == 1:
        positions = positions[None]
    angles = positions[..., None] * inv_freq  # [b, l, d/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)
