"""The mask description, its per-tile visibility, and the element mask the kernels evaluate.

A mask is described, not materialised: :class:`MaskSpec` holds the static
options (causal, window, sinks, whether segment ids / a block layout / explicit
positions are present), and the arrays (positions, segment ids, layout) stay
O(length). Two things are derived from it:

- **Per-tile visibility**, once per call, by :func:`tile_lists`: from the
  min/max position and segment id of every query block and key block, each
  ``[block_q, block_k]`` tile is *skipped* (nothing visible), *full* (everything
  visible: no element mask needed) or *partial*. The kernels loop over compact
  lists of visible tiles, full ones first, so causal, window, block-sparse and
  segment masks cost only their visible area (the block-mask idea of splash
  attention, here derived from bounds rather than enumerated).
- **The element mask** of a partial tile, by :func:`visible`, inside the kernel
  from the tile's positions and segment ids.

Conventions (those of ``sequax.ops.attention``): by default query ``i`` sits at
position ``i + q_offset`` (``q_offset = kv_len - q_len``) and key ``j`` at
``j``; keys at index ``>= kv_len`` (padding) or at a negative explicit position
(an empty slot) are never visible. A block layout needs default positions and
kernel blocks no larger than its block size, so a tile spans at most 2 x 2
layout blocks (the four corner bits are read per tile).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

SKIP, PARTIAL, FULL = 0, 1, 2
# Static tile lists up to this many tiles are computed in numpy at trace time.
STATIC_TILES_MAX = 1 << 18


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Static part of a mask (hashable: it is part of the kernels' static config)."""

    causal: bool = False
    window: Optional[Tuple[int, int]] = None
    num_sinks: int = 0
    segments: bool = False
    layout_block: Optional[int] = None  # block_mask block size; None: no block mask
    explicit_positions: bool = False
    q_offset: int = 0  # default positions: query i at i + q_offset
    kv_len: int = 0  # keys at index >= kv_len are padding


# ----------------------------------------------------------------------------
# The element mask of one tile (runs inside the kernels)
# ----------------------------------------------------------------------------


def visible(spec: MaskSpec, q_pos, k_pos, *, k_idx=None, q_seg=None, k_seg=None, corners=None):
    """Visibility of a tile: ``q_pos`` ``[bq, 1]``, ``k_pos`` ``[1, bk]`` int32 -> bool ``[bq, bk]``.

    ``k_idx`` ``[1, bk]``: key indices (default positions: padding keys are
    ``>= kv_len``); ``q_seg``/``k_seg`` like the positions; ``corners``:
    ``(q_split, k_split, top_left, top_right, bottom_left, bottom_right)``, the
    layout bits of the (up to) 2 x 2 layout blocks the tile spans and the first
    positions of its second layout row / column.
    """
    if spec.explicit_positions:
        vis = k_pos >= 0
    else:
        vis = k_idx < spec.kv_len
    vis = jnp.broadcast_to(vis, (q_pos.shape[0], k_pos.shape[1]))
    if spec.causal:
        vis = vis & (k_pos <= q_pos)
    if spec.window is not None:
        left, right = spec.window
        in_window = (k_pos >= q_pos - left) & (k_pos <= q_pos + right)
        if spec.num_sinks:
            in_window = in_window | (k_pos < spec.num_sinks)
        vis = vis & in_window
    if spec.segments:
        vis = vis & (q_seg == k_seg)
    if spec.layout_block is not None:
        q_split, k_split, tl, tr, bl, br = corners
        left_col = k_pos < k_split
        top = jnp.where(left_col, tl, tr) != 0
        bottom = jnp.where(left_col, bl, br) != 0
        vis = vis & jnp.where(q_pos < q_split, top, bottom)
    return vis


def _floor_div(x, size):
    """Floor division of a traced int by a positive constant, with lax ops only (kernels lower these)."""
    return jnp.where(x >= 0, jax.lax.div(x, size), -jax.lax.div(size - 1 - x, size))


def layout_corners(layout_ref, cols, q_first, k_first, size):
    """The ``corners`` argument of :func:`visible` for a tile whose first positions are given.

    ``layout_ref``: the padded layout flattened to int32 (see
    :func:`padded_layout`, ``cols`` its padded width), read by scalar index.
    A first query position below 0 (queries before the first key) reads the
    zero border row.
    """
    r, c = jnp.maximum(_floor_div(q_first, size), -1), jax.lax.div(k_first, size)
    at = lambda rr, cc: layout_ref[(rr + 1) * cols + cc]  # noqa: E731
    return ((r + 1) * size, (c + 1) * size, at(r, c), at(r, c + 1), at(r + 1, c), at(r + 1, c + 1))


