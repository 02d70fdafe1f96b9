"""Triton-backend Pallas flash attention: forward, dq and dk/dv kernels.

Layout ``[batch, length, heads, head_dim]`` throughout (no transposes): a
BlockSpec picks one head's ``[block, head_dim]`` rows, strided in memory.
Lengths are padded to the blocks and head dims to a power of two by the
caller (``api.py``); tiles are visited through the compact lists of
``masks.tile_lists`` (FULL tiles first, without an element mask; then PARTIAL
ones with it), so skipped tiles cost nothing.

- forward, grid ``(q blocks, batch * heads)``: online softmax in base 2 over
  the visible key tiles of one query block, float32 accumulator; writes ``o``
  and the natural-log ``lse``. Causal grids run the last (heaviest) query
  blocks first.
- dq, grid ``(q blocks, batch * heads)``: recomputes ``p = exp2(t - lse2)``
  tile by tile, ``ds = p * (do.v - delta)``, ``dq += ds k``.
- dk/dv, grid ``(kv blocks, batch * kv_heads)``: for one key tile, loops over
  the ``groups`` query heads that share it (GQA without repeating k/v) and
  their visible query tiles: ``dv += p^T do``, ``dk += ds^T q``.

The two-kernel backward (dq apart from dk/dv) recomputes ``q.k`` and ``do.v``
once more (7 matmuls per tile pair instead of 5) but needs no atomics, keeps
every accumulator in registers and is deterministic; the dq grid has
``batch * heads * q_blocks`` programs, enough to fill the GPU at any length.
"""

from __future__ import annotations

import functools
import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.flash_attention import masks
from pallas_kernels.flash_attention.scores import LN2, NEG_INIT, logits2, softcap_grad
from pallas_kernels.flash_attention.spec import KernelSpec


# ----------------------------------------------------------------------------
# Tile helpers (shared by the three kernels)
# ----------------------------------------------------------------------------


def _dot(a, b, spec, contract):
    precision = jax.lax.Precision.HIGHEST if spec.precise else None
    return jax.lax.dot_general(a, b, (contract, ((), ())), precision=precision,
                               preferred_element_type=jnp.float32)


def _dot_nt(a, b, spec):  # a [m, d], b [n, d] -> [m, n]
    return _dot(a, b, spec, ((1,), (1,)))


def _dot_nn(a, b, spec):  # a [m, k], b [k, n] -> [m, n]
    return _dot(a, b, spec, ((1,), (0,)))


def _dot_tn(a, b, spec):  # a [k, m], b [k, n] -> [m, n]
    return _dot(a, b, spec, ((0,), (0,)))


def _q_side(r, spec, start, qs=None):
    """Query positions ``[bq, 1]`` and segment ids of the query rows ``start .. start + bq``."""
    bq = spec.block_q
    if spec.mask.explicit_positions:
        pos = (r["q_pos"][...] if qs is None else r["q_pos"][qs])[:, None]
    else:
        pos = (start + spec.mask.q_offset + jnp.arange(bq, dtype=jnp.int32))[:, None]
    seg = None
    if spec.mask.segments:
        seg = (r["q_seg"][...] if qs is None else r["q_seg"][qs])[:, None]
    return pos, seg


def _k_side(r, spec, start, ks=None):
    """Key indices, positions ``[1, bk]`` and segment ids of the key rows ``start .. start + bk``."""
    bk = spec.block_k
    idx = (start + jnp.arange(bk, dtype=jnp.int32))[None, :]
    if spec.mask.explicit_positions:
        pos = (r["k_pos"][...] if ks is None else r["k_pos"][ks])[None, :]
    else:
        pos = idx
    seg = None
    if spec.mask.segments:
        seg = (r["k_seg"][...] if ks is None else r["k_seg"][ks])[None, :]
    return idx, pos, seg


