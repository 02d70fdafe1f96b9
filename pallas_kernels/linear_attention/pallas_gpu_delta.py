"""Triton-backend Pallas kernels for the delta rule ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``.

Chunked through the WY/UT representation (chunk ``C``, state ``h_n`` entering
chunk n; masks as in :mod:`.tiles`):

    T = (I + L)^-1,  L = tril(diag(beta) K K^T, -1)   (same-segment pairs only)
    U = T diag(beta) V,   W = T diag(beta * first) K
    D = U - W h_n                                      ("new values")
    o = scale * ((Q * first) h_n + P D),   P = tril(Q K^T) (same segment)
    h_{n+1} = keep * h_n + (K * to_last)^T D

``T`` is formed in two halves of ``C / 2`` rows: each diagonal block of
``I + L`` is inverted by forward substitution (all in registers; with the
table's ``delta_inverse_blocks`` > 1, on smaller diagonal blocks solved
together and merged by matmuls), and ``T_10 = -T_11 L_10 T_00`` by two matmuls.

Kernels: :func:`wy` (chunk-parallel: U, W; for the backward also T and
``P^T dO``; ``T`` solved in it or read from :func:`inverse`'s own kernel), :func:`state_fwd` (sequential: ``h_n``, ``D`` and the final
state; one program per ``(batch, head, dv tile)`` because ``W h`` contracts
over all of dk), :func:`output` (chunk-parallel), :func:`state_bwd`
(sequential, reverse: ``dh_n`` and ``dD``) and :func:`grads` (chunk-parallel:
``dq, dk, dv, dbeta``).

Backward of the solve without forming ``dT``: with ``dU = dD`` and
``dW = -dD h^T``, ``dR_U = T^T dU``, ``dR_W = T^T dW`` and
``dL = -(dR_U U^T + dR_W W^T)`` on L's pattern (from ``dM = -T^T dT T^T``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels.linear_attention import tiles
from pallas_kernels.linear_attention.pallas_gpu import _chunk_rows, _chunk_specs, _params, _seg_spec, _state_spec
from pallas_kernels.linear_attention.tiles import F32, cols, dot, inverse_unit_lower, rows


def _mdot(a, b, mma, **kw):
    return dot(a.astype(mma), b.astype(mma), **kw)


class _Halves:
    """Row halves of a chunk and their segment masks."""

    def __init__(self, c, seg_ref):
        self.h = h = c // 2
        self.r = (pl.ds(0, h), pl.ds(h, h))
        self.full = tiles.masks(seg_ref[...] if seg_ref is not None else None)
        if seg_ref is None:
            self.seg = (None, None)
            self.last = None
        else:
            self.seg = tuple(seg_ref[r] for r in self.r)
            self.last = jnp.max(seg_ref[...])

    def first(self, a):
        return None if self.seg[a] is None else (self.seg[a] == 0)[:, None]

    def to_last(self, a):
        return None if self.seg[a] is None else (self.seg[a] == self.last)[:, None]

    def pattern(self, a, b):
        """L's pattern on block (a, b): strictly lower on the diagonal, same segment."""
        same = None if self.seg[a] is None else self.seg[a][:, None] == self.seg[b][None, :]
        return tiles.both(rows(self.h) > cols(self.h), same) if a == b else same


