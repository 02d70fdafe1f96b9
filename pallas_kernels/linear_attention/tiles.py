"""In-kernel helpers shared by the linear-attention kernels (GPU and TPU bodies).

Everything here works on values already loaded from refs: index grids, the
float32-accumulating matmul, and the per-chunk segment masks.

Segments reach a kernel as ``seg`` ``[chunk]`` int32: per token, the number of
segment starts between the token before the chunk and the token itself (so 0
marks the segment that entered the chunk, and the values never decrease).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax.numpy as jnp
from jax import lax

F32 = jnp.float32


def rows(n):
    """``[n, 1]`` int32 row index."""
    return lax.broadcasted_iota(jnp.int32, (n, 1), 0)


def cols(n):
    """``[1, n]`` int32 column index."""
    return lax.broadcasted_iota(jnp.int32, (1, n), 1)


def dot(a, b, *, ta=False, tb=False):
    """``a @ b`` (``a.T`` / ``b.T`` with ``ta`` / ``tb``), float32 accumulation.

    Both operands must share a dtype: bfloat16 / float16 run on tensor cores
    (the MXU on TPU); float32 asks for full precision (IEEE on Triton).
    """
    dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
    precision = lax.Precision.HIGHEST if a.dtype == F32 else None
    return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=F32)


def last_row(x):
    """The last row of ``x`` ``[C, d]`` as ``[d]`` (or the last entry of ``[C]``), by a masked sum."""
    c = x.shape[0]
    if x.ndim == 1:
        return jnp.sum(jnp.where(lax.iota(jnp.int32, c) == c - 1, x, 0.0))
    return jnp.sum(jnp.where(rows(c) == c - 1, x, 0.0), axis=0)


def reverse_cumsum(x):
    """Inclusive cumulative sum from the end along axis 0 (Triton lowers only the forward one)."""
    return jnp.sum(x, axis=0, keepdims=True) - jnp.cumsum(x, axis=0) + x


class Masks(NamedTuple):
    """Segment masks of one chunk (all ``None`` without segments).

    ``first`` ``[C, 1]``: the token is in the segment that entered the chunk (it
    reads the carried state); ``to_last`` ``[C, 1]``: in the chunk's last segment
    (it reaches the outgoing state); ``keep``: scalar bool, no segment starts in
    the chunk (the carried state survives it); ``same`` ``[C, C]``: tokens i and
    j share a segment.
    """

    first: Optional[jnp.ndarray]
    to_last: Optional[jnp.ndarray]
    keep: Optional[jnp.ndarray]
    same: Optional[jnp.ndarray]


NO_MASKS = Masks(None, None, None, None)


def masks(seg):
    """:class:`Masks` from ``seg`` ``[C]`` (see the module docstring), or none for ``None``."""
    if seg is None:
        return NO_MASKS
    last = jnp.max(seg)
    col = seg[:, None]
    return Masks(col == 0, col == last, last == 0, col == seg[None, :])


def where(mask, x, other=0.0):
    """``jnp.where(mask, x, other)``, or ``x`` when there is no mask."""
    return x if mask is None else jnp.where(mask, x, other)


def both(a, b):
    """``a & b`` where either may be ``None`` (no constraint)."""
    if a is None:
        return b
    return a if b is None else a & b


def by_chunk_start(b, log_space, chunk_start_form, sub_chunk_form, *operands):
    """GLA's run-time choice of intra-chunk form: ``chunk_start_form(*operands)`` when every cumulative
    gate of the tile ``b`` stays above ``-log_space`` nats (so ``exp(-b) <= e^log_space``), else
    ``sub_chunk_form(*operands)``; ``log_space <= 0`` always takes the sub-chunk form."""
    if log_space <= 0:
        return sub_chunk_form(*operands)
    return lax.cond(jnp.min(b) >= -log_space, chunk_start_form, sub_chunk_form, *operands)


def chunk_start_scores(q, k, b, mma):
    """``q_i . k_j exp(b_i - b_j)`` ``[C, C]`` f32 for every pair, factored through the chunk start as
    ``(q exp(b)) (k exp(-b))^T`` (one matmul; mask it to ``j <= i``); float32 ``q, k, b`` ``[C, d]``."""
    return dot((q * jnp.exp(b)).astype(mma), (k * jnp.exp(-b)).astype(mma), tb=True)


def chunk_start_grads(q, k, b, d_scores, mma):
    """``(dq, dk)`` of :func:`chunk_start_scores` for ``d_scores`` (dL/dA ``[C, C]`` f32, already masked)."""
    e, inv = jnp.exp(b), jnp.exp(-b)
    ds = d_scores.astype(mma)
    return e * dot(ds, (k * inv).astype(mma)), inv * dot(ds, (q * e).astype(mma), ta=True)


def inverse_unit_lower(lower, blocks: int = 1):
    """``(I + lower)^-1`` for a strictly lower-triangular ``[n, n]`` float32 tile.

    ``blocks`` = 1: forward substitution, one row per step (``n - 1`` dependent steps). ``blocks`` =
    2^j: the diagonal blocks of ``n / blocks`` rows are solved together (one row of each per step:
    ``n / blocks - 1`` steps), then pairs of blocks merge, ``D <- D - D B D`` with ``B`` the
    off-diagonal block of each pair (exact: ``(D B)^2 = 0`` there), two ``[n, n]`` float32 matmuls per
    level. The same work in reductions, a chain ``blocks`` times shorter, plus ``2 log2(blocks)``
    matmuls.
    """
    n = lower.shape[0]
    if blocks < 1 or n % blocks or blocks & (blocks - 1):
        raise ValueError(f"blocks must be a power of two dividing {n}, got {blocks}")
    size = n // blocks
    r, c = rows(n), cols(n)
    diagonal = lower if blocks == 1 else jnp.where(r // size == c // size, lower, 0.0)
    lower_t = diagonal.T  # lower_t[m, i] = lower[i, m] within the diagonal blocks

    def row(i, t):  # row i of every diagonal block: they read disjoint, already solved rows
        for b in range(blocks):
            idx = b * size + i
            l_i = jnp.sum(jnp.where(c == idx, lower_t, 0.0), axis=1, keepdims=True)  # [n, 1]: lower[idx, m]
            new = jnp.where(c == idx, 1.0, 0.0) - jnp.sum(l_i * t, axis=0, keepdims=True)
            t = jnp.where(r == idx, new, t)
        return t

    t = lax.fori_loop(1, size, row, (r == c).astype(F32))
    while size < n:
        pair_off = (r // (2 * size) == c // (2 * size)) & (r // size != c // size)
        t = t - dot(t, dot(jnp.where(pair_off, lower, 0.0), t))
        size *= 2
    return t