def _tile_mask(r, spec, q_start, k_start, q_pos, q_seg, k_idx, k_pos, k_seg):
    corners = None
    if spec.mask.layout_block is not None:
        corners = masks.layout_corners(r["layout"], spec.layout_cols, q_start + spec.mask.q_offset,
                                       k_start, spec.mask.layout_block)
    return masks.visible(spec.mask, q_pos, k_pos, k_idx=k_idx, q_seg=q_seg, k_seg=k_seg, corners=corners)


def _q_block(spec, num_q_blocks):
    i = pl.program_id(0)
    return num_q_blocks - 1 - i if spec.reverse else i


# ----------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------


def _forward_kernel(*refs, spec: KernelSpec, names, num_q_blocks):
    r = dict(zip(names, refs))
    bq, bk = spec.block_q, spec.block_k
    i = _q_block(spec, num_q_blocks)
    h = jax.lax.rem(pl.program_id(1), spec.heads)
    q_start = i * bq
    q = r["q"][...]
    q_pos, q_seg = _q_side(r, spec, q_start)
    slope = r["slopes"][h] if spec.score.alibi else None

    def step(masked, n, carry):
        m, l, acc = carry
        k_start = pl.multiple_of(r["order"][n] * bk, bk)
        rows = pl.ds(k_start, bk)
        k, v = r["k"][rows, :], r["v"][rows, :]
        k_idx, k_pos, k_seg = _k_side(r, spec, k_start, rows)
        t, _ = logits2(spec.score, _dot_nt(q, k, spec), slope=slope, q_pos=q_pos, k_pos=k_pos)
        if masked:
            vis = _tile_mask(r, spec, q_start, k_start, q_pos, q_seg, k_idx, k_pos, k_seg)
            t = jnp.where(vis, t, -jnp.inf)
        m_new = jnp.maximum(m, jnp.max(t, axis=1))
        p = jnp.exp2(t - m_new[:, None])
        alpha = jnp.exp2(m - m_new)
        l = l * alpha + jnp.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot_nn(p.astype(v.dtype), v, spec)
        return m_new, l, acc

    dv = r["v"].shape[-1]
    carry = (jnp.full((bq,), NEG_INIT, jnp.float32), jnp.zeros((bq,), jnp.float32),
             jnp.zeros((bq, dv), jnp.float32))
    full, seen = r["counts"][0], r["counts"][1]
    carry = jax.lax.fori_loop(0, full, functools.partial(step, False), carry)
    m, l, acc = jax.lax.fori_loop(full, seen, functools.partial(step, True), carry)
    empty = l == 0.0
    safe = jnp.where(empty, 1.0, l)
    r["o"][...] = (acc / safe[:, None]).astype(r["o"].dtype)
    r["lse"][...] = jnp.where(empty, -jnp.inf, (m + jnp.log2(safe)) * LN2)


def _dq_kernel(*refs, spec: KernelSpec, names, num_q_blocks):
    r = dict(zip(names, refs))
    bq, bk = spec.block_q, spec.block_k
    i = _q_block(spec, num_q_blocks)
    h = jax.lax.rem(pl.program_id(1), spec.heads)
    q_start = i * bq
    q, do = r["q"][...], r["do"][...]
    lse2, delta = r["lse2"][...], r["delta"][...]
    q_pos, q_seg = _q_side(r, spec, q_start)
    slope = r["slopes"][h] if spec.score.alibi else None

    def step(masked, n, dq):
        k_start = pl.multiple_of(r["order"][n] * bk, bk)
        rows = pl.ds(k_start, bk)
        k, v = r["k"][rows, :], r["v"][rows, :]
        k_idx, k_pos, k_seg = _k_side(r, spec, k_start, rows)
        t, capped = logits2(spec.score, _dot_nt(q, k, spec), slope=slope, q_pos=q_pos, k_pos=k_pos)
        if masked:
            vis = _tile_mask(r, spec, q_start, k_start, q_pos, q_seg, k_idx, k_pos, k_seg)
            t = jnp.where(vis, t, -jnp.inf)
        p = jnp.exp2(t - lse2[:, None])
        ds = p * (_dot_nt(do, v, spec) - delta[:, None])
        ds = softcap_grad(spec.score, ds, capped)
        return dq + _dot_nn(ds.astype(k.dtype), k, spec)

    dq = jnp.zeros(q.shape, jnp.float32)
    full, seen = r["counts"][0], r["counts"][1]
    dq = jax.lax.fori_loop(0, full, functools.partial(step, False), dq)
    dq = jax.lax.fori_loop(full, seen, functools.partial(step, True), dq)
    r["dq"][...] = (dq * spec.score.scale).astype(r["dq"].dtype)


