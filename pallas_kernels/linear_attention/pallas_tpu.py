"""Mosaic TPU Pallas kernels for chunked linear attention: the gated recurrence and the delta rule.

Same chunked algorithm as the Triton kernels (:mod:`.pallas_gpu`, :mod:`.pallas_gpu_delta`), laid
out for the TPU: one grid step per ``(batch, head, chunk)``, the chunk axis sequential
("arbitrary") with the ``[dk, dv]`` state (or its gradient) in a VMEM scratch, batch and head
parallel. Each step does all of one chunk's work on full tiles (MXU matmuls, bf16 or f32
operands, f32 accumulation):

- :func:`gated_forward`: ``o``, the final state and (for the backward) the state entering every
  chunk; :func:`gated_backward`: a reverse walk giving ``dq, dk, dv, dg`` and the initial state's
  gradient from those stored states and the carried ``dS``.
- :func:`delta_forward`, :func:`delta_backward`: the same for the delta rule through the WY/UT
  form (``T = (I + L)^-1`` by forward substitution on the chunk, in f32).

Arrays are head-major here, ``[B, H, T, d]`` (the api transposes), so every block's last two dims
are ``(chunk, d)`` with d the full head dim. Cumulative sums are matmuls with triangular ones
(Mosaic has no cumsum); GLA's diagonal sub-chunks form their pairwise decays as
``[sub, sub, dk]`` tiles, its other blocks factor through the sub-chunk's reference gate as on
the GPU, so no factor exceeds 1; a chunk whose cumulative gates stay above ``-log_space`` nats
takes the chunk-start form instead (one masked matmul, as on the GPU: :mod:`.pallas_gpu`), chosen
per grid step at run time. Scalar gates ``g`` arrive as ``[B, H, T, 1]`` columns plus the
same values as ``[B, H, N, 1, C]`` rows; segments as ``[B, T, 1]`` and ``[B, N, 1, C]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.linear_attention import tiles
from pallas_kernels.linear_attention.tiles import F32, cols, dot, inverse_unit_lower, rows

NEG_INF = float("-inf")


def _cumsum(x):
    """Inclusive cumulative sum over axis 0 of ``[C, d]`` float32, as a matmul."""
    c = x.shape[0]
    return dot((rows(c) >= cols(c)).astype(F32), x)


def _rev_cumsum(x):
    c = x.shape[0]
    return dot((rows(c) <= cols(c)).astype(F32), x)


def _masks(segc_ref, segr_ref):
    """:class:`.tiles.Masks` from the column ``[C, 1]`` and row ``[1, C]`` segment tiles."""
    if segc_ref is None:
        return tiles.NO_MASKS
    col, row = segc_ref[...], segr_ref[...]
    last = jnp.max(row)
    return tiles.Masks(col == 0, col == last, last == 0, col == row)


def _gate_cumsums(g_ref, grow_ref, scalar):
    """``b`` (``[C, 1]`` or ``[C, dk]``), its last row and, for scalar gates, ``b`` as a row ``[1, C]``."""
    b = _cumsum(g_ref[...].astype(F32))
    b_last = b[-1:, :]
    if scalar:  # the same cumulative sum as a row: g_row @ triu(ones)
        c = b.shape[0]
        b_row = dot(grow_ref[...].astype(F32), (rows(c) <= cols(c)).astype(F32))
    else:
        b_row = None
    return b, b_last, b_row


def _state_decay(b_last, scalar):
    """``exp(b_last)`` to scale the ``[dk, dv]`` state: ``[1, 1]`` or the column ``[dk, 1]``."""
    return jnp.exp(b_last) if scalar else jnp.exp(b_last).T


def _vector_blocks(q, k, b, sub):
    """Per sub-chunk ``a``: ``(qa, ka, ba, ref, rel)``; ``rel`` ``[s, s, dk]`` = ``exp(b_i - b_j)``, j <= i."""
    s = sub
    tri = lax.broadcasted_iota(jnp.int32, (s, s, 1), 0) >= lax.broadcasted_iota(jnp.int32, (s, s, 1), 1)
    out = []
    for a in range(q.shape[0] // s):
        qa, ka, ba = (x[a * s:(a + 1) * s] for x in (q, k, b))
        ref = b[a * s - 1:a * s] if a else None
        rel = jnp.exp(jnp.where(tri, ba[:, None, :] - ba[None, :, :], NEG_INF))
        out.append((qa, ka, ba, ref, rel))
    return out


def _select(s, c, a):
    """``[s, C]`` 0/1: row t picks column ``a * s + t`` (embeds / extracts a diagonal block by matmul)."""
    return (cols(c) == rows(s) + a * s).astype(F32)


def _scores(q, k, b, b_row, m, scalar, sub, mma, log_space):
    """Intra-chunk scores ``A`` ``[C, C]`` f32 (j <= i, same segment)."""
    c = q.shape[0]
    causal = tiles.both(rows(c) >= cols(c), m.same)
    if scalar:
        return dot(q, k, tb=True) * jnp.exp(jnp.where(causal, b - b_row, NEG_INF))
    qf, kf = q.astype(F32), k.astype(F32)

    def chunk_start_form():
        return jnp.where(causal, tiles.chunk_start_scores(qf, kf, b, mma), 0.0)

    def sub_chunk_form():
        blocks = []
        for a, (qa, ka, ba, ref, rel) in enumerate(_vector_blocks(qf, kf, b, sub)):
            diag = jnp.sum(qa[:, None, :] * ka[None, :, :] * rel, axis=-1)
            block = dot(diag, _select(sub, c, a))
            if ref is not None:
                khat = kf * jnp.exp(jnp.where(rows(c) < a * sub, ref - b, NEG_INF))
                block += dot((qa * jnp.exp(ba - ref)).astype(mma), khat.astype(mma), tb=True)
            blocks.append(block)
        return tiles.where(m.same, jnp.concatenate(blocks, axis=0))

    return tiles.by_chunk_start(b, log_space, chunk_start_form, sub_chunk_form)


def _vector_intra_grads(qf, kf, b, d_scores, sub, mma, log_space):
    """``(dq, dk)`` through the vector-gated intra-chunk scores; ``d_scores`` is dL/dA (masked)."""
    c = qf.shape[0]

    def chunk_start_form():
        return tiles.chunk_start_grads(qf, kf, b, d_scores, mma)

    def sub_chunk_form():
        dq_blocks, dk_blocks = [], []
        dk = jnp.zeros_like(kf)
        for a, (qa, ka, ba, ref, rel) in enumerate(_vector_blocks(qf, kf, b, sub)):
            da = d_scores[a * sub:(a + 1) * sub]
            dd = dot(da, _select(sub, c, a), tb=True)[:, :, None]  # [s, s, 1]: the diagonal block of dA
            dqa = jnp.sum(dd * ka[None, :, :] * rel, axis=1)
            dk_blocks.append(jnp.sum(dd * qa[:, None, :] * rel, axis=0))
            if ref is not None:
                eq = jnp.exp(ba - ref)
                ek = jnp.exp(jnp.where(rows(c) < a * sub, ref - b, NEG_INF))
                dqa += eq * dot(da.astype(mma), (kf * ek).astype(mma))
                dk += ek * dot(da.astype(mma), (qa * eq).astype(mma), ta=True)
            dq_blocks.append(dqa)
        return jnp.concatenate(dq_blocks, axis=0), dk + jnp.concatenate(dk_blocks, axis=0)

    return tiles.by_chunk_start(b, log_space, chunk_start_form, sub_chunk_form)


# --------------------------------------------------------------------------- gated


def _gated_fwd_kernel(*refs, scale, sub, scalar, has_seg, num_chunks, write_h, log_space):
    q_ref, k_ref, v_ref, g_ref, *refs = refs
    grow_ref = refs.pop(0) if scalar else None
    segc_ref, segr_ref = (refs.pop(0), refs.pop(0)) if has_seg else (None, None)
    h0_ref, o_ref, final_ref, *refs = refs
    h_ref = refs.pop(0) if write_h else None
    (s_ref,) = refs
    n = pl.program_id(2)

    @pl.when(n == 0)
    def _():
        s_ref[...] = h0_ref[...].astype(F32)

    s = s_ref[...]
    if write_h:
        h_ref[...] = s.astype(h_ref.dtype)
    q, k, v = q_ref[...], k_ref[...], v_ref[...]
    mma = v.dtype
    m = _masks(segc_ref, segr_ref)
    b, b_last, b_row = _gate_cumsums(g_ref, grow_ref, scalar)
    scores = _scores(q, k, b, b_row, m, scalar, sub, mma, log_space)
    qe = tiles.where(m.first, q.astype(F32) * jnp.exp(b))
    o = dot(scores.astype(mma), v) + dot(qe.astype(mma), s.astype(mma))
    o_ref[...] = (scale * o).astype(o_ref.dtype)
    kd = tiles.where(m.to_last, k.astype(F32) * jnp.exp(b_last - b))
    s = tiles.where(m.keep, _state_decay(b_last, scalar) * s) + dot(kd.astype(mma), v, ta=True)
    s_ref[...] = s

    @pl.when(n == num_chunks - 1)
    def _():
        final_ref[...] = s


def _specs(chunk, reverse, num_chunks, *dims):
    """Chunk BlockSpecs of head-major arrays on a (b, h, n) grid; ``"grow"`` / ``"segc"`` / ``"segr"`` /
    ``"state"`` / ``"states"`` name the special layouts (module docstring)."""
    def nn(n):
        return num_chunks - 1 - n if reverse else n

    out = []
    for d in dims:
        if d == "grow":
            out.append(pl.BlockSpec((None, None, None, 1, chunk), lambda b, h, n: (b, h, nn(n), 0, 0)))
        elif d == "segc":
            out.append(pl.BlockSpec((None, chunk, 1), lambda b, h, n: (b, nn(n), 0)))
        elif d == "segr":
            out.append(pl.BlockSpec((None, None, 1, chunk), lambda b, h, n: (b, nn(n), 0, 0)))
        elif isinstance(d, tuple) and d[0] == "state":
            out.append(pl.BlockSpec((None, None) + d[1:], lambda b, h, n: (b, h, 0, 0)))
        elif isinstance(d, tuple) and d[0] == "states":
            out.append(pl.BlockSpec((None, None, None) + d[1:], lambda b, h, n: (b, h, nn(n), 0, 0)))
        else:
            out.append(pl.BlockSpec((None, None, chunk, d), lambda b, h, n: (b, h, nn(n), 0)))
    return out


def _params():
    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))


def _gate_layouts(g, chunk):
    """Head-major gate (``[B, H, T, dk]`` or scalar ``[B, H, T, 1]``) and, for scalar gates, its rows."""
    if g.shape[-1] != 1:
        return g, None
    batch, heads, time, _ = g.shape
    return g, g.reshape(batch, heads, time // chunk, 1, chunk)


def _seg_layouts(seg, chunk):
    if seg is None:
        return ()
    batch, time = seg.shape
    return seg[..., None], seg.reshape(batch, time // chunk, 1, chunk)


def gated_forward(q, k, v, g, seg, h0, *, scale, chunk, sub, write_h, interpret, log_space=0.0):
    """Head-major ``q, k`` ``[B, H, T, dk]``, ``v`` ``[B, H, T, dv]``, ``g`` ``[B, H, T, dk or 1]``,
    ``seg`` ``[B, T]`` or None, ``h0`` ``[B, H, dk, dv]`` f32 -> ``o`` (v's dtype), final state
    and, with ``write_h``, the states entering the chunks ``[B, H, N, dk, dv]`` (v's dtype)."""
    batch, heads, time, dk = q.shape
    dv = v.shape[-1]
    n = time // chunk
    scalar = g.shape[-1] == 1
    g, grow = _gate_layouts(g, chunk)
    segs = _seg_layouts(seg, chunk)
    dims = [dk, dk, dv, g.shape[-1]] + (["grow"] if scalar else []) + (["segc", "segr"] if segs else [])
    args = [q, k, v, g] + ([grow] if scalar else []) + list(segs) + [h0]
    out_shape = [jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(h0.shape, F32)]
    out_dims = [dv, ("state", dk, dv)]
    if write_h:
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, n, dk, dv), v.dtype))
        out_dims.append(("states", dk, dv))
    out = pl.pallas_call(
        functools.partial(_gated_fwd_kernel, scale=scale, sub=sub, scalar=scalar, has_seg=bool(segs),
                          num_chunks=n, write_h=write_h, log_space=float(log_space)),
        out_shape=tuple(out_shape),
        grid=(batch, heads, n),
        in_specs=_specs(chunk, False, n, *dims, ("state", dk, dv)),
        out_specs=tuple(_specs(chunk, False, n, *out_dims)),
        scratch_shapes=[pltpu.VMEM((dk, dv), F32)],
        interpret=interpret,
        compiler_params=_params(),
        name="gated_forward_tpu",
    )(*args)
    return out if write_h else out + (None,)


