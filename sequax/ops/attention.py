"""Attention as a pure function: masks, score functions and backends.

Layout (as ``jax.nn.dot_product_attention``): ``q`` ``[batch, q_len, heads,
head_dim]``, ``k`` and ``v`` ``[batch, kv_len, kv_heads, head_dim]``;
``heads`` must be a multiple of ``kv_heads`` (MHA, GQA, MQA).

Positions: by default key ``j`` sits at position ``j`` and query ``i`` at
``i + kv_len - q_len`` (queries are the *last* ``q_len`` positions), so a
decode step or a chunk of prefill against a longer cache needs no offsets.
``positions=(q_positions, kv_positions)`` overrides this (a ring-buffer KV
cache stores its keys out of order); a negative key position marks an empty
slot that nobody sees.

Which keys a query sees (all conditions combined with AND), decided by
:func:`attention_mask` (one function builds every mask, for the full matrix
and for the blocks of the blockwise backend alike):

- ``causal``: key position <= query position;
- ``window=(left, right)``: ``q - left <= k <= q + right`` (an int ``w`` means
  ``(w, 0)``); the keys at positions ``< num_sinks`` stay visible regardless
  of the window (attention sinks, StreamingLLM). ``causal`` + window + sinks
  is the Λ-shaped mask of LM-Infinite;
- ``block_mask=(layout, block_size)``: a block-level boolean ``layout``
  ``[q_blocks, kv_blocks]`` (see :func:`block_sparse_layout`); query position
  ``p`` sees key position ``s`` iff ``layout[p // block_size, s // block_size]``
  (positions outside the layout see nothing);
- ``segment_ids``: query and key in the same packed segment.

Logits are ``scale * q.k + bias``, then ``softcap * tanh(logits / softcap)``.
``score="softmax"`` normalises ``exp(logits)``; ``score="softplus"``
normalises ``softplus(c_i * logits)`` with a length factor ``c_i`` (see
:func:`attention`). Rows with no visible key return zeros. Math is done in
float32 (float64 for float64 inputs); the output has ``q``'s dtype.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from sequax.ops.dispatch import BackendTable, check_mode
from sequax.ops.segments import split_chunks

SCORES = ("softmax", "softplus")
# Algorithms of the pure-JAX ("xla") backend: materialised logits, or online
# softmax over tiles with O(length * block) memory.
MODES = ("dense", "blockwise")
# With mode=None the pure-JAX path switches to blockwise above this many logits per head.
AUTO_BLOCKWISE_MIN_LOGITS = 4096 * 4096

# Backends: "xla" (pure JAX: dense reference or blockwise), "cudnn" (through
# jax.nn.dot_product_attention), "pallas" (pallas_kernels.flash_attention).
# auto: measured on an H200 (BENCHMARKS.md); the TPU kernel has not run on a TPU yet, so TPUs
# get it only with backend="pallas".
ATTENTION = BackendTable("attention", {"gpu": ("cudnn", "pallas", "xla"), "tpu": ("xla",)})

Window = Union[None, int, Tuple[int, int]]


# ----------------------------------------------------------------------------
# Argument normalisation
# ----------------------------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _int_pair(name: str, value, what: str) -> Tuple[int, int]:
    """``value`` as a pair of ints (an int ``n`` gives ``(n, n)``), or ``ValueError``."""
    pair = (value, value) if _is_int(value) else value
    try:
        a, b = pair
    except (TypeError, ValueError):
        a = b = None
    if not (_is_int(a) and _is_int(b)):
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return int(a), int(b)


def normalize_window(window: Window) -> Optional[Tuple[int, int]]:
    """``None`` | ``w`` | ``(left, right)`` -> ``None`` | ``(left, right)``; ints >= 0."""
    if window is None:
        return None
    what = "a non-negative int w (meaning (w, 0)) or a (left, right) pair of them, e.g. window=(128, 0)"
    left, right = _int_pair("window", (window, 0) if _is_int(window) else window, what)
    if left < 0 or right < 0:
        raise ValueError(f"window must be {what}; got {window!r}")
    return left, right


def _normalize_block_size(block_size) -> Tuple[int, int]:
    what = "a positive int or a (block_q, block_k) pair of them, e.g. block_size=512"
    pair = _int_pair("block_size", block_size, what)
    if min(pair) <= 0:
        raise ValueError(f"block_size must be {what}; got {block_size!r}")
    return pair


def _split_segment_ids(segment_ids, q_len, kv_len, batch=None):
    """-> ``(q_seg [batch, q_len], kv_seg [batch, kv_len])`` int arrays, or ``(None, None)``."""
    if segment_ids is None:
        return None, None
    if isinstance(segment_ids, (tuple, list)):
        q_seg, kv_seg = segment_ids
    else:
        if q_len != kv_len:
            raise ValueError(
                "segment_ids as one [batch, length] array needs q_len == kv_len; "
                "pass a (q_segment_ids, kv_segment_ids) pair instead"
            )
        q_seg = kv_seg = segment_ids
    q_seg, kv_seg = jnp.asarray(q_seg), jnp.asarray(kv_seg)
    rows = (q_seg.shape[0] if q_seg.ndim == 2 else None) if batch is None else batch
    if (
        q_seg.shape != (rows, q_len) or kv_seg.shape != (rows, kv_len)
        or not jnp.issubdtype(q_seg.dtype, jnp.integer) or not jnp.issubdtype(kv_seg.dtype, jnp.integer)
    ):
        want = "batch" if batch is None else f"batch={batch}"
        raise ValueError(
            f"segment_ids must be int arrays [{want}, q_len={q_len}] and [{want}, kv_len={kv_len}]; "
            f"got {q_seg.dtype}{q_seg.shape} and {kv_seg.dtype}{kv_seg.shape}"
        )
    return q_seg, kv_seg


def _split_positions(positions, q_len, kv_len, batch=None):
    """-> ``q_pos`` ``[B, q_len]``, ``k_pos`` ``[B, kv_len]`` int32 (B = 1 or batch)."""
    if positions is None:
        q_pos = jnp.arange(q_len, dtype=jnp.int32) + (kv_len - q_len)
        return q_pos[None], jnp.arange(kv_len, dtype=jnp.int32)[None]
    if not isinstance(positions, (tuple, list)) or len(positions) != 2:
        raise ValueError("positions must be a (q_positions, kv_positions) pair of int arrays")
    out = []
    for name, pos, length in (("q_positions", positions[0], q_len), ("kv_positions", positions[1], kv_len)):
        pos = jnp.asarray(pos)
        if pos.ndim == 1:
            pos = pos[None]
        rows_ok = batch is None or pos.shape[0] in (1, batch)
        if pos.ndim != 2 or pos.shape[1] != length or not rows_ok or not jnp.issubdtype(pos.dtype, jnp.integer):
            rows = "batch" if batch is None else f"batch={batch}"
            raise ValueError(
                f"positions: {name} must be an int array [{length}] or [{rows}, {length}], "
                f"got {pos.dtype}{pos.shape}"
            )
        out.append(pos.astype(jnp.int32))
    return out[0], out[1]


def _normalize_block_mask(block_mask):
    if block_mask is None:
        return None
    try:
        layout, block_size = block_mask
    except (TypeError, ValueError):
        raise ValueError("block_mask must be a (layout [q_blocks, kv_blocks] bool, block_size int) pair") from None
    layout = jnp.asarray(layout, bool)
    if layout.ndim != 2 or not _is_int(block_size) or block_size <= 0:
        raise ValueError(
            f"block_mask needs a 2-D layout and a positive int block_size; got layout{layout.shape}, "
            f"block_size={block_size!r}"
        )
    return layout, int(block_size)


def block_sparse_layout(
    num_q_blocks: int,
    num_kv_blocks: Optional[int] = None,
    *,
    local_blocks: int = 1,
    global_blocks: int = 0,
    stride: int = 0,
) -> np.ndarray:
    """Block-level visibility layout for block-sparse attention.

    Query block ``i`` sees key block ``j`` when any of these holds:

    - local: ``|i - j| < local_blocks`` (its own block and neighbours);
    - global: ``j < global_blocks`` or ``i < global_blocks`` (the first blocks
      see and are seen by everything, as the global tokens of BigBird);
    - strided: ``stride > 0`` and ``(i - j) % stride == 0`` (the strided
      pattern of the Sparse Transformer, at block granularity).

    Combine with ``causal=True`` for autoregressive use (the layout itself is
    symmetric). Pass to :func:`attention` as ``block_mask=(layout, block_size)``.

    Returns:
      numpy bool ``[num_q_blocks, num_kv_blocks]`` (``num_kv_blocks`` defaults
      to ``num_q_blocks``).
    """
    num_kv_blocks = num_q_blocks if num_kv_blocks is None else num_kv_blocks
    for name, value, low in (
        ("num_q_blocks", num_q_blocks, 1), ("num_kv_blocks", num_kv_blocks, 1),
        ("local_blocks", local_blocks, 0), ("global_blocks", global_blocks, 0), ("stride", stride, 0),
    ):
        if int(value) < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value}")
    i = np.arange(num_q_blocks)[:, None]
    j = np.arange(num_kv_blocks)[None, :]
    layout = np.abs(i - j) < local_blocks
    layout |= (j < global_blocks) | (i < global_blocks)
    if stride:
        layout |= (i - j) % stride == 0
    return layout


# ----------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------


def _visible(q_pos, k_pos, q_seg, k_seg, *, causal, window, num_sinks, block_mask, empty_slots):
    """The one visibility rule, on broadcasting arrays.

    ``q_pos``/``q_seg`` ``[B, Q, 1]``, ``k_pos``/``k_seg`` ``[B, 1, K]`` ->
    bool ``[B, Q, K]``, or ``None`` when everything is visible.
    """
    vis = None

    def both(a, b):
        return b if a is None else a & b

    if empty_slots:
        vis = both(vis, k_pos >= 0)
    if causal:
        vis = both(vis, k_pos <= q_pos)
    if window is not None:
        left, right = window
        in_window = (k_pos >= q_pos - left) & (k_pos <= q_pos + right)
        if num_sinks:
            in_window = in_window | (k_pos < num_sinks)
        vis = both(vis, in_window)
    if block_mask is not None:
        layout, size = block_mask
        qb, kb = q_pos // size, k_pos // size
        inside = (qb >= 0) & (qb < layout.shape[0]) & (kb >= 0) & (kb < layout.shape[1])
        qb = jnp.clip(qb, 0, layout.shape[0] - 1)
        kb = jnp.clip(kb, 0, layout.shape[1] - 1)
        vis = both(vis, inside & layout[qb, kb])
    if q_seg is not None:
        vis = both(vis, q_seg == k_seg)
    return vis


def attention_mask(
    q_len: int,
    kv_len: int,
    *,
    causal: bool = False,
    window: Window = None,
    num_sinks: int = 0,
    segment_ids=None,
    block_mask=None,
    positions=None,
) -> Optional[jnp.ndarray]:
    """Boolean visibility mask ``[batch or 1, 1, q_len, kv_len]`` (True = visible).

    Arguments as in :func:`attention`. Returns ``None`` when every key is
    visible to every query.
    """
    window = normalize_window(window)
    q_seg, kv_seg = _split_segment_ids(segment_ids, q_len, kv_len)
    q_pos, k_pos = _split_positions(positions, q_len, kv_len)
    mask = _visible(
        q_pos[:, :, None], k_pos[:, None, :],
        None if q_seg is None else q_seg[:, :, None], None if kv_seg is None else kv_seg[:, None, :],
        causal=causal, window=window, num_sinks=num_sinks,
        block_mask=_normalize_block_mask(block_mask), empty_slots=positions is not None,
    )
    return None if mask is None else mask[:, None]


# ----------------------------------------------------------------------------
# Dropout on attention weights: a counter-based hash of (batch, head, query
# index, key index), so every backend and every block draws the same mask.
# ----------------------------------------------------------------------------


def _mix32(x):
    # An integer finaliser (xor-shift-multiply); uint32 arithmetic wraps.
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _dropout_keep(seed, rate, b_idx, h_idx, q_idx, k_idx):
    h = seed
    for idx in (b_idx, h_idx, q_idx, k_idx):
        h = _mix32(h ^ _mix32(jnp.asarray(idx).astype(jnp.uint32) + jnp.uint32(0x9E3779B9)))
    uniform = (h >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
    return uniform >= rate


def _dropout_seed(rng):
    return jax.random.bits(rng, (), jnp.uint32)


def attention_dropout_mask(rng, rate: float, batch: int, heads: int, q_len: int, kv_len: int):
    """The keep-mask ``[batch, heads, q_len, kv_len]`` bool that ``attention`` uses.

    Entry ``(b, h, i, j)`` is kept with probability ``1 - rate``; it depends
    only on ``rng`` and the indices, so all backends agree.
    """
    b, h, i, j = jnp.ix_(*(jnp.arange(n) for n in (batch, heads, q_len, kv_len)))
    return _dropout_keep(_dropout_seed(rng), rate, b, h, i, j)


# ----------------------------------------------------------------------------
# Reference (materialised) implementation
# ----------------------------------------------------------------------------


def _math_dtype(*xs):
    """float32, or wider when the inputs are (float64 inputs keep float64 math)."""
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def _length_factor(count, train_len):
    """``log(n) / log(train_len)`` with ``n`` visible keys (1 when train_len is None)."""
    if train_len is None:
        return jnp.ones_like(count, jnp.float32)
    return jnp.log(jnp.maximum(count, 1).astype(jnp.float32)) / math.log(train_len)


def attention_reference(
    q, k, v, *, mask=None, bias=None, softcap=None, scale=None, score="softmax",
    softplus_train_len=512, dropout_rate=0.0, dropout_rng=None, return_lse=False,
):
    """Materialised-scores attention in float32 or wider (the readable reference).

    Args:
      q: ``[batch, q_len, heads, head_dim]``; k, v: ``[batch, kv_len, kv_heads, head_dim]``.
      mask: bool broadcastable to ``[batch, heads, q_len, kv_len]`` (None: all visible).
      bias: float array broadcastable to ``[batch, heads, q_len, kv_len]``.
      Other arguments as in :func:`attention`.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype, and with
      ``return_lse`` also ``lse`` ``[batch, heads, q_len]`` (float32, or float64 for float64 inputs).
    """
    batch, q_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    groups = heads // kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    dt = _math_dtype(q, k, v)
    qg = q.astype(dt).reshape(batch, q_len, kv_heads, groups, head_dim)
    logits = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k.astype(dt)) * scale
    logits = logits.reshape(batch, heads, q_len, -1)
    if bias is not None:
        logits = logits + bias.astype(dt)
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    if mask is None:
        mask = jnp.ones((1, 1, 1, 1), bool)
    mask = jnp.broadcast_to(mask, logits.shape)
    if score == "softmax":
        row_max = jnp.max(jnp.where(mask, logits, -jnp.inf), axis=-1, keepdims=True)
        row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
        weights = jnp.where(mask, jnp.exp(logits - row_max), 0.0)
    else:
        factor = _length_factor(jnp.sum(mask, axis=-1, keepdims=True), softplus_train_len)
        weights = jnp.where(mask, jax.nn.softplus(factor * jnp.where(mask, logits, 0.0)), 0.0)
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    probs = weights / jnp.where(denom == 0, 1.0, denom)
    if dropout_rate:
        keep = attention_dropout_mask(dropout_rng, dropout_rate, batch, heads, q_len, logits.shape[-1])
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    probs = probs.reshape(batch, kv_heads, groups, q_len, -1)
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v.astype(dt))
    out = out.reshape(batch, q_len, heads, v.shape[-1]).astype(q.dtype)
    if not return_lse:
        return out
    safe = jnp.where(denom > 0, denom, 1.0)[..., 0]
    lse = jnp.where(denom[..., 0] > 0, row_max[..., 0] + jnp.log(safe), -jnp.inf)
    return out, lse


# ----------------------------------------------------------------------------
# Blockwise (online-softmax) implementation
# ----------------------------------------------------------------------------


def _tiles(x, size, pad_value=0):
    """``[b, L, ...]`` -> ``[num_tiles, b, size, ...]``: axis 1 padded with ``pad_value`` and split."""
    return jnp.moveaxis(split_chunks(x, size, axis=1, pad_value=pad_value), 1, 0)


def _attention_blockwise(
    q, k, v, *, q_pos, k_pos, q_seg, k_seg, mask_opts, bias, softcap, scale, score,
    softplus_train_len, dropout_rate, dropout_rng, block_size,
):
    """Online-softmax attention, one ``[block_q, block_k]`` tile of logits at a time.

    Outer ``lax.map`` over query blocks, inner ``lax.scan`` over key blocks
    carrying the running row max ``m``, normaliser ``l`` and accumulator
    ``acc``. Both loop bodies are rematerialised (``jax.checkpoint``), so the
    backward pass also keeps only O(length) state. Returns ``(out, lse)`` as
    ``[batch, q_len, heads, dv]`` and ``[batch, heads, q_len]`` in the math dtype.
    """
    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads, dv = k.shape[1], k.shape[2], v.shape[-1]
    groups = heads // kv_heads
    dt = _math_dtype(q, k, v)
    bq, bk = min(block_size[0], q_len), min(block_size[1], kv_len)
    nq, nk = -(-q_len // bq), -(-kv_len // bk)
    pq, pk = nq * bq - q_len, nk * bk - kv_len

    # Tiles, block index first: q [nq, b, kvh, g, bq, d], k/v [nk, b, kvh, bk, d].
    qt = q.astype(dt).reshape(batch, q_len, kv_heads, groups, head_dim)
    qt = jnp.moveaxis(_tiles(qt, bq), 2, 4)
    kt, vt = (jnp.moveaxis(_tiles(x.astype(dt), bk), 2, 3) for x in (k, v))
    q_xs = dict(
        i=jnp.arange(nq, dtype=jnp.int32), q=qt, pos=_tiles(q_pos, bq),
        seg=None if q_seg is None else _tiles(q_seg, bq),
    )
    k_xs = dict(
        j=jnp.arange(nk, dtype=jnp.int32), k=kt, v=vt, pos=_tiles(k_pos, bk, -1),
        seg=None if k_seg is None else _tiles(k_seg, bk),
        valid=(jnp.arange(nk * bk) < kv_len).reshape(nk, bk),
    )
    if bias is not None and not callable(bias):
        bias = bias.astype(dt)
        pad = [(0, 0), (0, 0), (0, pq if bias.shape[2] > 1 else 0), (0, pk if bias.shape[3] > 1 else 0)]
        bias = jnp.pad(bias, pad)
    seed = _dropout_seed(dropout_rng) if dropout_rate else None
    head_idx = (jnp.arange(kv_heads)[:, None] * groups + jnp.arange(groups))[None, :, :, None, None]

    def tile_mask(qx, kx):  # -> bool [B, 1, 1, bq, bk]
        vis = _visible(
            qx["pos"][:, :, None], kx["pos"][:, None, :],
            None if qx["seg"] is None else qx["seg"][:, :, None],
            None if kx["seg"] is None else kx["seg"][:, None, :],
            empty_slots=True, **mask_opts,
        )
        return (vis & kx["valid"][None, None, :])[:, None, None]

    def tile_logits(qx, kx):  # -> dt [b, kvh, g, bq, bk]
        s = jnp.einsum("bhgqd,bhkd->bhgqk", qx["q"], kx["k"]) * scale
        if bias is not None:
            if callable(bias):
                tile = bias(qx["pos"][:, :, None], kx["pos"][:, None, :]).astype(dt)
            else:
                tile = bias
                if tile.shape[2] > 1:
                    tile = jax.lax.dynamic_slice_in_dim(tile, qx["i"] * bq, bq, axis=2)
                if tile.shape[3] > 1:
                    tile = jax.lax.dynamic_slice_in_dim(tile, kx["j"] * bk, bk, axis=3)
            if tile.shape[1] == heads:
                tile = tile.reshape(tile.shape[0], kv_heads, groups, *tile.shape[2:])
            else:
                tile = tile[:, :, None]
            s = s + tile
        if softcap is not None:
            s = softcap * jnp.tanh(s / softcap)
        return s

    def query_block(qx):
        if score == "softplus":
            # The length factor needs each row's number of visible keys first.
            def count(n, kx):
                return n + jnp.sum(tile_mask(qx, kx), axis=-1, dtype=jnp.int32), None

            n, _ = jax.lax.scan(count, jnp.zeros((batch, 1, 1, bq), jnp.int32), k_xs)
            factor = _length_factor(n, softplus_train_len)[..., None]

        def update(carry, kx, vis):
            m, l, acc = carry
            s = tile_logits(qx, kx)
            if score == "softmax":
                # Rescale the running sums to the new row max; the max is a
                # constant shift (softmax is shift-invariant), so no gradient.
                m_new = jax.lax.stop_gradient(jnp.maximum(m, jnp.max(jnp.where(vis, s, -jnp.inf), -1)))
                m_use = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
                p = jnp.where(vis, jnp.exp(s - m_use[..., None]), 0.0)
                alpha = jnp.exp(m - m_use)
            else:
                m_new, alpha = m, jnp.ones((), dt)
                p = jnp.where(vis, jax.nn.softplus(factor * jnp.where(vis, s, 0.0)), 0.0)
            l = alpha * l + jnp.sum(p, -1)
            if seed is not None:
                b_idx = jnp.arange(batch)[:, None, None, None, None]
                q_idx = (qx["i"] * bq + jnp.arange(bq))[:, None]
                keep = _dropout_keep(seed, dropout_rate, b_idx, head_idx, q_idx, kx["j"] * bk + jnp.arange(bk))
                p = jnp.where(keep, p / (1.0 - dropout_rate), 0.0)
            acc = alpha[..., None] * acc + jnp.einsum("bhgqk,bhkd->bhgqd", p, kx["v"])
            return m_new, l, acc

        @jax.checkpoint
        def body(carry, kx):
            vis = tile_mask(qx, kx)
            # Skip tiles with nothing visible (most of them under causal/window masks).
            carry = jax.lax.cond(jnp.any(vis), lambda c: update(c, kx, vis), lambda c: c, carry)
            return carry, None

        shape = (batch, kv_heads, groups, bq)
        init = (jnp.full(shape, -jnp.inf, dt), jnp.zeros(shape, dt),
                jnp.zeros(shape + (dv,), dt))
        (m, l, acc), _ = jax.lax.scan(body, init, k_xs)
        out = acc / jnp.where(l == 0, 1.0, l)[..., None]
        if score == "softmax":
            lse = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), -jnp.inf)
        else:
            lse = jnp.zeros_like(l)
        return out, lse

    out, lse = jax.lax.map(jax.checkpoint(query_block), q_xs)
    # out [nq, b, kvh, g, bq, dv] -> [b, q_len, heads, dv]; lse -> [b, heads, q_len].
    out = jnp.moveaxis(out, (0, 4), (1, 2)).reshape(batch, nq * bq, heads, dv)[:, :q_len]
    lse = jnp.moveaxis(lse, 0, 3).reshape(batch, heads, nq * bq)[..., :q_len]
    return out, lse


# ----------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------


def _check_inputs(q, k, v, bias, num_sinks, softcap):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            "q, k, v must be 4-D [batch, length, heads, head_dim]; got shapes "
            f"q{q.shape} k{k.shape} v{v.shape}"
        )
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(
                f"{name} must be a floating-point array; got {x.dtype} (cast it, e.g. .astype(jnp.float32))"
            )
        if 0 in x.shape:
            raise ValueError(
                f"{name} must have at least one element along every axis [batch, length, heads, head_dim]; "
                f"got shape {x.shape}"
            )
    if k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k and v must agree in batch, kv_len and kv_heads; got k{k.shape} v{v.shape}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must have the same batch size; got {q.shape[0]} and {k.shape[0]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must have the same head_dim; got {q.shape[3]} and {k.shape[3]}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(
            f"q heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]}); "
            "change num_heads or num_kv_heads"
        )
    if bias is not None and not callable(bias):
        target = (q.shape[0], q.shape[2], q.shape[1], k.shape[1])
        shape = jnp.shape(bias)
        if len(shape) != 4 or any(s not in (1, t) for s, t in zip(shape, target)):
            raise ValueError(
                f"bias must be 4-D, broadcastable to [batch, heads, q_len, kv_len] = {target}; "
                f"got shape {shape}"
            )
    if not _is_int(num_sinks) or num_sinks < 0:
        raise ValueError(f"num_sinks must be an int >= 0, got {num_sinks!r}")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"softcap must be positive (or None), got {softcap}")


def _cudnn_why_not(*, q, positions, segment_ids, num_sinks, softcap, window, causal, block_mask,
                   score, dropout_rate, return_lse, mode, **_) -> Optional[str]:
    """Why cuDNN cannot serve these options (``None`` if it can)."""
    if mode is not None:
        return f"cuDNN runs one fused algorithm; mode must be None, got {mode!r}"
    if score != "softmax":
        return f"cuDNN attention has no score={score!r}"
    if dropout_rate:
        return "cuDNN attention here has no dropout_rate"
    if return_lse:
        return "cuDNN attention does not return the lse (return_lse=True)"
    if softcap is not None:
        return "cuDNN attention does not take softcap"
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        return f"cuDNN attention needs bfloat16 or float16 inputs, got {q.dtype}"
    if q.shape[-1] > 128 or q.shape[-1] % 8:
        return f"cuDNN attention needs head_dim <= 128 and a multiple of 8, got {q.shape[-1]}"
    if segment_ids is not None:
        return "cuDNN attention here does not take segment_ids"
    if positions is not None:
        return "cuDNN attention here does not take explicit positions"
    if block_mask is not None:
        return "cuDNN attention here does not take block_mask"
    if num_sinks:
        return "cuDNN attention does not take attention sinks"
    if window is not None and window[1] != 0 and not causal:
        return "cuDNN attention supports only left windows"
    if jax.default_backend() != "gpu":
        return "cuDNN attention needs a GPU"
    return None


def attention(
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    *,
    causal: bool = False,
    window: Window = None,
    segment_ids=None,
    bias: Union[None, jnp.ndarray, Callable] = None,
    softcap: Optional[float] = None,
    num_sinks: int = 0,
    scale: Optional[float] = None,
    backend: str = "auto",
    mode: Optional[str] = None,
    block_mask=None,
    positions=None,
    score: str = "softmax",
    softplus_train_len: Optional[int] = 512,
    dropout_rate: float = 0.0,
    dropout_rng=None,
    return_lse: bool = False,
    block_size: Union[int, Tuple[int, int]] = 512,
):
    """Attention ``normalise(score(scale * q k^T + bias)) v`` with masks.

    Args:
      q: ``[batch, q_len, heads, head_dim]``.
      k, v: ``[batch, kv_len, kv_heads, head_dim]``; ``heads % kv_heads == 0``.
      causal: mask keys after the query's position.
      window: sliding window ``(left, right)`` or ``w`` for ``(w, 0)``.
      segment_ids: ``[batch, length]`` ints (self-attention) or a
        ``(q_segment_ids [batch, q_len], kv_segment_ids [batch, kv_len])`` pair;
        attention stays within equal ids.
      bias: additive logits bias, an array broadcastable to ``[batch, heads,
        q_len, kv_len]``, or a function ``bias(q_pos [B, Q, 1], k_pos [B, 1, K])
        -> [B, heads or 1, Q, K]`` of int positions (``B`` is 1 or batch), which
        the blockwise backend evaluates tile by tile (ALiBi, T5 at any length).
      softcap: if set, logits become ``softcap * tanh(logits / softcap)``.
      num_sinks: keys at positions ``< num_sinks`` stay visible through any window.
      scale: logits scale, default ``head_dim ** -0.5``.
      mode: the pure-JAX algorithm: ``"dense"`` (materialised logits, the
        readable reference), ``"blockwise"`` (online softmax, O(length * block)
        memory), or None (blockwise when ``q_len * kv_len >
        AUTO_BLOCKWISE_MIN_LOGITS``, else dense). The fused backends refuse an
        explicit mode.
      backend: ``"xla"`` (pure JAX, every option), ``"cudnn"`` (through
        ``jax.nn.dot_product_attention``), ``"pallas"`` (the flash kernel of
        ``pallas_kernels``) or ``"auto"``: on a GPU cuDNN where it serves the
        options, then the kernel, then XLA; on a TPU the kernel, then XLA; on a
        CPU XLA (see :mod:`sequax.ops.dispatch`). A backend named explicitly
        that cannot serve the options raises ``ValueError`` saying why.
      block_mask: ``(layout [q_blocks, kv_blocks] bool, block_size)``, see
        :func:`block_sparse_layout`.
      positions: ``(q_positions, kv_positions)``, int ``[len]`` or ``[batch,
        len]``, replacing the default positions; negative key positions are
        empty slots.
      score: ``"softmax"``, or ``"softplus"``: weights ``softplus(c_i * logits)``
        divided by their sum over the visible keys, with ``c_i = log(n_i) /
        log(softplus_train_len)`` and ``n_i`` the number of keys query ``i``
        sees (``c_i = 1`` if ``softplus_train_len`` is None). This is the
        softplus + l1-normalisation attention of Gao & Spratling, "Softplus
        Attention with Re-weighting Boosts Length Extrapolation in Large
        Language Models" (arXiv:2501.13428, LSSA, without the re-weighting
        stage), with its length factor in the entropy-invariance form
        ``log_{train_len}(n)`` of Su (2021, "Entropy invariance and the scale of
        attention", kexue.fm/archives/8823): 1 at the training length, growing
        logarithmically beyond it.
      softplus_train_len: the training length in the softplus length factor (> 1).
      dropout_rate: drop normalised attention weights with this probability
        (kept ones scaled by ``1 / (1 - rate)``); needs ``dropout_rng``. The
        mask is :func:`attention_dropout_mask`, identical for every backend.
      dropout_rng: a ``jax.random`` key.
      return_lse: also return ``lse`` ``[batch, heads, q_len]`` float32 (float64 for float64 inputs), the
        log-sum-exp of the final logits over the visible keys (``-inf`` for
        rows with none); softmax only.
      block_size: blockwise tile size, ``int`` or ``(block_q, block_k)``.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype, or ``(out, lse)``
      with ``return_lse``.
    """
    check_mode("attention", mode, MODES)
    _check_inputs(q, k, v, bias, num_sinks, softcap)
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
    if score == "softplus" and softplus_train_len is not None and softplus_train_len <= 1:
        raise ValueError(f"softplus_train_len must be > 1 (or None), got {softplus_train_len}")
    if return_lse and score != "softmax":
        raise ValueError("return_lse=True needs score='softmax' (the lse of softplus weights is not defined)")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
    if dropout_rate and dropout_rng is None:
        raise ValueError("dropout_rate > 0 needs dropout_rng (a jax.random key)")
    block_size = _normalize_block_size(block_size)
    window = normalize_window(window)
    block_mask = _normalize_block_mask(block_mask)
    q_len, kv_len = q.shape[1], k.shape[1]
    if block_mask is not None and positions is None:
        rows, cols = block_mask[0].shape
        if min(rows, cols) * block_mask[1] < kv_len:
            raise ValueError(
                f"block_mask layout {block_mask[0].shape} with block_size {block_mask[1]} covers fewer "
                f"than kv_len={kv_len} positions; make the layout ceil(kv_len / block_size) blocks a side"
            )
    q_seg, kv_seg = _split_segment_ids(segment_ids, q_len, kv_len, batch=q.shape[0])
    if positions is not None:
        _split_positions(positions, q_len, kv_len, batch=q.shape[0])  # validates them
    args = dict(
        causal=causal, window=window, segment_ids=None if q_seg is None else (q_seg, kv_seg),
        bias=bias, softcap=softcap, num_sinks=num_sinks, scale=scale, block_mask=block_mask,
        positions=positions, score=score, softplus_train_len=softplus_train_len,
        dropout_rate=dropout_rate, dropout_rng=dropout_rng, return_lse=return_lse, mode=mode,
        block_size=block_size,
    )
    return ATTENTION(backend, dict(q=q, k=k, v=v, **args), q, k, v, **args)


def _attention_xla(q, k, v, *, causal, window, segment_ids, bias, softcap, num_sinks, scale,
                   block_mask, positions, score, softplus_train_len, dropout_rate, dropout_rng,
                   return_lse, mode, block_size):
    """The pure-JAX backend on validated arguments (``segment_ids`` a (q, kv) pair or None)."""
    q_len, kv_len = q.shape[1], k.shape[1]
    q_seg, kv_seg = (None, None) if segment_ids is None else segment_ids
    q_pos, k_pos = _split_positions(positions, q_len, kv_len)
    if mode is None:
        mode = "blockwise" if q_len * kv_len > AUTO_BLOCKWISE_MIN_LOGITS else "dense"
    mask_opts = dict(causal=causal, window=window, num_sinks=num_sinks, block_mask=block_mask)
    if mode == "blockwise":
        out, lse = _attention_blockwise(
            q, k, v, q_pos=q_pos, k_pos=k_pos, q_seg=q_seg, k_seg=kv_seg, mask_opts=mask_opts,
            bias=bias, softcap=softcap, scale=q.shape[-1] ** -0.5 if scale is None else scale,
            score=score, softplus_train_len=softplus_train_len, dropout_rate=dropout_rate,
            dropout_rng=dropout_rng, block_size=block_size,
        )
        out = out.astype(q.dtype)
        return (out, lse) if return_lse else out
    mask = attention_mask(q_len, kv_len, segment_ids=segment_ids, positions=positions, **mask_opts)
    return attention_reference(
        q, k, v, mask=mask, bias=_full_bias(bias, q_pos, k_pos), softcap=softcap, scale=scale,
        score=score, softplus_train_len=softplus_train_len, dropout_rate=dropout_rate,
        dropout_rng=dropout_rng, return_lse=return_lse,
    )


def _attention_cudnn(q, k, v, *, causal, window, bias, scale, positions, **_):
    """``jax.nn.dot_product_attention(implementation="cudnn")`` (options checked by its why_not)."""
    q_pos, k_pos = _split_positions(positions, q.shape[1], k.shape[1])
    bias = _full_bias(bias, q_pos, k_pos)
    if bias is not None:
        bias = bias.astype(q.dtype)
    mask = None
    is_causal = causal and q.shape[1] == k.shape[1]
    if causal and not is_causal:
        mask = attention_mask(q.shape[1], k.shape[1], causal=True, window=window)
        window = None
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, scale=scale, is_causal=is_causal,
        local_window_size=window, implementation="cudnn",
    )


ATTENTION.register("xla", _attention_xla)
ATTENTION.register("cudnn", _attention_cudnn, _cudnn_why_not)
ATTENTION.register("pallas", "pallas_kernels.flash_attention:attention", "pallas_kernels.flash_attention:why_not")


def _full_bias(bias, q_pos, k_pos):
    """A bias function evaluated on all positions (for the materialising backends)."""
    if callable(bias):
        return bias(q_pos[:, :, None], k_pos[:, None, :])
    return bias


def combine_attention(out_a, lse_a, out_b, lse_b):
    """Merge attention over two disjoint key sets into attention over their union.

    ``out_*`` ``[batch, q_len, heads, dv]`` and ``lse_*`` ``[batch, heads,
    q_len]`` as returned with ``return_lse=True``; softmax over the union
    re-weights each part by ``exp(lse_part - lse_union)``.

    Returns:
      ``(out, lse)`` of the same shapes (``out`` float32).
    """
    m = jax.lax.stop_gradient(jnp.maximum(lse_a, lse_b))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    wa, wb = jnp.exp(lse_a - m), jnp.exp(lse_b - m)
    total = wa + wb
    safe = jnp.where(total > 0, total, 1.0)

    def t(w):  # [b, h, q] -> [b, q, h, 1]
        return jnp.swapaxes(w, 1, 2)[..., None]

    out = (t(wa) * out_a.astype(jnp.float32) + t(wb) * out_b.astype(jnp.float32)) / t(safe)
    lse = jnp.where(total > 0, m + jnp.log(safe), -jnp.inf)
    return out, lse