def _dkdv_kernel(*refs, spec: KernelSpec, names):
    r = dict(zip(names, refs))
    bq, bk = spec.block_q, spec.block_k
    j = pl.program_id(0)
    kh = jax.lax.rem(pl.program_id(1), spec.kv_heads)
    k_start = j * bk
    k, v = r["k"][...], r["v"][...]
    k_idx, k_pos, k_seg = _k_side(r, spec, k_start, pl.ds(k_start, bk))

    def head(g, carry):
        slope = r["slopes"][kh * spec.groups + g] if spec.score.alibi else None

        def step(masked, n, carry):
            dk, dv = carry
            q_start = pl.multiple_of(r["order_t"][n] * bq, bq)
            rows = pl.ds(q_start, bq)
            q, do = r["q"][rows, g, :], r["do"][rows, g, :]
            lse2, delta = r["lse2"][g, rows], r["delta"][g, rows]
            q_pos, q_seg = _q_side(r, spec, q_start, qs=rows)
            t, capped = logits2(spec.score, _dot_nt(q, k, spec), slope=slope, q_pos=q_pos, k_pos=k_pos)
            if masked:
                vis = _tile_mask(r, spec, q_start, k_start, q_pos, q_seg, k_idx, k_pos, k_seg)
                t = jnp.where(vis, t, -jnp.inf)
            p = jnp.exp2(t - lse2[:, None])
            dv = dv + _dot_tn(p.astype(do.dtype), do, spec)
            ds = p * (_dot_nt(do, v, spec) - delta[:, None])
            ds = softcap_grad(spec.score, ds, capped)
            return dk + _dot_tn(ds.astype(q.dtype), q, spec), dv

        full, seen = r["counts_t"][0], r["counts_t"][1]
        carry = jax.lax.fori_loop(0, full, functools.partial(step, False), carry)
        return jax.lax.fori_loop(full, seen, functools.partial(step, True), carry)

    init = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    if spec.groups == 1:  # MHA: no loop around the tile loops
        dk, dv = head(0, init)
    else:
        dk, dv = jax.lax.fori_loop(0, spec.groups, head, init)
    r["dk"][...] = (dk * spec.score.scale).astype(r["dk"].dtype)
    r["dv"][...] = dv.astype(r["dv"].dtype)


# ----------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------


class _Inputs:
    """Named kernel inputs with their BlockSpecs, in call order."""

    def __init__(self):
        self.names, self.arrays, self.specs = [], [], []

    def add(self, name, array, block_shape, index_map):
        self.names.append(name)
        self.arrays.append(array)
        self.specs.append(pl.BlockSpec(block_shape, index_map))


def _common_inputs(ins, spec, aux, *, lq, lk, q_side_block, rows_of, batch_of, q_full):
    """Positions, segment ids, layout and ALiBi slopes (whichever the spec uses)."""
    if spec.mask.explicit_positions:
        pb = batch_of if spec.batched_positions else (lambda *g: 0)
        if q_full:
            ins.add("q_pos", aux["q_pos"], (None, lq), lambda *g: (pb(*g), 0))
        else:
            ins.add("q_pos", aux["q_pos"], (None, q_side_block), lambda *g: (pb(*g), rows_of(*g)))
        ins.add("k_pos", aux["k_pos"], (None, lk), lambda *g: (pb(*g), 0))
    if spec.mask.segments:
        if q_full:
            ins.add("q_seg", aux["q_seg"], (None, lq), lambda *g: (batch_of(*g), 0))
        else:
            ins.add("q_seg", aux["q_seg"], (None, q_side_block), lambda *g: (batch_of(*g), rows_of(*g)))
        ins.add("k_seg", aux["k_seg"], (None, lk), lambda *g: (batch_of(*g), 0))
    if spec.mask.layout_block is not None:
        ins.add("layout", aux["layout"], aux["layout"].shape, lambda *g: (0,))
    if spec.score.alibi:
        ins.add("slopes", aux["slopes"], aux["slopes"].shape, lambda *g: (0,))