def _gated_bwd_kernel(*refs, scale, sub, scalar, has_seg, num_chunks, log_space):
    q_ref, k_ref, v_ref, g_ref, *refs = refs
    grow_ref = refs.pop(0) if scalar else None
    segc_ref, segr_ref = (refs.pop(0), refs.pop(0)) if has_seg else (None, None)
    h_ref, do_ref, dfinal_ref, dq_ref, dk_ref, dv_ref, dg_ref, dh0_ref, ds_ref = refs
    step = pl.program_id(2)

    @pl.when(step == 0)
    def _():
        ds_ref[...] = dfinal_ref[...].astype(F32)

    ds = ds_ref[...]  # gradient of the state leaving this chunk
    q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
    h = h_ref[...]
    mma = v.dtype
    c = q.shape[0]
    m = _masks(segc_ref, segr_ref)
    b, b_last, b_row = _gate_cumsums(g_ref, grow_ref, scalar)
    qf, kf = q.astype(F32), k.astype(F32)
    scores = _scores(q, k, b, b_row, m, scalar, sub, mma, log_space)
    key_decay = tiles.where(m.to_last, jnp.exp(b_last - b))
    dv_ref[...] = (scale * dot(scores.astype(mma), do, ta=True)
                   + dot((kf * key_decay).astype(mma), ds.astype(mma))).astype(dv_ref.dtype)
    causal = tiles.both(rows(c) >= cols(c), m.same)
    d_scores = jnp.where(causal, scale * dot(do, v, tb=True), 0.0)
    read = tiles.where(m.first, jnp.exp(b))
    dq = read * (scale * dot(do, h, tb=True))
    dk = key_decay * dot(v, ds.astype(mma), tb=True)
    hds = dot(jnp.ones((1, h.shape[1]), F32), h.astype(F32) * ds, tb=True)  # [1, dk]: rowsum(h * dS)
    extra = jnp.sum(kf * dk, axis=0, keepdims=True) + tiles.where(m.keep, jnp.exp(b_last) * hds)
    if scalar:
        d_scores = d_scores * jnp.exp(jnp.where(causal, b - b_row, NEG_INF))
        dq += dot(d_scores.astype(mma), k)
        dk += dot(d_scores.astype(mma), q, ta=True)
        x = jnp.sum(qf * dq - kf * dk, axis=1, keepdims=True)
        dg = _rev_cumsum(x) + jnp.sum(extra, axis=1, keepdims=True)
    else:
        dq_intra, dk_intra = _vector_intra_grads(qf, kf, b, d_scores, sub, mma, log_space)
        dq += dq_intra
        dk += dk_intra
        dg = _rev_cumsum(qf * dq - kf * dk) + extra
    dq_ref[...] = dq.astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dg_ref[...] = dg.astype(dg_ref.dtype)
    qe = tiles.where(m.first, qf * jnp.exp(b))
    ds = tiles.where(m.keep, _state_decay(b_last, scalar) * ds) + scale * dot(qe.astype(mma), do, ta=True)
    ds_ref[...] = ds

    @pl.when(step == num_chunks - 1)
    def _():
        dh0_ref[...] = ds


