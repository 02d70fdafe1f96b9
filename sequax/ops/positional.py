"""Positional schemes as pure functions: RoPE (with context scaling), ALiBi, T5 buckets.

Tensors are ``[batch, length, heads, head_dim]``; ``positions`` is ``[length]``
or ``[batch, length]`` (integer or float). Relative positions follow the
attention op's convention (``sequax.ops.attention``): key ``j`` sits at
position ``j`` and query ``i`` at ``i + kv_len - q_len``; ``relative`` below
always means ``key_position - query_position`` (negative for past keys).

Learned absolute position embeddings live in the backbone
(``model.position_embedding="learned"``); NoPE is simply no positional op.
"""

from __future__ import annotations

import math
from typing import Optional

import jax.numpy as jnp
import numpy as np

ROPE_SCALINGS = (None, "linear", "ntk")


def _check_scaling(scaling, scale_factor):
    if scaling not in ROPE_SCALINGS:
        raise ValueError(f"unknown rope scaling {scaling!r}; choose one of {ROPE_SCALINGS}")
    if scale_factor <= 0:
        raise ValueError(f"scale_factor must be positive, got {scale_factor}")


def rope_frequencies(
    head_dim: int, base: float = 10000.0, *, scaling: Optional[str] = None, scale_factor: float = 1.0
) -> jnp.ndarray:
    """Inverse frequencies ``base ** (-2i / head_dim)``, shape ``[head_dim // 2]``.

    ``scaling="ntk"`` (NTK-aware scaling) uses ``base * scale_factor ** (head_dim
    / (head_dim - 2))``: the lowest frequency is divided by ``scale_factor``
    (interpolated) while the highest stays put (extrapolated).
    ``scaling="linear"`` does not change frequencies (it scales positions, see
    :func:`apply_rope`).
    """
    if head_dim % 2 or head_dim < 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}; change the head size")
    _check_scaling(scaling, scale_factor)
    if scaling == "ntk":
        if head_dim < 4:
            raise ValueError(f"NTK RoPE scaling needs head_dim >= 4, got {head_dim}")
        base = base * scale_factor ** (head_dim / (head_dim - 2))
    return base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)


def apply_rope(
    x: jnp.ndarray,
    positions: jnp.ndarray,
    *,
    base: float = 10000.0,
    scaling: Optional[str] = None,
    scale_factor: float = 1.0,
) -> jnp.ndarray:
    """Rotary position embedding (rotate-half convention).

    Args:
      x: ``[batch, length, heads, head_dim]``.
      positions: ``[length]`` or ``[batch, length]``.
      base: the RoPE base (theta).
      scaling: ``None``; ``"linear"`` (position interpolation: positions are
        divided by ``scale_factor``); ``"ntk"`` (NTK-aware: the base grows, see
        :func:`rope_frequencies`).
      scale_factor: context extension factor for ``scaling``.

    Returns:
      ``x`` rotated, same shape and dtype.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [batch, length, heads, head_dim], got shape {x.shape}")
    inv_freq = rope_frequencies(x.shape[-1], base, scaling=scaling, scale_factor=scale_factor)
    positions = jnp.asarray(positions, jnp.float32)
    if positions.ndim == 1:
        positions = positions[None]
    if positions.ndim != 2 or positions.shape[-1] != x.shape[1]:
        raise ValueError(
            f"positions must be [length] or [batch, length] with length {x.shape[1]}, got shape {positions.shape}"
        )
    if scaling == "linear":
        positions = positions / scale_factor
    angles = positions[..., None] * inv_freq  # [b, l, d/2]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x.dtype)


def relative_positions(q_len: int, kv_len: int) -> jnp.ndarray:
    """``key_position - query_position`` ``[q_len, kv_len]`` int32 (queries are the last positions)."""
    q_pos = jnp.arange(q_len, dtype=jnp.int32) + (kv_len - q_len)
    return jnp.arange(kv_len, dtype=jnp.int32)[None, :] - q_pos[:, None]


def alibi_slopes(num_heads: int) -> jnp.ndarray:
    """ALiBi head slopes ``[num_heads]`` float32 (Press et al., 2022).

    For ``n`` a power of two: the geometric sequence ``2 ** (-8 (h + 1) / n)``,
    ``h = 0 .. n-1``. Otherwise the paper's rule: the slopes for the largest
    power of two ``m < n``, followed by every other slope of the ``2m``
    sequence (its odd-numbered terms) until there are ``n``.
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def geometric(n):
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    m = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = geometric(m)
    if m < num_heads:
        slopes += geometric(2 * m)[0::2][: num_heads - m]
    return jnp.asarray(np.array(slopes, np.float32))