def _call(kernel, ins, out_shapes, out_specs, grid, spec, interpret, name):
    return pl.pallas_call(
        functools.partial(kernel, spec=spec, names=tuple(ins.names) + tuple(n for n, _ in out_shapes)),
        out_shape=[s for _, s in out_shapes],
        grid=grid,
        in_specs=ins.specs,
        out_specs=out_specs,
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(num_warps=spec.num_warps, num_stages=spec.num_stages),
        name=name,
    )(*ins.arrays)


def _by_query_block(spec, aux, order, counts, q, k, v, extra_q, extra_rows):
    """Inputs of the forward and dq kernels: grid ``(q blocks, batch * heads)``."""
    batch, lq, heads, _ = q.shape
    nq = lq // spec.block_q
    blk = (lambda i: nq - 1 - i) if spec.reverse else (lambda i: i)
    b_of = lambda i, bh: jax.lax.div(bh, heads)  # noqa: E731
    h_of = lambda i, bh: jax.lax.rem(bh, heads)  # noqa: E731
    lb = b_of if spec.batched_lists else (lambda i, bh: 0)
    q_map = lambda i, bh: (b_of(i, bh), blk(i), h_of(i, bh), 0)  # noqa: E731
    row_map = lambda i, bh: (b_of(i, bh), h_of(i, bh), blk(i))  # noqa: E731
    ins = _Inputs()
    ins.add("q", q, (None, spec.block_q, None, q.shape[-1]), q_map)
    kv_map = lambda i, bh: (b_of(i, bh), 0, jax.lax.div(h_of(i, bh), spec.groups), 0)  # noqa: E731
    ins.add("k", k, (None, k.shape[1], None, k.shape[-1]), kv_map)
    ins.add("v", v, (None, v.shape[1], None, v.shape[-1]), kv_map)
    ins.add("order", order, (None, None, order.shape[-1]), lambda i, bh: (lb(i, bh), blk(i), 0))
    ins.add("counts", counts, (None, None, 2), lambda i, bh: (lb(i, bh), blk(i), 0))
    for name, array in extra_q:  # [batch, lq, heads, d] like q
        ins.add(name, array, (None, spec.block_q, None, array.shape[-1]), q_map)
    for name, array in extra_rows:  # [batch, heads, lq]
        ins.add(name, array, (None, None, spec.block_q), row_map)
    _common_inputs(ins, spec, aux, lq=lq, lk=k.shape[1], q_side_block=spec.block_q, rows_of=lambda i, bh: blk(i),
                   batch_of=b_of, q_full=False)
    grid = (nq, batch * heads)
    row_spec = lambda d: pl.BlockSpec((None, spec.block_q, None, d), q_map)  # noqa: E731
    lse_spec = pl.BlockSpec((None, None, spec.block_q), row_map)
    return ins, grid, row_spec, lse_spec, nq