def padded_layout(layout):
    """Layout bool ``[rows, cols]`` -> int32 ``[(rows + 3) * (cols + 2)]`` and its padded width.

    Zero border: one row above (queries at negative positions), two rows
    below and two columns right (the second row / column of a tile past the
    layout's edge).
    """
    rows, cols = layout.shape
    padded = jnp.zeros((rows + 3, cols + 2), jnp.int32).at[1:rows + 1, :cols].set(jnp.asarray(layout, jnp.int32))
    return padded.reshape(-1), cols + 2


# ----------------------------------------------------------------------------
# Per-tile visibility from block bounds (runs once per call, in XLA or numpy)
# ----------------------------------------------------------------------------


def _block_bounds(xp, values, valid, block):
    """min / max of ``values`` ``[B, L]`` over valid entries per block, and the count of valid ones."""
    b, length = values.shape
    v = values.reshape(b, length // block, block)
    ok = valid.reshape(b, length // block, block)
    big = np.iinfo(np.int32).max
    lo = xp.min(xp.where(ok, v, big), axis=-1)
    hi = xp.max(xp.where(ok, v, -big), axis=-1)
    return lo, hi, xp.sum(ok.astype(np.int32), axis=-1)


def tile_status(xp, spec: MaskSpec, *, q_pos, q_valid, k_pos, k_valid, block_q, block_k,
                q_seg=None, k_seg=None, layout=None):
    """SKIP / PARTIAL / FULL for every tile: int32 ``[B, num_q_blocks, num_kv_blocks]``.

    ``q_pos`` ``[B, Lq]`` / ``k_pos`` ``[B, Lk]`` int32 (lengths multiples of the
    blocks), ``*_valid`` bool of the same shapes, ``*_seg`` ``[B, L]`` or None,
    ``layout`` bool ``[rows, cols]`` or None. ``xp`` is numpy or jax.numpy.
    Conservative: a tile is FULL only if every pair is visible, SKIP only if
    none is.
    """
    qlo, qhi, qn = _block_bounds(xp, q_pos, q_valid, block_q)
    klo, khi, kn = _block_bounds(xp, k_pos, k_valid, block_k)
    qlo, qhi, qn = qlo[:, :, None], qhi[:, :, None], qn[:, :, None]
    klo, khi, kn = klo[:, None, :], khi[:, None, :], kn[:, None, :]
    any_ = (qn > 0) & (kn > 0)
    all_ = kn == block_k
    if spec.causal:
        any_ = any_ & (klo <= qhi)
        all_ = all_ & (khi <= qlo)
    if spec.window is not None:
        left, right = spec.window
        win_any = (khi >= qlo - left) & (klo <= qhi + right)
        win_all = (klo >= qhi - left) & (khi <= qlo + right)
        if spec.num_sinks:
            win_any = win_any | (klo < spec.num_sinks)
            win_all = win_all | (khi < spec.num_sinks)
        any_, all_ = any_ & win_any, all_ & win_all
    if spec.segments:
        slo, shi, _ = _block_bounds(xp, q_seg, q_valid, block_q)
        tlo, thi, _ = _block_bounds(xp, k_seg, k_valid, block_k)
        slo, shi, tlo, thi = slo[:, :, None], shi[:, :, None], tlo[:, None, :], thi[:, None, :]
        any_ = any_ & (slo <= thi) & (tlo <= shi)
        all_ = all_ & (slo == shi) & (tlo == thi) & (slo == tlo)
    if layout is not None:
        size = spec.layout_block
        rows, cols = layout.shape
        table = xp.zeros((rows + 1, cols + 1), np.int32)
        cum = xp.cumsum(xp.cumsum(xp.asarray(layout).astype(np.int32), axis=0), axis=1)
        table = table.at[1:, 1:].set(cum) if xp is jnp else _np_set(table, cum)
        r0, r1 = xp.clip(qlo // size, 0, rows - 1), xp.clip(qhi // size, 0, rows - 1)
        c0, c1 = xp.clip(klo // size, 0, cols - 1), xp.clip(khi // size, 0, cols - 1)
        r0, r1 = xp.broadcast_to(r0, any_.shape), xp.broadcast_to(r1, any_.shape)
        c0, c1 = xp.broadcast_to(c0, any_.shape), xp.broadcast_to(c1, any_.shape)
        count = table[r1 + 1, c1 + 1] - table[r0, c1 + 1] - table[r1 + 1, c0] + table[r0, c0]
        area = (r1 - r0 + 1) * (c1 - c0 + 1)
        inside = (qlo >= 0) & (qhi < rows * size) & (klo >= 0) & (khi < cols * size)  # outside: invisible
        any_, all_ = any_ & (count > 0), all_ & (count == area) & inside
    return xp.where(any_, xp.where(all_, FULL, PARTIAL), SKIP).astype(np.int32)


def _np_set(table, cum):
    table = table.copy()
    table[1:, 1:] = cum
    return table


def compact(xp, status):
    """Per row of ``status`` ``[B, R, C]``: the visible columns, FULL first (each in increasing order).

    Returns ``(order [B, R, C] int32, counts [B, R, 2] int32)`` with
    ``counts[..., 0]`` the number of FULL tiles and ``counts[..., 1]`` the number
    of visible ones; ``order[..., :counts[..., 1]]`` lists them.
    """
    rank = xp.where(status == FULL, 0, xp.where(status == PARTIAL, 1, 2))
    if xp is jnp:
        order = jnp.argsort(rank, axis=-1, stable=True)
    else:
        order = np.argsort(rank, axis=-1, kind="stable")
    full = xp.sum((status == FULL).astype(np.int32), axis=-1)
    seen = full + xp.sum((status == PARTIAL).astype(np.int32), axis=-1)
    return order.astype(np.int32), xp.stack([full, seen], axis=-1).astype(np.int32)


@dataclasses.dataclass
class TileLists:
    """Visible tiles at one block size: by query block (``order``/``counts``) and by key block (``*_t``)."""

    order: object
    counts: object
    order_t: object
    counts_t: object
    max_count: int  # static bound on counts[..., 1] (num blocks of the other side when dynamic)
    max_count_t: int


def _is_concrete(x):
    return x is None or not isinstance(x, jax.core.Tracer)


def tile_lists(spec: MaskSpec, *, q_len_padded, kv_len_padded, q_len, block_q, block_k,
               positions=None, segments=None, layout=None, transposed=True) -> TileLists:
    """The compact visible-tile lists for blocks ``(block_q, block_k)``.

    ``positions``: ``(q_pos [B', Lq_p], k_pos [B', Lk_p])`` int32 padded (key
    padding ``-1``) when ``spec.explicit_positions``; ``segments``: ``(q_seg,
    k_seg)`` padded ``[B, L_p]``; ``layout``: bool ``[rows, cols]``. Everything
    static (default positions, no segment ids, a concrete layout) is computed
    in numpy at trace time for up to :data:`STATIC_TILES_MAX` tiles.
    """
    nq, nk = q_len_padded // block_q, kv_len_padded // block_k
    static = (not spec.explicit_positions and segments is None and _is_concrete(layout)
              and nq * nk <= STATIC_TILES_MAX)
    xp = np if static else jnp
    if spec.explicit_positions:
        q_pos, k_pos = positions
        k_valid = k_pos >= 0
    else:
        q_pos = (xp.arange(q_len_padded, dtype=np.int32) + spec.q_offset)[None]
        k_pos = xp.arange(kv_len_padded, dtype=np.int32)[None]
        k_valid = k_pos < spec.kv_len
    q_valid = xp.broadcast_to(xp.arange(q_len_padded)[None] < q_len, q_pos.shape)
    q_seg = k_seg = None
    if segments is not None:
        q_seg, k_seg = segments
        batch = q_seg.shape[0]
        q_pos, k_pos = (xp.broadcast_to(p, (batch,) + p.shape[1:]) for p in (q_pos, k_pos))
        q_valid, k_valid = (xp.broadcast_to(p, (batch,) + p.shape[1:]) for p in (q_valid, k_valid))
    if layout is not None:
        layout = np.asarray(layout) if static else jnp.asarray(layout)
    status = tile_status(xp, spec, q_pos=q_pos, q_valid=q_valid, k_pos=k_pos, k_valid=k_valid,
                         block_q=block_q, block_k=block_k, q_seg=q_seg, k_seg=k_seg, layout=layout)
    order, counts = compact(xp, status)
    if transposed:
        order_t, counts_t = compact(xp, xp.swapaxes(status, 1, 2))
    else:
        order_t = counts_t = None
    if static:
        max_count = max(int(counts[..., 1].max()), 1)
        max_count_t = max(int(counts_t[..., 1].max()), 1) if transposed else nq
        order, counts = jnp.asarray(order), jnp.asarray(counts)
        if transposed:
            order_t, counts_t = jnp.asarray(order_t), jnp.asarray(counts_t)
    else:
        max_count, max_count_t = nk, nq
    return TileLists(order, counts, order_t, counts_t, max_count, max_count_t)