def alibi_bias_from_relative(slopes: jnp.ndarray, relative: jnp.ndarray) -> jnp.ndarray:
    """ALiBi bias ``-slope * |relative|``: ``relative`` ``[..., Q, K]`` -> ``[..., heads, Q, K]``.

    For causal attention ``|relative|`` is the query-key distance of the
    paper; bidirectional attention uses the symmetric distance.
    """
    distance = jnp.abs(jnp.asarray(relative)).astype(jnp.float32)[..., None, :, :]
    return -slopes.astype(jnp.float32)[:, None, None] * distance


def alibi_bias(
    slopes: jnp.ndarray, q_len: int, kv_len: int, *, max_distance: Optional[int] = None
) -> jnp.ndarray:
    """ALiBi bias ``[1, heads, q_len, kv_len]`` for the attention op's ``bias``.

    ``slopes`` ``[heads]`` (see :func:`alibi_slopes`). ``max_distance`` caps the
    distance (LM-Infinite's distance limit).
    """
    relative = relative_positions(q_len, kv_len)
    if max_distance is not None:
        relative = jnp.clip(relative, -max_distance, max_distance)
    return alibi_bias_from_relative(slopes, relative)[None]


def t5_relative_position_bucket(
    relative_position: jnp.ndarray,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> jnp.ndarray:
    """T5's bucketing of ``relative_position`` (key minus query) into ``num_buckets`` ints.

    Bidirectional: half the buckets are for keys after the query (offset by
    ``num_buckets // 2``), half for keys at or before it; causal: keys after
    the query all land in bucket 0. Within a half of ``nb`` buckets, distances
    ``d < nb // 2`` get their own bucket; larger distances share
    logarithmically spaced buckets up to ``max_distance``, beyond which they
    all go to the last bucket:
    ``nb // 2 + floor(log(d / (nb // 2)) / log(max_distance / (nb // 2)) * (nb - nb // 2))``.

    Returns:
      int32 array of the shape of ``relative_position``.
    """
    if num_buckets < 2 or (bidirectional and num_buckets < 4):
        raise ValueError(f"num_buckets must be >= 2 (>= 4 when bidirectional), got {num_buckets}")
    relative_position = jnp.asarray(relative_position, jnp.int32)
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = jnp.where(relative_position > 0, num_buckets, 0)
        distance = jnp.abs(relative_position)
    else:
        distance = jnp.maximum(-relative_position, 0)
    exact = num_buckets // 2
    if max_distance <= exact:
        raise ValueError(
            f"max_distance must exceed the {exact} exactly-bucketed distances, got {max_distance}; "
            "raise max_distance or lower num_buckets"
        )
    # Clamp before the log so the unused branch stays finite at distance 0.
    ratio = jnp.maximum(distance, exact).astype(jnp.float32) / exact
    log_bucket = exact + (jnp.log(ratio) / math.log(max_distance / exact) * (num_buckets - exact)).astype(
        jnp.int32
    )
    log_bucket = jnp.minimum(log_bucket, num_buckets - 1)
    return bucket + jnp.where(distance < exact, distance, log_bucket)


def t5_bias(
    table: jnp.ndarray,
    relative_position: jnp.ndarray,
    *,
    bidirectional: bool = True,
    max_distance: int = 128,
) -> jnp.ndarray:
    """T5 relative bias from a learned ``table`` ``[num_buckets, heads]``.

    ``relative_position`` ``[..., Q, K]`` (key minus query) -> ``[..., heads, Q, K]``.
    """
    table = jnp.asarray(table)
    if table.ndim != 2:
        raise ValueError(f"table must be [num_buckets, heads], got shape {table.shape}")
    buckets = t5_relative_position_bucket(relative_position, bidirectional, table.shape[0], max_distance)
    return jnp.moveaxis(table[buckets], -1, -3)