def forward(q, k, v, aux, order, counts, spec: KernelSpec, interpret: bool):
    """Padded ``q`` ``[B, Lq_p, H, D]``, ``k``/``v`` ``[B, Lk_p, KH, D(v)]`` -> ``o``, ``lse``.

    ``o`` ``[B, Lq_p, H, D(v)]`` in q's dtype; ``lse`` ``[B, H, Lq_p]`` float32
    (natural log, ``-inf`` for rows that see no key).
    """
    ins, grid, row_spec, lse_spec, nq = _by_query_block(spec, aux, order, counts, q, k, v, (), ())
    batch, lq, heads, _ = q.shape
    outs = [("o", jax.ShapeDtypeStruct(q.shape[:3] + v.shape[-1:], q.dtype)),
            ("lse", jax.ShapeDtypeStruct((batch, heads, lq), jnp.float32))]
    kernel = functools.partial(_forward_kernel, num_q_blocks=nq)
    o, lse = _call(kernel, ins, outs, [row_spec(v.shape[-1]), lse_spec], grid, spec, interpret,
                   "flash_attention_fwd")
    return o, lse


def backward_dq(q, k, v, do, lse2, delta, aux, order, counts, spec: KernelSpec, interpret: bool):
    """``dq`` ``[B, Lq_p, H, D]`` from the saved ``lse2`` (base 2, +inf for empty rows) and ``delta``."""
    ins, grid, row_spec, _, nq = _by_query_block(
        spec, aux, order, counts, q, k, v, (("do", do),), (("lse2", lse2), ("delta", delta)))
    kernel = functools.partial(_dq_kernel, num_q_blocks=nq)
    (dq,) = _call(kernel, ins, [("dq", jax.ShapeDtypeStruct(q.shape, q.dtype))], [row_spec(q.shape[-1])],
                  grid, spec, interpret, "flash_attention_dq")
    return dq


def backward_dkdv(q, k, v, do, lse2, delta, aux, order_t, counts_t, spec: KernelSpec, interpret: bool):
    """``dk``, ``dv`` like ``k``, ``v``: one program per key block and kv head, over its query heads."""
    batch, lk, kv_heads, _ = k.shape
    lq, g = q.shape[1], spec.groups
    nk = lk // spec.block_k
    b_of = lambda j, bh: jax.lax.div(bh, kv_heads)  # noqa: E731
    kh_of = lambda j, bh: jax.lax.rem(bh, kv_heads)  # noqa: E731
    lb = b_of if spec.batched_lists else (lambda j, bh: 0)
    ins = _Inputs()
    tile = lambda d: (None, spec.block_k, None, d)  # noqa: E731
    tile_map = lambda j, bh: (b_of(j, bh), j, kh_of(j, bh), 0)  # noqa: E731
    ins.add("k", k, tile(k.shape[-1]), tile_map)
    ins.add("v", v, tile(v.shape[-1]), tile_map)
    group_map = lambda j, bh: (b_of(j, bh), 0, kh_of(j, bh), 0)  # noqa: E731
    ins.add("q", q, (None, lq, g, q.shape[-1]), group_map)
    ins.add("do", do, (None, lq, g, do.shape[-1]), group_map)
    ins.add("lse2", lse2, (None, g, lq), lambda j, bh: (b_of(j, bh), kh_of(j, bh), 0))
    ins.add("delta", delta, (None, g, lq), lambda j, bh: (b_of(j, bh), kh_of(j, bh), 0))
    ins.add("order_t", order_t, (None, None, order_t.shape[-1]), lambda j, bh: (lb(j, bh), j, 0))
    ins.add("counts_t", counts_t, (None, None, 2), lambda j, bh: (lb(j, bh), j, 0))
    _common_inputs(ins, spec, aux, lq=lq, lk=lk, q_side_block=None, rows_of=None, batch_of=b_of, q_full=True)
    outs = [("dk", jax.ShapeDtypeStruct(k.shape, k.dtype)), ("dv", jax.ShapeDtypeStruct(v.shape, v.dtype))]
    out_specs = [pl.BlockSpec(tile(k.shape[-1]), tile_map), pl.BlockSpec(tile(v.shape[-1]), tile_map)]
    dk, dv = _call(_dkdv_kernel, ins, outs, out_specs, (nk, batch * kv_heads), spec, interpret,
                   "flash_attention_dkdv")
    return dk, dv


__all__ = ["backward_dkdv", "backward_dq", "forward"]
