"""Mosaic TPU Pallas flash attention: forward, dq and dk/dv kernels.

Same interface and math as ``pallas_gpu`` (arrays ``[batch, length, heads,
head_dim]`` padded by ``api.py``), laid out here as ``[batch, heads, length,
head_dim]`` so that a ``[block, head_dim]`` tile is a VMEM block. The tile lists
of ``masks.tile_lists`` are scalar-prefetched into SMEM and drive the index
maps: grid step ``n`` of query block ``i`` DMAs key block ``order[i, n]``; steps
past the visible count repeat the last block (no new DMA) and compute nothing.
The last grid axis is sequential ("arbitrary") and carries the online-softmax
state (or the gradient accumulators) in VMEM scratch.

- forward, grid ``(batch, heads, q blocks, visible kv tiles)``;
- dq, the same grid, accumulating ``ds k``;
- dk/dv, grid ``(batch, kv_heads, kv blocks, groups, visible q tiles)``: the
  query heads sharing a key head (GQA) are one more sequential axis.

Per-row vectors (positions, segment ids, lse, delta) of the query side are
``[rows, 1]`` blocks (sublanes), those of the key side ``[1, cols]`` (lanes),
so comparisons broadcast without relayouts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.flash_attention import masks
from pallas_kernels.flash_attention.scores import LN2, NEG_INIT, logits2, softcap_grad
from pallas_kernels.flash_attention.spec import KernelSpec


def _dot(a, b, spec, contract):
    precision = jax.lax.Precision.HIGHEST if spec.precise else None
    return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision,
                               preferred_element_type=jnp.float32)


def _heads_major(x):
    return jnp.swapaxes(x, 1, 2)


# ----------------------------------------------------------------------------
# Tile helpers
# ----------------------------------------------------------------------------


class _Prefetch:
    """The scalar-prefetched refs: tile lists (order, counts), then layout and ALiBi slopes if used."""

    def __init__(self, spec, refs):
        self.order, self.counts = refs[0], refs[1]
        rest = list(refs[2:])
        self.layout = rest.pop(0) if spec.mask.layout_block is not None else None
        self.slopes = rest.pop(0) if spec.score.alibi else None


def _visible_block(order, counts, lb, row, n):
    """The block named by step ``n`` of list row ``row``; past the count, the last visible one (no new DMA)."""
    seen = counts[lb, row, 1]
    return order[lb, row, jnp.maximum(jnp.minimum(n, seen - 1), 0)]


def _positions(r, spec, q_start, k_start):
    """Query positions ``[bq, 1]``-broadcastable and key positions / indices ``[1, bk]``-broadcastable."""
    bq, bk = spec.block_q, spec.block_k
    k_idx = k_start + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    if spec.mask.explicit_positions:
        return r["q_pos"][...], r["k_pos"][...], k_idx
    q_pos = q_start + spec.mask.q_offset + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
    return q_pos, k_idx, k_idx


def _tile(r, pf, spec, q, k, q_start, k_start, slope, masked):
    """Base-2 logits of one tile (masked ``-inf`` where invisible) and the softcapped logits."""
    q_pos, k_pos, k_idx = _positions(r, spec, q_start, k_start)
    t, capped = logits2(spec.score, _dot(q, k, spec, ((1,), (1,))), slope=slope, q_pos=q_pos, k_pos=k_pos)
    if masked:
        corners = None
        if spec.mask.layout_block is not None:
            corners = masks.layout_corners(pf.layout, spec.layout_cols, q_start + spec.mask.q_offset, k_start,
                                           spec.mask.layout_block)
        q_seg = k_seg = None
        if spec.mask.segments:
            q_seg, k_seg = r["q_seg"][...], r["k_seg"][...]
        vis = masks.visible(spec.mask, q_pos, k_pos, k_idx=k_idx, q_seg=q_seg, k_seg=k_seg, corners=corners)
        t = jnp.where(vis, t, -jnp.inf)
    return t, capped


def _run_visible(pf, lb, row, n, body):
    """``body(masked)`` on steps that name a visible tile: FULL ones unmasked, PARTIAL ones masked."""
    full, seen = pf.counts[lb, row, 0], pf.counts[lb, row, 1]
    pl.when(n < full)(lambda: body(False))
    pl.when((n >= full) & (n < seen))(lambda: body(True))


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------


def _forward_kernel(*refs, spec: KernelSpec, names, num_prefetch):
    pf = _Prefetch(spec, refs[:num_prefetch])
    r = dict(zip(names, refs[num_prefetch:]))
    b, h, i, n = (pl.program_id(a) for a in range(4))
    lb = b if spec.batched_lists else 0
    m_ref, l_ref, acc_ref = r["m"], r["l"], r["acc"]

    @pl.when(n == 0)
    def _():
        m_ref[...] = jnp.full(m_ref.shape, NEG_INIT, jnp.float32)
        l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    def body(masked):
        j = _visible_block(pf.order, pf.counts, lb, i, n)
        slope = pf.slopes[h] if spec.score.alibi else None
        v = r["v"][...]
        t, _ = _tile(r, pf, spec, r["q"][...], r["k"][...], i * spec.block_q, j * spec.block_k, slope, masked)
        m_prev = m_ref[...]
        m_new = jnp.maximum(m_prev, jnp.max(t, axis=1, keepdims=True))
        p = jnp.exp2(t - m_new)
        alpha = jnp.exp2(m_prev - m_new)
        l_ref[...] = alpha * l_ref[...] + jnp.sum(p, axis=1, keepdims=True)
        acc_ref[...] = alpha * acc_ref[...] + _dot(p.astype(v.dtype), v, spec, ((1,), (0,)))
        m_ref[...] = m_new

    _run_visible(pf, lb, i, n, body)

    @pl.when(n == pl.num_programs(3) - 1)
    def _():
        l = l_ref[...]
        empty = l == 0.0
        safe = jnp.where(empty, 1.0, l)
        r["o"][...] = (acc_ref[...] / safe).astype(r["o"].dtype)
        r["lse"][...] = jnp.where(empty, -jnp.inf, (m_ref[...] + jnp.log2(safe)) * LN2)


def _dq_kernel(*refs, spec: KernelSpec, names, num_prefetch):
    pf = _Prefetch(spec, refs[:num_prefetch])
    r = dict(zip(names, refs[num_prefetch:]))
    b, h, i, n = (pl.program_id(a) for a in range(4))
    lb = b if spec.batched_lists else 0
    acc_ref = r["acc"]

    @pl.when(n == 0)
    def _():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    def body(masked):
        j = _visible_block(pf.order, pf.counts, lb, i, n)
        slope = pf.slopes[h] if spec.score.alibi else None
        k, v = r["k"][...], r["v"][...]
        t, capped = _tile(r, pf, spec, r["q"][...], k, i * spec.block_q, j * spec.block_k, slope, masked)
        p = jnp.exp2(t - r["lse2"][...])
        ds = p * (_dot(r["do"][...], v, spec, ((1,), (1,))) - r["delta"][...])
        ds = softcap_grad(spec.score, ds, capped)
        acc_ref[...] += _dot(ds.astype(k.dtype), k, spec, ((1,), (0,)))

    _run_visible(pf, lb, i, n, body)

    @pl.when(n == pl.num_programs(3) - 1)
    def _():
        r["dq"][...] = (acc_ref[...] * spec.score.scale).astype(r["dq"].dtype)


def _dkdv_kernel(*refs, spec: KernelSpec, names, num_prefetch):
    pf = _Prefetch(spec, refs[:num_prefetch])
    r = dict(zip(names, refs[num_prefetch:]))
    b, kh, j, g, n = (pl.program_id(a) for a in range(5))
    lb = b if spec.batched_lists else 0
    dk_ref, dv_ref = r["dk_acc"], r["dv_acc"]

    @pl.when((g == 0) & (n == 0))
    def _():
        dk_ref[...] = jnp.zeros(dk_ref.shape, jnp.float32)
        dv_ref[...] = jnp.zeros(dv_ref.shape, jnp.float32)

    def body(masked):
        i = _visible_block(pf.order, pf.counts, lb, j, n)
        slope = pf.slopes[kh * spec.groups + g] if spec.score.alibi else None
        q, do, v = r["q"][...], r["do"][...], r["v"][...]
        t, capped = _tile(r, pf, spec, q, r["k"][...], i * spec.block_q, j * spec.block_k, slope, masked)
        p = jnp.exp2(t - r["lse2"][...])
        dv_ref[...] += _dot(p.astype(do.dtype), do, spec, ((0,), (0,)))
        ds = p * (_dot(do, v, spec, ((1,), (1,))) - r["delta"][...])
        ds = softcap_grad(spec.score, ds, capped)
        dk_ref[...] += _dot(ds.astype(q.dtype), q, spec, ((0,), (0,)))

    _run_visible(pf, lb, j, n, body)

    @pl.when((g == pl.num_programs(3) - 1) & (n == pl.num_programs(4) - 1))
    def _():
        r["dk"][...] = (dk_ref[...] * spec.score.scale).astype(r["dk"].dtype)
        r["dv"][...] = dv_ref[...].astype(r["dv"].dtype)


# ----------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------


class _Call:
    """Named inputs with BlockSpecs (index maps get the grid indices and the prefetch refs)."""

    def __init__(self, spec, aux, order, counts):
        self.prefetch = [order, counts]
        if spec.mask.layout_block is not None:
            self.prefetch.append(aux["layout"])
        if spec.score.alibi:
            self.prefetch.append(aux["slopes"])
        self.names, self.arrays, self.specs = [], [], []

    def add(self, name, array, block_shape, index_map):
        self.names.append(name)
        self.arrays.append(array)
        self.specs.append(pl.BlockSpec(block_shape, index_map))

    def __call__(self, kernel, spec, grid, outs, out_specs, scratch, semantics, interpret, name):
        names = tuple(self.names) + tuple(n for n, _ in outs) + tuple(n for n, _ in scratch)
        grid_spec = pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=len(self.prefetch), grid=grid, in_specs=self.specs, out_specs=out_specs,
            scratch_shapes=[s for _, s in scratch])
        return pl.pallas_call(
            functools.partial(kernel, spec=spec, names=names, num_prefetch=len(self.prefetch)),
            out_shape=[s for _, s in outs], grid_spec=grid_spec, interpret=interpret,
            compiler_params=pltpu.CompilerParams(dimension_semantics=semantics), name=name,
        )(*self.prefetch, *self.arrays)


def _side_vectors(call, spec, aux, q_block_of, k_block_of, batch_of):
    """Positions / segment ids as ``[B, Lq, 1]`` (query side) and ``[B, 1, Lk]`` (key side) blocks."""
    bq, bk = spec.block_q, spec.block_k
    if spec.mask.explicit_positions:
        pb = batch_of if spec.batched_positions else (lambda *a: 0)
        call.add("q_pos", aux["q_pos"][:, :, None], (None, bq, 1), lambda *a: (pb(*a), q_block_of(*a), 0))
        call.add("k_pos", aux["k_pos"][:, None, :], (None, 1, bk), lambda *a: (pb(*a), 0, k_block_of(*a)))
    if spec.mask.segments:
        call.add("q_seg", aux["q_seg"][:, :, None], (None, bq, 1), lambda *a: (batch_of(*a), q_block_of(*a), 0))
        call.add("k_seg", aux["k_seg"][:, None, :], (None, 1, bk), lambda *a: (batch_of(*a), 0, k_block_of(*a)))


def _by_query_block(spec, aux, order, counts, q, k, v):
    """Inputs shared by the forward and dq kernels (grid ``(b, h, i, n)``)."""
    call = _Call(spec, aux, order, counts)
    lb = (lambda b: b) if spec.batched_lists else (lambda b: 0)
    kv_block = lambda b, h, i, n, o, c, *_: _visible_block(o, c, lb(b), i, n)  # noqa: E731
    call.add("q", q, (None, None, spec.block_q, q.shape[-1]), lambda b, h, i, n, *_: (b, h, i, 0))
    kv_map = lambda b, h, i, n, *p: (b, jax.lax.div(h, spec.groups), kv_block(b, h, i, n, *p), 0)  # noqa: E731
    call.add("k", k, (None, None, spec.block_k, k.shape[-1]), kv_map)
    call.add("v", v, (None, None, spec.block_k, v.shape[-1]), kv_map)
    _side_vectors(call, spec, aux, lambda b, h, i, n, *p: i, lambda b, h, i, n, *p: kv_block(b, h, i, n, *p),
                  lambda b, *_: b)
    return call


def _row_block(spec, d):
    return pl.BlockSpec((None, None, spec.block_q, d), lambda b, h, i, n, *_: (b, h, i, 0))


def forward(q, k, v, aux, order, counts, spec: KernelSpec, interpret: bool):
    """As :func:`pallas_kernels.flash_attention.pallas_gpu.forward`."""
    q, k, v = _heads_major(q), _heads_major(k), _heads_major(v)
    batch, heads, lq, _ = q.shape
    nq, dv = lq // spec.block_q, v.shape[-1]
    call = _by_query_block(spec, aux, order, counts, q, k, v)
    outs = [("o", jax.ShapeDtypeStruct((batch, heads, lq, dv), q.dtype)),
            ("lse", jax.ShapeDtypeStruct((batch, heads, lq, 1), jnp.float32))]
    scratch = [("m", pltpu.VMEM((spec.block_q, 1), jnp.float32)), ("l", pltpu.VMEM((spec.block_q, 1), jnp.float32)),
               ("acc", pltpu.VMEM((spec.block_q, dv), jnp.float32))]
    o, lse = call(_forward_kernel, spec, (batch, heads, nq, spec.max_count), outs,
                  [_row_block(spec, dv), _row_block(spec, 1)], scratch,
                  ("parallel", "parallel", "parallel", "arbitrary"), interpret, "flash_attention_fwd")
    return _heads_major(o), lse[..., 0]


def backward_dq(q, k, v, do, lse2, delta, aux, order, counts, spec: KernelSpec, interpret: bool):
    """As :func:`pallas_kernels.flash_attention.pallas_gpu.backward_dq`."""
    q, k, v, do = (_heads_major(x) for x in (q, k, v, do))
    batch, heads, lq, d = q.shape
    call = _by_query_block(spec, aux, order, counts, q, k, v)
    call.add("do", do, (None, None, spec.block_q, do.shape[-1]), lambda b, h, i, n, *_: (b, h, i, 0))
    for name, x in (("lse2", lse2), ("delta", delta)):
        call.add(name, x[..., None], (None, None, spec.block_q, 1), lambda b, h, i, n, *_: (b, h, i, 0))
    (dq,) = call(_dq_kernel, spec, (batch, heads, lq // spec.block_q, spec.max_count),
                 [("dq", jax.ShapeDtypeStruct(q.shape, q.dtype))], [_row_block(spec, d)],
                 [("acc", pltpu.VMEM((spec.block_q, d), jnp.float32))],
                 ("parallel", "parallel", "parallel", "arbitrary"), interpret, "flash_attention_dq")
    return _heads_major(dq)


def backward_dkdv(q, k, v, do, lse2, delta, aux, order_t, counts_t, spec: KernelSpec, interpret: bool):
    """As :func:`pallas_kernels.flash_attention.pallas_gpu.backward_dkdv`."""
    q, k, v, do = (_heads_major(x) for x in (q, k, v, do))
    batch, kv_heads, lk, d = k.shape
    dv, g = v.shape[-1], spec.groups
    call = _Call(spec, aux, order_t, counts_t)
    lb = (lambda b: b) if spec.batched_lists else (lambda b: 0)
    q_block = lambda b, kh, j, gg, n, o, c, *_: _visible_block(o, c, lb(b), j, n)  # noqa: E731
    key_map = lambda b, kh, j, gg, n, *_: (b, kh, j, 0)  # noqa: E731
    query_map = lambda b, kh, j, gg, n, *p: (b, kh * g + gg, q_block(b, kh, j, gg, n, *p), 0)  # noqa: E731
    call.add("k", k, (None, None, spec.block_k, d), key_map)
    call.add("v", v, (None, None, spec.block_k, dv), key_map)
    call.add("q", q, (None, None, spec.block_q, d), query_map)
    call.add("do", do, (None, None, spec.block_q, dv), query_map)
    for name, x in (("lse2", lse2), ("delta", delta)):
        call.add(name, x[..., None], (None, None, spec.block_q, 1), query_map)
    _side_vectors(call, spec, aux, lambda b, kh, j, gg, n, *p: q_block(b, kh, j, gg, n, *p),
                  lambda b, kh, j, *_: j, lambda b, *_: b)
    outs = [("dk", jax.ShapeDtypeStruct(k.shape, k.dtype)), ("dv", jax.ShapeDtypeStruct(v.shape, v.dtype))]
    out_specs = [pl.BlockSpec((None, None, spec.block_k, d), key_map),
                 pl.BlockSpec((None, None, spec.block_k, dv), key_map)]
    scratch = [("dk_acc", pltpu.VMEM((spec.block_k, d), jnp.float32)),
               ("dv_acc", pltpu.VMEM((spec.block_k, dv), jnp.float32))]
    dk, dv_ = call(_dkdv_kernel, spec, (batch, kv_heads, lk // spec.block_k, g, spec.max_count), outs, out_specs,
                   scratch, ("parallel", "parallel", "parallel", "arbitrary", "arbitrary"), interpret,
                   "flash_attention_dkdv")
    return _heads_major(dk), _heads_major(dv_)