def gated_backward(q, k, v, g, seg, h, do, dfinal, *, scale, chunk, sub, g_dtype, interpret, log_space=0.0):
    """Reverse walk: ``dq, dk, dv`` (their dtypes), ``dg`` (``g_dtype``, g's shape) and ``dh0``.

    ``h`` ``[B, H, N, dk, dv]`` from :func:`gated_forward`; other arrays as there; ``do`` like v.
    """
    batch, heads, time, dk = q.shape
    dv = v.shape[-1]
    n = time // chunk
    scalar = g.shape[-1] == 1
    g, grow = _gate_layouts(g, chunk)
    segs = _seg_layouts(seg, chunk)
    dims = [dk, dk, dv, g.shape[-1]] + (["grow"] if scalar else []) + (["segc", "segr"] if segs else [])
    dims += [("states", dk, dv), dv, ("state", dk, dv)]
    args = [q, k, v, g] + ([grow] if scalar else []) + list(segs) + [h, do, dfinal]
    return pl.pallas_call(
        functools.partial(_gated_bwd_kernel, scale=scale, sub=sub, scalar=scalar, has_seg=bool(segs),
                          num_chunks=n, log_space=float(log_space)),
        out_shape=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                   jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(g.shape, g_dtype),
                   jax.ShapeDtypeStruct(dfinal.shape, F32)),
        grid=(batch, heads, n),
        in_specs=_specs(chunk, True, n, *dims),
        out_specs=tuple(_specs(chunk, True, n, dk, dk, dv, g.shape[-1], ("state", dk, dv))),
        scratch_shapes=[pltpu.VMEM((dk, dv), F32)],
        interpret=interpret,
        compiler_params=_params(),
        name="gated_backward_tpu",
    )(*args)