def _solve_blocks(k_ref, beta, halves, *, dk, bk, mma, inverse_blocks=1):
    """``T``'s blocks ``(T_00, T_10, T_11)`` ``[C/2, C/2]`` float32 and ``kk`` blocks ``{(a, b): k_a k_b^T}``
    (``inverse_blocks``: :func:`~pallas_kernels.linear_attention.tiles.inverse_unit_lower`'s ``blocks``)."""
    kk = {ab: sum(_mdot(k_ref[halves.r[ab[0]], pl.ds(kb * bk, bk)], k_ref[halves.r[ab[1]], pl.ds(kb * bk, bk)],
                        mma, tb=True) for kb in range(dk // bk))
          for ab in ((0, 0), (1, 0), (1, 1))}
    lower = {ab: tiles.where(halves.pattern(*ab), beta[ab[0]][:, None] * kk[ab]) for ab in kk}
    t00 = inverse_unit_lower(lower[0, 0], inverse_blocks)
    t11 = inverse_unit_lower(lower[1, 1], inverse_blocks)
    t10 = -dot(t11, dot(lower[1, 0], t00))
    return (t00, t10, t11), kk


def _lower_apply(t, x0, x1, mma):
    """``T [x0; x1]`` for the block lower-triangular ``T = (T_00, T_10, T_11)``: two row halves."""
    t00, t10, t11 = t
    return _mdot(t00, x0, mma), _mdot(t10, x0, mma) + _mdot(t11, x1, mma)


def _upper_apply(t, x0, x1, mma):
    """``T^T [x0; x1]``: two row halves."""
    t00, t10, t11 = t
    return _mdot(t00, x0, mma, ta=True) + _mdot(t10, x1, mma, ta=True), _mdot(t11, x1, mma, ta=True)


# --------------------------------------------------------------------------- chunk-parallel: U, W (T, P^T dO)


def _write_t(t_ref, t, h):
    """``T``'s blocks into the chunk's ``[C, C]`` tile (zeros above the diagonal blocks)."""
    r = (pl.ds(0, h), pl.ds(h, h))
    t_ref[r[0], r[0]] = t[0]
    t_ref[r[0], r[1]] = jnp.zeros((h, h), F32)
    t_ref[r[1], r[0]] = t[1]
    t_ref[r[1], r[1]] = t[2]


def _read_t(t_ref, h):
    """``(T_00, T_10, T_11)`` from the chunk's ``[C, C]`` tile."""
    r = (pl.ds(0, h), pl.ds(h, h))
    return t_ref[r[0], r[0]], t_ref[r[1], r[0]], t_ref[r[1], r[1]]


def _inverse_kernel(*refs, bk, has_seg, inverse_blocks):
    k_ref, beta_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    (t_ref,) = refs
    c, dk = k_ref.shape
    hv = _Halves(c, seg_ref)
    beta = tuple(beta_ref[r].astype(F32) for r in hv.r)
    t, _ = _solve_blocks(k_ref, beta, hv, dk=dk, bk=bk, mma=k_ref.dtype, inverse_blocks=inverse_blocks)
    _write_t(t_ref, t, hv.h)


def _wy_kernel(*refs, bk, bv, has_seg, backward, t_in, write_t, scale, inverse_blocks):
    k_ref, v_ref, beta_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    if backward:
        q_ref, do_ref, *refs = refs
    t_in_ref = refs.pop(0) if t_in else None
    u_ref, w_ref, *refs = refs
    t_ref = refs.pop(0) if write_t else None
    dvl_ref = refs.pop(0) if backward else None
    c, dk = k_ref.shape
    dv = v_ref.shape[-1]
    mma = k_ref.dtype
    hv = _Halves(c, seg_ref)
    beta = tuple(beta_ref[r].astype(F32) for r in hv.r)
    if t_in:
        t = _read_t(t_in_ref, hv.h)
    else:
        t, _ = _solve_blocks(k_ref, beta, hv, dk=dk, bk=bk, mma=mma, inverse_blocks=inverse_blocks)
    for vb in range(dv // bv):
        vs = pl.ds(vb * bv, bv)
        x = [beta[a][:, None] * v_ref[hv.r[a], vs].astype(F32) for a in (0, 1)]
        for a, ua in enumerate(_lower_apply(t, *x, mma)):
            u_ref[hv.r[a], vs] = ua.astype(u_ref.dtype)
    for kb in range(dk // bk):
        cs = pl.ds(kb * bk, bk)
        x = [tiles.where(hv.first(a), beta[a][:, None] * k_ref[hv.r[a], cs].astype(F32)) for a in (0, 1)]
        for a, wa in enumerate(_lower_apply(t, *x, mma)):
            w_ref[hv.r[a], cs] = wa.astype(w_ref.dtype)
    if write_t:
        _write_t(t_ref, t, hv.h)
    if backward:
        _write_scores_do(q_ref, k_ref, do_ref, dvl_ref, hv.full.same, bk=bk, bv=bv, scale=scale)


def _write_scores_do(q_ref, k_ref, do_ref, dvl_ref, same, *, bk, bv, scale):
    """``dvl = scale * P^T dO`` of one chunk (``P``: :func:`_causal_scores`), float32."""
    dk, dv = k_ref.shape[-1], do_ref.shape[-1]
    p = _causal_scores(q_ref, k_ref, same, dk=dk, bk=bk).astype(k_ref.dtype)
    for vb in range(dv // bv):
        vs = pl.ds(vb * bv, bv)
        dvl_ref[:, vs] = scale * dot(p, do_ref[:, vs], ta=True)


def _scores_do_kernel(*refs, bk, bv, has_seg, scale):
    q_ref, k_ref, do_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    (dvl_ref,) = refs
    same = tiles.masks(seg_ref[...] if seg_ref is not None else None).same
    _write_scores_do(q_ref, k_ref, do_ref, dvl_ref, same, bk=bk, bv=bv, scale=scale)


def _causal_scores(q_ref, k_ref, same, *, dk, bk):
    """``P = Q K^T`` on causal (inclusive) same-segment pairs, float32 ``[C, C]``."""
    c = q_ref.shape[0]
    p = sum(dot(q_ref[:, pl.ds(kb * bk, bk)], k_ref[:, pl.ds(kb * bk, bk)], tb=True) for kb in range(dk // bk))
    return jnp.where(tiles.both(rows(c) >= cols(c), same), p, 0.0)


def _chunk_inputs(chunk, arrays, seg):
    """``(in_specs, args)`` for per-chunk blocks of ``arrays`` (``[B, T, H, d]`` or ``[B, T, H]``), then
    ``seg``'s chunk when there are segments."""
    in_specs = _chunk_specs(chunk, *(a.shape[-1] if a.ndim == 4 else None for a in arrays))
    args = list(arrays)
    if seg is not None:
        in_specs.append(_seg_spec(chunk))
        args.append(seg)
    return in_specs, args


def inverse(k, beta, seg, *, chunk, bk, warps, interpret, inverse_blocks=1):
    """``T = (I + L)^-1`` ``[B, T, H, chunk]`` float32 of every chunk (row i of chunk n at token n*C+i),
    in a kernel of its own: the forward substitution is a chain of small reductions, which a program of
    one or two warps runs without cross-warp barriers, several programs to an SM (the table's
    ``delta_inverse_warps``)."""
    batch, time, heads, _ = k.shape
    in_specs, args = _chunk_inputs(chunk, (k, beta), seg)
    return pl.pallas_call(
        functools.partial(_inverse_kernel, bk=bk, has_seg=seg is not None, inverse_blocks=inverse_blocks),
        out_shape=jax.ShapeDtypeStruct((batch, time, heads, chunk), F32),
        grid=(batch, time // chunk, heads),
        in_specs=in_specs,
        out_specs=_chunk_specs(chunk, chunk)[0],
        interpret=interpret,
        compiler_params=_params(warps),
        name="delta_inverse",
    )(*args)


def wy(k, v, beta, seg, *, chunk, bk, bv, warps, interpret, q=None, do=None, scale=1.0, inverse_blocks=1,
       write_t=False, tmat=None):
    """``U`` ``[B, T, H, dv]`` and ``W`` ``[B, T, H, dk]`` (k's dtype) of every chunk, then ``T``
    ``[B, T, H, chunk]`` float32 (row i of chunk n at token n*C+i) with ``write_t`` or in the backward
    form, then (backward form) ``P^T dO * scale`` ``[B, T, H, dv]`` float32.

    ``k`` ``[B, T, H, dk]``, ``v`` ``[B, T, H, dv]``, ``beta`` ``[B, T, H]``,
    ``seg`` ``[B, T]`` or None; ``q`` and ``do`` select the backward form.
    ``tmat`` (from :func:`inverse`): the chunks' ``T``, read instead of solved (and not returned).
    """
    batch, time, heads, dk = k.shape
    dv = v.shape[-1]
    backward = q is not None
    t_in = tmat is not None
    write_t = (write_t or backward) and not t_in  # the backward form returns T unless it was given
    in_specs, args = _chunk_inputs(chunk, (k, v, beta), seg)
    out_shape = [jax.ShapeDtypeStruct(v.shape, k.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype)]
    out_specs = _chunk_specs(chunk, dv, dk)
    if backward:
        in_specs += _chunk_specs(chunk, dk, dv)
        args += [q, do]
    if t_in:
        in_specs += _chunk_specs(chunk, chunk)
        args.append(tmat)
    if write_t:
        out_shape.append(jax.ShapeDtypeStruct((batch, time, heads, chunk), F32))
        out_specs += _chunk_specs(chunk, chunk)
    if backward:
        out_shape.append(jax.ShapeDtypeStruct(v.shape, F32))
        out_specs += _chunk_specs(chunk, dv)
    return pl.pallas_call(
        functools.partial(_wy_kernel, bk=bk, bv=bv, has_seg=seg is not None, backward=backward, t_in=t_in,
                          write_t=write_t, scale=scale, inverse_blocks=inverse_blocks),
        out_shape=tuple(out_shape),
        grid=(batch, time // chunk, heads),
        in_specs=in_specs,
        out_specs=tuple(out_specs),
        interpret=interpret,
        compiler_params=_params(warps),
        name="delta_wy_bwd" if backward else "delta_wy",
    )(*args)


def scores_do(q, k, do, seg, *, chunk, bk, bv, warps, interpret, scale):
    """``scale * P^T dO`` ``[B, T, H, dv]`` float32 of every chunk: the one part of :func:`wy`'s backward
    form a backward from kept WY factors (``delta_save``) still needs."""
    batch, time, heads, _ = k.shape
    in_specs, args = _chunk_inputs(chunk, (q, k, do), seg)
    return pl.pallas_call(
        functools.partial(_scores_do_kernel, bk=bk, bv=bv, has_seg=seg is not None, scale=scale),
        out_shape=jax.ShapeDtypeStruct(do.shape, F32),
        grid=(batch, time // chunk, heads),
        in_specs=in_specs,
        out_specs=_chunk_specs(chunk, do.shape[-1])[0],
        interpret=interpret,
        compiler_params=_params(warps),
        name="delta_scores_do",
    )(*args)


# --------------------------------------------------------------------------- sequential passes


def _state_fwd_kernel(*refs, chunk, num_chunks, has_seg):
    w_ref, u_ref, k_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    h0_ref, h_ref, vnew_ref, final_ref = refs
    mma = k_ref.dtype

    def body(n, s):
        r = _chunk_rows(n, chunk)
        h_ref[n, :, :] = s.astype(h_ref.dtype)
        d = u_ref[r, :].astype(F32) - dot(w_ref[r, :], s.astype(mma))
        vnew_ref[r, :] = d.astype(vnew_ref.dtype)
        m = tiles.masks(seg_ref[r] if has_seg else None)
        return tiles.where(m.keep, s) + dot(tiles.where(m.to_last, k_ref[r, :]), d.astype(mma), ta=True)

    final_ref[...] = lax.fori_loop(0, num_chunks, body, h0_ref[...].astype(F32))


def _seq_specs(time, *dims):
    """Whole-sequence BlockSpecs of ``[B, T, H, d]`` arrays for a (b, h, dv tile) grid; ``"bv"`` tiles dv."""
    return [pl.BlockSpec((None, time, None, d[1]), lambda b, h, j: (b, 0, h, j)) if isinstance(d, tuple)
            else pl.BlockSpec((None, time, None, d), lambda b, h, j: (b, 0, h, 0)) for d in dims]


def state_fwd(w, u, k, seg, h0, *, chunk, bv, warps, stages, interpret):
    """``h`` ``[B, H, N, dk, dv]`` (k's dtype), new values ``D`` ``[B, T, H, dv]`` and the final state."""
    batch, time, heads, dk = k.shape
    dv = u.shape[-1]
    n = time // chunk
    in_specs = _seq_specs(time, dk, ("tile", bv), dk)
    args = [w, u, k]
    if seg is not None:
        in_specs.append(pl.BlockSpec((None, time), lambda b, h, j: (b, 0)))
        args.append(seg)
    state = pl.BlockSpec((None, None, dk, bv), lambda b, h, j: (b, h, 0, j))
    return pl.pallas_call(
        functools.partial(_state_fwd_kernel, chunk=chunk, num_chunks=n, has_seg=seg is not None),
        out_shape=(jax.ShapeDtypeStruct((batch, heads, n, dk, dv), k.dtype),
                   jax.ShapeDtypeStruct(u.shape, k.dtype),
                   jax.ShapeDtypeStruct((batch, heads, dk, dv), F32)),
        grid=(batch, heads, dv // bv),
        in_specs=in_specs + [state],
        out_specs=(pl.BlockSpec((None, None, n, dk, bv), lambda b, h, j: (b, h, 0, 0, j)),
                   _seq_specs(time, ("tile", bv))[0], state),
        interpret=interpret,
        compiler_params=_params(warps, stages),
        name="delta_state_fwd",
    )(*args, h0)


def _state_bwd_kernel(*refs, chunk, num_chunks, has_seg, scale):
    q_ref, k_ref, w_ref, dvl_ref, do_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    dfinal_ref, dh_ref, dd_ref, dh0_ref = refs
    mma = k_ref.dtype

    def body(t, ds):
        n = num_chunks - 1 - t
        r = _chunk_rows(n, chunk)
        dh_ref[n, :, :] = ds.astype(dh_ref.dtype)
        m = tiles.masks(seg_ref[r] if has_seg else None)
        dd = dvl_ref[r, :] + dot(tiles.where(m.to_last, k_ref[r, :]), ds.astype(mma))
        dd_ref[r, :] = dd
        ds = tiles.where(m.keep, ds) + scale * dot(tiles.where(m.first, q_ref[r, :]), do_ref[r, :], ta=True)
        return ds - dot(w_ref[r, :], dd.astype(mma), ta=True)

    dh0_ref[...] = lax.fori_loop(0, num_chunks, body, dfinal_ref[...].astype(F32))


def state_bwd(q, k, w, dvl, do, seg, dfinal, *, scale, chunk, bv, warps, stages, interpret):
    """Reverse pass: ``dh`` ``[B, H, N, dk, dv]`` (k's dtype; gradient of the state leaving
    each chunk), ``dD`` ``[B, T, H, dv]`` float32 and the initial state's gradient."""
    batch, time, heads, dk = k.shape
    dv = do.shape[-1]
    n = time // chunk
    in_specs = _seq_specs(time, dk, dk, dk, ("tile", bv), ("tile", bv))
    args = [q, k, w, dvl, do]
    if seg is not None:
        in_specs.append(pl.BlockSpec((None, time), lambda b, h, j: (b, 0)))
        args.append(seg)
    state = pl.BlockSpec((None, None, dk, bv), lambda b, h, j: (b, h, 0, j))
    return pl.pallas_call(
        functools.partial(_state_bwd_kernel, chunk=chunk, num_chunks=n, has_seg=seg is not None, scale=scale),
        out_shape=(jax.ShapeDtypeStruct((batch, heads, n, dk, dv), k.dtype),
                   jax.ShapeDtypeStruct(do.shape, F32),
                   jax.ShapeDtypeStruct((batch, heads, dk, dv), F32)),
        grid=(batch, heads, dv // bv),
        in_specs=in_specs + [state],
        out_specs=(pl.BlockSpec((None, None, n, dk, bv), lambda b, h, j: (b, h, 0, 0, j)),
                   _seq_specs(time, ("tile", bv))[0], state),
        interpret=interpret,
        compiler_params=_params(warps, stages),
        name="delta_state_bwd",
    )(*args, dfinal)


# --------------------------------------------------------------------------- chunk-parallel: o, gradients


def _output_kernel(*refs, scale, bk, bv, has_seg):
    q_ref, k_ref, vnew_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    h_ref, o_ref = refs
    c, dk = q_ref.shape
    dv = vnew_ref.shape[-1]
    m = tiles.masks(seg_ref[...] if has_seg else None)
    p = _causal_scores(q_ref, k_ref, m.same, dk=dk, bk=bk).astype(q_ref.dtype)
    for vb in range(dv // bv):
        vs = pl.ds(vb * bv, bv)
        acc = dot(p, vnew_ref[:, vs])
        for kb in range(dk // bk):
            cs = pl.ds(kb * bk, bk)
            acc += dot(tiles.where(m.first, q_ref[:, cs]), h_ref[cs, vs])
        o_ref[:, vs] = (scale * acc).astype(o_ref.dtype)


def output(q, k, vnew, seg, h, *, scale, chunk, bk, bv, warps, out_dtype, interpret):
    """``o`` ``[B, T, H, dv]`` (``out_dtype``) from ``D`` and ``h`` of :func:`state_fwd`."""
    batch, time, heads, dk = q.shape
    dv = vnew.shape[-1]
    in_specs, args = _chunk_inputs(chunk, (q, k, vnew), seg)
    return pl.pallas_call(
        functools.partial(_output_kernel, scale=scale, bk=bk, bv=bv, has_seg=seg is not None),
        out_shape=jax.ShapeDtypeStruct(vnew.shape, out_dtype),
        grid=(batch, time // chunk, heads),
        in_specs=in_specs + [_state_spec(dk, dv)],
        out_specs=_chunk_specs(chunk, dv)[0],
        interpret=interpret,
        compiler_params=_params(warps),
        name="delta_output",
    )(*args, h)


def _grads_kernel(*refs, scale, bk, bv, has_seg):
    q_ref, k_ref, v_ref, beta_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    h_ref, dh_ref, vnew_ref, dd_ref, u_ref, w_ref, t_ref, do_ref, dq_ref, dk_ref, dv_ref, db_ref = refs
    c, dk = q_ref.shape
    dv = v_ref.shape[-1]
    mma = k_ref.dtype
    hv = _Halves(c, seg_ref)
    r, half = hv.r, hv.h
    pairs = ((0, 0), (1, 0), (1, 1))
    t = _read_t(t_ref, half)
    beta = tuple(beta_ref[ra].astype(F32) for ra in r)
    kblocks = [pl.ds(kb * bk, bk) for kb in range(dk // bk)]
    vblocks = [pl.ds(vb * bv, bv) for vb in range(dv // bv)]
    causal = tiles.both(rows(c) >= cols(c), hv.full.same)

    # dQ = first (dO' h^T) + dP K,  dP = (dO' D^T) on P's pattern
    dp = jnp.where(causal, scale * sum(dot(do_ref[:, vs], vnew_ref[:, vs], tb=True) for vs in vblocks), 0.0)
    dp = dp.astype(mma)
    for cs in kblocks:
        dq = scale * sum(dot(do_ref[:, vs], h_ref[cs, vs], tb=True) for vs in vblocks)
        dq = tiles.where(hv.full.first, dq) + dot(dp, k_ref[:, cs])
        dq_ref[:, cs] = dq.astype(dq_ref.dtype)

    # U = T (beta V): dR_U = T^T dD, dV = beta dR_U; dL gets -dR_U U^T
    dbeta = [jnp.zeros((half,), F32), jnp.zeros((half,), F32)]
    dl = {ab: jnp.zeros((half, half), F32) for ab in pairs}
    for vs in vblocks:
        dru = _upper_apply(t, dd_ref[r[0], vs], dd_ref[r[1], vs], mma)
        for a in (0, 1):
            dv_ref[r[a], vs] = (beta[a][:, None] * dru[a]).astype(dv_ref.dtype)
            dbeta[a] += jnp.sum(v_ref[r[a], vs].astype(F32) * dru[a], axis=1)
        for a, b in pairs:
            dl[a, b] -= _mdot(dru[a], u_ref[r[b], vs], mma, tb=True)

    # W = T (beta first K), D = U - W h: dW = -dD h^T, dR_W = T^T dW; dL gets -dR_W W^T
    def d_rw(cs):  # dR_W's feature block cs, two row halves (recomputed where needed: fewer live registers)
        return _upper_apply(t, *[-_mdot(dd_ref[r[a], :], h_ref[cs, :], mma, tb=True) for a in (0, 1)], mma)

    kk = {ab: jnp.zeros((half, half), F32) for ab in pairs}
    for cs in kblocks:
        drw = d_rw(cs)
        for a in (0, 1):
            dbeta[a] += jnp.sum(tiles.where(hv.first(a), k_ref[r[a], cs].astype(F32) * drw[a]), axis=1)
        for a, b in pairs:
            dl[a, b] -= _mdot(drw[a], w_ref[r[b], cs], mma, tb=True)
            kk[a, b] += _mdot(k_ref[r[a], cs], k_ref[r[b], cs], mma, tb=True)

    # L = tril(beta K K^T): dbeta += rowsum(dL * K K^T), dK += G K + G^T K with G = beta dL
    g = {}
    for a, b in pairs:
        dl[a, b] = tiles.where(hv.pattern(a, b), dl[a, b])
        dbeta[a] += jnp.sum(dl[a, b] * kk[a, b], axis=1)
        g[a, b] = (beta[a][:, None] * dl[a, b]).astype(mma)

    # P = tril(Q K^T) and h_{n+1} = ... + (K to_last)^T D, by key half
    dp_cols = []
    for a in (0, 1):
        col_pattern = tiles.both(rows(c) >= cols(half) + a * half,
                                 None if hv.seg[a] is None else seg_ref[...][:, None] == hv.seg[a][None, :])
        dpa = scale * sum(dot(do_ref[:, vs], vnew_ref[r[a], vs], tb=True) for vs in vblocks)
        dp_cols.append(jnp.where(col_pattern, dpa, 0.0).astype(mma))
    for cs in kblocks:
        drw = d_rw(cs)
        k0, k1 = k_ref[r[0], cs], k_ref[r[1], cs]
        dks = (dot(g[0, 0], k0) + dot(g[0, 0], k0, ta=True) + dot(g[1, 0], k1, ta=True),
               dot(g[1, 0], k0) + dot(g[1, 1], k1) + dot(g[1, 1], k1, ta=True))
        for a in (0, 1):
            state = tiles.where(hv.to_last(a), sum(dot(vnew_ref[r[a], vs], dh_ref[cs, vs], tb=True) for vs in vblocks))
            dka = tiles.where(hv.first(a), beta[a][:, None] * drw[a]) + dks[a] + state
            dka += dot(dp_cols[a], q_ref[:, cs], ta=True)
            dk_ref[r[a], cs] = dka.astype(dk_ref.dtype)
    for a in (0, 1):
        db_ref[r[a]] = dbeta[a].astype(db_ref.dtype)


def grads(q, k, v, beta, seg, h, dh, vnew, dd, u, w, tmat, do, *, scale, chunk, bk, bv, warps, beta_dtype,
          interpret):
    """``dq, dk, dv`` (their inputs' dtype) and ``dbeta`` (``beta_dtype``) of every chunk."""
    batch, time, heads, dk = q.shape
    dv = v.shape[-1]
    in_specs, args = _chunk_inputs(chunk, (q, k, v, beta), seg)
    in_specs += [_state_spec(dk, dv), _state_spec(dk, dv)] + _chunk_specs(chunk, dv, dv, dv, dk,
                                                                          chunk, dv)
    return pl.pallas_call(
        functools.partial(_grads_kernel, scale=scale, bk=bk, bv=bv, has_seg=seg is not None),
        out_shape=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                   jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(beta.shape, beta_dtype)),
        grid=(batch, time // chunk, heads),
        in_specs=in_specs,
        out_specs=tuple(_chunk_specs(chunk, dk, dk, dv, None)),
        interpret=interpret,
        compiler_params=_params(warps),
        name="delta_grads",
    )(*args, h, dh, vnew, dd, u, w, tmat, do)