# --------------------------------------------------------------------------- delta rule


def _wy(k, v, beta, m, mma):
    """``T`` (f32), ``U``, ``W`` (f32) and ``K K^T`` of one chunk; ``beta`` ``[C, 1]`` f32."""
    c = k.shape[0]
    kk = dot(k, k, tb=True)
    strict = tiles.both(rows(c) > cols(c), m.same)
    t = inverse_unit_lower(jnp.where(strict, beta * kk, 0.0))
    u = dot(t.astype(mma), (beta * v.astype(F32)).astype(mma))
    w = dot(t.astype(mma), tiles.where(m.first, beta * k.astype(F32)).astype(mma))
    return t, u, w, kk


def _delta_fwd_kernel(*refs, scale, has_seg, num_chunks, write_h):
    q_ref, k_ref, v_ref, beta_ref, *refs = refs
    segc_ref, segr_ref = (refs.pop(0), refs.pop(0)) if has_seg else (None, None)
    h0_ref, o_ref, final_ref, *refs = refs
    h_ref = refs.pop(0) if write_h else None
    (s_ref,) = refs
    n = pl.program_id(2)

    @pl.when(n == 0)
    def _():
        s_ref[...] = h0_ref[...].astype(F32)

    s = s_ref[...]
    if write_h:
        h_ref[...] = s.astype(h_ref.dtype)
    q, k, v = q_ref[...], k_ref[...], v_ref[...]
    mma = k.dtype
    c = q.shape[0]
    m = _masks(segc_ref, segr_ref)
    _, u, w, _ = _wy(k, v, beta_ref[...].astype(F32), m, mma)
    d = (u - dot(w.astype(mma), s.astype(mma))).astype(mma)
    p = jnp.where(tiles.both(rows(c) >= cols(c), m.same), dot(q, k, tb=True), 0.0)
    o = dot(tiles.where(m.first, q), s.astype(mma)) + dot(p.astype(mma), d)
    o_ref[...] = (scale * o).astype(o_ref.dtype)
    s = tiles.where(m.keep, s) + dot(tiles.where(m.to_last, k), d, ta=True)
    s_ref[...] = s

    @pl.when(n == num_chunks - 1)
    def _():
        final_ref[...] = s


def delta_forward(q, k, v, beta, seg, h0, *, scale, chunk, write_h, interpret):
    """Head-major delta rule: ``beta`` ``[B, H, T, 1]``; otherwise as :func:`gated_forward`."""
    batch, heads, time, dk = q.shape
    dv = v.shape[-1]
    n = time // chunk
    segs = _seg_layouts(seg, chunk)
    dims = [dk, dk, dv, 1] + (["segc", "segr"] if segs else []) + [("state", dk, dv)]
    out_shape = [jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(h0.shape, F32)]
    out_dims = [dv, ("state", dk, dv)]
    if write_h:
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, n, dk, dv), k.dtype))
        out_dims.append(("states", dk, dv))
    out = pl.pallas_call(
        functools.partial(_delta_fwd_kernel, scale=scale, has_seg=bool(segs), num_chunks=n, write_h=write_h),
        out_shape=tuple(out_shape),
        grid=(batch, heads, n),
        in_specs=_specs(chunk, False, n, *dims),
        out_specs=tuple(_specs(chunk, False, n, *out_dims)),
        scratch_shapes=[pltpu.VMEM((dk, dv), F32)],
        interpret=interpret,
        compiler_params=_params(),
        name="delta_forward_tpu",
    )(q, k, v, beta, *segs, h0)
    return out if write_h else out + (None,)


def _delta_bwd_kernel(*refs, scale, has_seg, num_chunks):
    q_ref, k_ref, v_ref, beta_ref, *refs = refs
    segc_ref, segr_ref = (refs.pop(0), refs.pop(0)) if has_seg else (None, None)
    h_ref, do_ref, dfinal_ref, dq_ref, dk_ref, dv_ref, db_ref, dh0_ref, ds_ref = refs
    step = pl.program_id(2)

    @pl.when(step == 0)
    def _():
        ds_ref[...] = dfinal_ref[...].astype(F32)

    ds = ds_ref[...]
    q, k, v, do, h = q_ref[...], k_ref[...], v_ref[...], do_ref[...], h_ref[...]
    beta = beta_ref[...].astype(F32)
    mma = k.dtype
    c = q.shape[0]
    m = _masks(segc_ref, segr_ref)
    t, u, w, kk = _wy(k, v, beta, m, mma)
    d = u - dot(w.astype(mma), h)
    causal = tiles.both(rows(c) >= cols(c), m.same)
    p = jnp.where(causal, dot(q, k, tb=True), 0.0)
    k_last = tiles.where(m.to_last, k)
    dd = scale * dot(p.astype(mma), do, ta=True) + dot(k_last, ds.astype(mma))  # dL/dD
    dp = jnp.where(causal, scale * dot(do, d.astype(mma), tb=True), 0.0).astype(mma)
    dq = tiles.where(m.first, scale * dot(do, h, tb=True)) + dot(dp, k)
    dk = dot(dp, q, ta=True) + tiles.where(m.to_last, dot(d.astype(mma), ds.astype(mma), tb=True))
    dru = dot(t.astype(mma), dd.astype(mma), ta=True)  # T^T dD
    drw = dot(t.astype(mma), (-dot(dd.astype(mma), h, tb=True)).astype(mma), ta=True)  # T^T dW
    strict = tiles.both(rows(c) > cols(c), m.same)
    dl = jnp.where(strict, -(dot(dru.astype(mma), u.astype(mma), tb=True)
                             + dot(drw.astype(mma), w.astype(mma), tb=True)), 0.0)
    g = (beta * dl).astype(mma)
    dk += tiles.where(m.first, beta * drw) + dot(g, k) + dot(g, k, ta=True)
    kf = k.astype(F32)
    dbeta = (jnp.sum(v.astype(F32) * dru, axis=1, keepdims=True)
             + tiles.where(m.first, jnp.sum(kf * drw, axis=1, keepdims=True))
             + jnp.sum(dl * kk, axis=1, keepdims=True))
    dq_ref[...] = dq.astype(dq_ref.dtype)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = (beta * dru).astype(dv_ref.dtype)
    db_ref[...] = dbeta.astype(db_ref.dtype)
    ds = (tiles.where(m.keep, ds) + scale * dot(tiles.where(m.first, q), do, ta=True)
          - dot(w.astype(mma), dd.astype(mma), ta=True))
    ds_ref[...] = ds

    @pl.when(step == num_chunks - 1)
    def _():
        dh0_ref[...] = ds


def delta_backward(q, k, v, beta, seg, h, do, dfinal, *, scale, chunk, beta_dtype, interpret):
    """Reverse walk of the delta rule: ``dq, dk, dv, dbeta`` (``[B, H, T, 1]``) and ``dh0``."""
    batch, heads, time, dk = q.shape
    dv = v.shape[-1]
    n = time // chunk
    segs = _seg_layouts(seg, chunk)
    dims = [dk, dk, dv, 1] + (["segc", "segr"] if segs else []) + [("states", dk, dv), dv, ("state", dk, dv)]
    return pl.pallas_call(
        functools.partial(_delta_bwd_kernel, scale=scale, has_seg=bool(segs), num_chunks=n),
        out_shape=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                   jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(beta.shape, beta_dtype),
                   jax.ShapeDtypeStruct(dfinal.shape, F32)),
        grid=(batch, heads, n),
        in_specs=_specs(chunk, True, n, *dims),
        out_specs=tuple(_specs(chunk, True, n, dk, dk, dv, 1, ("state", dk, dv))),
        scratch_shapes=[pltpu.VMEM((dk, dv), F32)],
        interpret=interpret,
        compiler_params=_params(),
        name="delta_backward_tpu",
    )(q, k, v, beta, *segs, h, do, dfinal)
