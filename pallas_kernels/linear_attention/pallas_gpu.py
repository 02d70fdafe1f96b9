"""Triton-backend Pallas kernels for ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

Chunked algorithm, chunk ``C``; inside chunk n, ``b`` is the cumulative log gate
from the chunk start through each token (inclusive) and ``h_n`` the state
entering the chunk:

    o   = scale * (A V + (q * exp(b)) h_n),   A_ij = sum_d q_id k_jd exp(b_id - b_jd), j <= i
    h_{n+1} = exp(b_last) * h_n + (k * exp(b_last - b))^T V

Kernels (one launch each):

- :func:`state_fwd`, sequential: one program per ``(batch, head, dk tile, dv
  tile)`` walks the chunks with its state tile in registers, storing each
  ``h_n`` (the chunked algorithm's per-chunk states, in the matmul dtype) and
  ``b`` (float32), and the final state.
- :func:`output_fwd`, chunk-parallel: one program per ``(batch, chunk, head)``
  forms ``A`` on tensor cores and writes ``o`` (and ``A`` for the backward).
- :func:`state_bwd`, sequential in reverse: ``dh_n`` (the gradient of the state
  leaving chunk n) and the initial state's gradient.
- :func:`grads`, chunk-parallel: ``dq, dk, dv, dg`` of one chunk.

Why two passes instead of one fused walk: the walk is latency-bound and has
only ``batch * heads * tiles`` programs, so it does the least per chunk (one
``[C, dk]^T [C, dv]`` matmul); everything quadratic in ``C`` runs with
``batch * heads * chunks`` programs. The price is writing and reading ``h``
once (``dk * dv / C`` values per token).

Stability. ``b`` is non-increasing, so every factor below is ``exp`` of a
non-positive number and nothing overflows, whatever the gates (the caller
clamps ``-inf`` to a finite floor). Scalar gates (``b`` ``[C]``): the exact
``[C, C]`` decay matrix. Vector gates: secondary chunks of ``sub`` tokens.
For a query in sub-chunk ``a`` and a key in an earlier one, factor through
``r_a`` = ``b`` at the token before ``a``:
``exp(b_i - b_j) = exp(b_i - r_a) exp(r_a - b_j)``, both factors <= 1, so those
blocks are matmuls. Inside a sub-chunk the decays are formed per pair:
``sub`` "lags" ``delta = i - j``, each gathering the rows ``i - delta`` from
the chunk (a [C, bk] elementwise pass, no dynamic register indexing).

Most chunks never need that. When a feature block's cumulative gate stays above
``-log_space`` nats through the chunk (``b >= -60`` by default: ordinary GLA
gates lose a few nats per chunk), the whole chunk is factored through its start,
``exp(b_i - b_j) = exp(b_i) exp(-b_j)`` with ``exp(-b_j) <= e^60`` (far inside
float32 and bfloat16's range), and ``A`` is one masked matmul, its gradients two.
The choice is made per program and feature block at run time (``lax.cond``), so
strongly negative gates still take the exact sub-chunk form.

Segments (``seg``, see :mod:`.tiles`): pairs across a segment start are masked
out of ``A``, only the entering segment reads ``h_n``, only the last segment
writes the outgoing state, and the carried state is dropped at a start.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from pallas_kernels.linear_attention import tiles
from pallas_kernels.linear_attention.tiles import F32, cols, dot, rows

NEG_INF = float("-inf")


def _params(warps, stages=1):
    return pltriton.CompilerParams(num_warps=warps, num_stages=stages)


def _chunk_rows(n, c):
    return pl.ds(pl.multiple_of(n * c, c), c)


def _gate(ref, rows_, cols_, scalar):
    """Load the gate-shaped ``ref`` (``[T]`` scalar, ``[T, dk]`` vector) as float32."""
    return (ref[rows_] if scalar else ref[rows_, cols_]).astype(F32)


def _key_decay(b, b_last, scalar):
    """``exp(b_last - b)``: decay from each token to the chunk end, ``[C, 1]`` or ``[C, bk]``."""
    return jnp.exp(b_last - b)[:, None] if scalar else jnp.exp(b_last[None, :] - b)


def _state_decay(b_last, scalar):
    """``exp(b_last)`` shaped to scale the ``[bk, bv]`` state: scalar or ``[bk, 1]``."""
    return jnp.exp(b_last) if scalar else jnp.exp(b_last)[:, None]


# --------------------------------------------------------------------------- sequential passes


def _state_fwd_kernel(*refs, chunk, num_chunks, scalar, has_seg):
    k_ref, v_ref, g_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    h0_ref, h_ref, b_ref, final_ref = refs
    write_b = pl.program_id(3) == 0
    whole = slice(None)

    def body(n, s):
        r = _chunk_rows(n, chunk)
        b = jnp.cumsum(_gate(g_ref, r, whole, scalar), axis=0)
        b_last = tiles.last_row(b)

        @pl.when(write_b)
        def _():
            if scalar:
                b_ref[r] = b
            else:
                b_ref[r, :] = b

        h_ref[n, :, :] = s.astype(h_ref.dtype)
        m = tiles.masks(seg_ref[r] if has_seg else None)
        kd = tiles.where(m.to_last, k_ref[r, :].astype(F32) * _key_decay(b, b_last, scalar))
        decay = tiles.where(m.keep, _state_decay(b_last, scalar))
        return decay * s + dot(kd.astype(v_ref.dtype), v_ref[r, :], ta=True)

    final_ref[...] = lax.fori_loop(0, num_chunks, body, h0_ref[...].astype(F32))


def state_fwd(k, v, g, seg, h0, *, chunk, bk, bv, warps, stages, interpret):
    """Per-chunk states of the gated recurrence.

    Args:
      k: ``[B, T, H, dk]``; v: ``[B, T, H, dv]`` (one matmul dtype); T a multiple of ``chunk``.
      g: log gates, ``[B, T, H]`` (scalar per head) or ``[B, T, H, dk]``.
      seg: ``[B, T]`` int32 relative segment index (see :mod:`.tiles`) or None.
      h0: ``[B, H, dk, dv]`` float32 initial state.

    Returns:
      ``h`` ``[B, H, T // chunk, dk, dv]`` (v's dtype; the state entering each
      chunk), ``b`` like ``g`` in float32 (cumulative log gate within each
      chunk) and the final state ``[B, H, dk, dv]`` float32.
    """
    batch, time, heads, dk = k.shape
    dv = v.shape[-1]
    n = time // chunk
    scalar = g.ndim == 3
    gspec = (pl.BlockSpec((None, time, None), lambda b, h, i, j: (b, 0, h)) if scalar
             else pl.BlockSpec((None, time, None, bk), lambda b, h, i, j: (b, 0, h, i)))
    state = pl.BlockSpec((None, None, bk, bv), lambda b, h, i, j: (b, h, i, j))
    in_specs = [pl.BlockSpec((None, time, None, bk), lambda b, h, i, j: (b, 0, h, i)),
                pl.BlockSpec((None, time, None, bv), lambda b, h, i, j: (b, 0, h, j)), gspec]
    args = [k, v, g]
    if seg is not None:
        in_specs.append(pl.BlockSpec((None, time), lambda b, h, i, j: (b, 0)))
        args.append(seg)
    return pl.pallas_call(
        functools.partial(_state_fwd_kernel, chunk=chunk, num_chunks=n, scalar=scalar, has_seg=seg is not None),
        out_shape=(jax.ShapeDtypeStruct((batch, heads, n, dk, dv), v.dtype),
                   jax.ShapeDtypeStruct(g.shape, F32),
                   jax.ShapeDtypeStruct((batch, heads, dk, dv), F32)),
        grid=(batch, heads, dk // bk, dv // bv),
        in_specs=in_specs + [state],
        out_specs=(pl.BlockSpec((None, None, n, bk, bv), lambda b, h, i, j: (b, h, 0, i, j)), gspec, state),
        interpret=interpret,
        compiler_params=_params(warps, stages),
        name="gated_state_fwd",
    )(*args, h0)


def _state_bwd_kernel(*refs, chunk, num_chunks, scalar, has_seg, scale):
    q_ref, do_ref, b_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    dfinal_ref, dh_ref, dh0_ref = refs

    def body(t, ds):
        n = num_chunks - 1 - t
        r = _chunk_rows(n, chunk)
        dh_ref[n, :, :] = ds.astype(dh_ref.dtype)
        b = _gate(b_ref, r, slice(None), scalar)
        m = tiles.masks(seg_ref[r] if has_seg else None)
        qe = q_ref[r, :].astype(F32) * (jnp.exp(b)[:, None] if scalar else jnp.exp(b))
        qe = tiles.where(m.first, qe)
        decay = tiles.where(m.keep, _state_decay(tiles.last_row(b), scalar))
        return decay * ds + scale * dot(qe.astype(do_ref.dtype), do_ref[r, :], ta=True)

    dh0_ref[...] = lax.fori_loop(0, num_chunks, body, dfinal_ref[...].astype(F32))


def state_bwd(q, do, b, seg, dfinal, *, scale, chunk, bk, bv, warps, stages, interpret):
    """Reverse pass: ``dh`` ``[B, H, N, dk, dv]`` (gradient of the state leaving each
    chunk, do's dtype) and the initial state's gradient ``[B, H, dk, dv]`` float32.

    ``q`` ``[B, T, H, dk]``, ``do`` ``[B, T, H, dv]`` (one dtype), ``b`` from
    :func:`state_fwd`, ``dfinal`` the final state's cotangent (float32).
    """
    batch, time, heads, dk = q.shape
    dv = do.shape[-1]
    n = time // chunk
    scalar = b.ndim == 3
    gspec = (pl.BlockSpec((None, time, None), lambda b_, h, i, j: (b_, 0, h)) if scalar
             else pl.BlockSpec((None, time, None, bk), lambda b_, h, i, j: (b_, 0, h, i)))
    state = pl.BlockSpec((None, None, bk, bv), lambda b_, h, i, j: (b_, h, i, j))
    in_specs = [pl.BlockSpec((None, time, None, bk), lambda b_, h, i, j: (b_, 0, h, i)),
                pl.BlockSpec((None, time, None, bv), lambda b_, h, i, j: (b_, 0, h, j)), gspec]
    args = [q, do, b]
    if seg is not None:
        in_specs.append(pl.BlockSpec((None, time), lambda b_, h, i, j: (b_, 0)))
        args.append(seg)
    return pl.pallas_call(
        functools.partial(_state_bwd_kernel, chunk=chunk, num_chunks=n, scalar=scalar, has_seg=seg is not None,
                          scale=scale),
        out_shape=(jax.ShapeDtypeStruct((batch, heads, n, dk, dv), do.dtype),
                   jax.ShapeDtypeStruct((batch, heads, dk, dv), F32)),
        grid=(batch, heads, dk // bk, dv // bv),
        in_specs=in_specs + [state],
        out_specs=(pl.BlockSpec((None, None, n, bk, bv), lambda b_, h, i, j: (b_, h, 0, i, j)), state),
        interpret=interpret,
        compiler_params=_params(warps, stages),
        name="gated_state_bwd",
    )(*args, dfinal)


# --------------------------------------------------------------------------- intra-chunk scores


class _Sub:
    """Index vectors of the secondary chunking of a ``C``-token chunk into sub-chunks of ``s``."""

    def __init__(self, c, s):
        self.c, self.s, self.n = c, s, c // s
        self.i, self.j = rows(c), cols(c)
        self.blk = self.i // s  # [C, 1] sub-chunk of each row
        self.pos = self.i % s  # [C, 1] position inside it
        flat = lax.iota(jnp.int32, c)
        self.start = (flat // s) * s  # [C] first row of each row's sub-chunk
        self.before = jnp.maximum(self.start - 1, 0)  # [C] the row before it (clamped)

    def lagged(self, d):
        """Rows ``i - d`` inside each row's sub-chunk (clamped) and where that is a real pair."""
        return jnp.maximum(lax.iota(jnp.int32, self.c) - d, self.start), self.pos >= d

    def led(self, d):
        """Rows ``i + d`` inside each row's sub-chunk (clamped) and where that is a real pair."""
        return jnp.minimum(lax.iota(jnp.int32, self.c) + d, self.start + self.s - 1), self.pos + d < self.s


def _query_factor(b, b_ref, cs, sub):
    """``exp(b - r)``, ``r`` = ``b`` at the row before each row's sub-chunk (0 in the first)."""
    r = jnp.where(sub.blk == 0, 0.0, b_ref[sub.before, cs])
    return jnp.exp(b - r)


def _key_factor(b, b_ref, cs, sub, a):
    """``exp(r_a - b)`` for keys before sub-chunk ``a`` (0 elsewhere): ``[C, bk]``."""
    r_a = b_ref[pl.ds(a * sub.s - 1, 1), cs]
    return jnp.exp(jnp.where(sub.i < a * sub.s, r_a - b, NEG_INF))


def _vector_scores(q_ref, k_ref, b_ref, *, dk, bk, sub, mma, log_space):
    """``A_ij = sum_d q_id k_jd exp(b_id - b_jd)`` for ``j <= i`` (0 above the diagonal), ``[C, C]`` f32."""
    scores = jnp.zeros((sub.c, sub.c), F32)
    for kb in range(dk // bk):
        cs = pl.ds(kb * bk, bk)
        q, k, b = q_ref[:, cs].astype(F32), k_ref[:, cs].astype(F32), b_ref[:, cs]

        def chunk_start_form(scores, q=q, k=k, b=b):
            return scores + jnp.where(sub.i >= sub.j, tiles.chunk_start_scores(q, k, b, mma), 0.0)

        def sub_chunk_form(scores, q=q, k=k, b=b, cs=cs):
            qhat = (q * _query_factor(b, b_ref, cs, sub)).astype(mma)
            for a in range(1, sub.n):  # keys in earlier sub-chunks: matmuls
                khat = (k * _key_factor(b, b_ref, cs, sub, a)).astype(mma)
                scores += jnp.where(sub.blk == a, dot(qhat, khat, tb=True), 0.0)
            scores += jnp.where(sub.i == sub.j, jnp.sum(q * k, axis=1, keepdims=True), 0.0)

            def lag(d, scores):
                src, ok = sub.lagged(d)
                e = jnp.exp(jnp.where(ok, b - b_ref[src, cs], NEG_INF))
                band = jnp.sum(q * k_ref[src, cs].astype(F32) * e, axis=1, keepdims=True)
                return scores + jnp.where(sub.j == sub.i - d, band, 0.0)

            return lax.fori_loop(1, sub.s, lag, scores)

        scores = tiles.by_chunk_start(b, log_space, chunk_start_form, sub_chunk_form, scores)
    return scores


def _scalar_decay(b, same):
    """``exp(b_i - b_j)`` on the causal (same-segment) pairs, 0 elsewhere: ``[C, C]``."""
    c = b.shape[0]
    keep = tiles.both(rows(c) >= cols(c), same)
    return jnp.exp(jnp.where(keep, b[:, None] - b[None, :], NEG_INF))


def _scalar_scores(q_ref, k_ref, b_ref, same, *, dk, bk):
    qk = sum(dot(q_ref[:, pl.ds(kb * bk, bk)], k_ref[:, pl.ds(kb * bk, bk)], tb=True) for kb in range(dk // bk))
    return qk * _scalar_decay(b_ref[...], same)


def _read_factor(b_ref, cs, scalar):
    """``exp(b)`` for reading the carried state: ``[C, 1]`` or ``[C, bk]``."""
    return jnp.exp(b_ref[...])[:, None] if scalar else jnp.exp(b_ref[:, cs])


# --------------------------------------------------------------------------- chunk-parallel kernels


def _output_kernel(*refs, scale, sub, bk, bv, scalar, has_seg, store_scores, log_space):
    q_ref, k_ref, v_ref, b_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    h_ref, o_ref, *a_ref = refs
    c, dk = q_ref.shape
    dv = v_ref.shape[-1]
    mma = v_ref.dtype
    m = tiles.masks(seg_ref[...] if has_seg else None)
    if scalar:
        scores = _scalar_scores(q_ref, k_ref, b_ref, m.same, dk=dk, bk=bk)
    else:
        scores = tiles.where(m.same, _vector_scores(q_ref, k_ref, b_ref, dk=dk, bk=bk, sub=_Sub(c, sub), mma=mma,
                                                         log_space=log_space))
    if store_scores:
        a_ref[0][...] = scores.astype(a_ref[0].dtype)
    scores = scores.astype(mma)
    for vb in range(dv // bv):
        vs = pl.ds(vb * bv, bv)
        acc = dot(scores, v_ref[:, vs])
        for kb in range(dk // bk):
            cs = pl.ds(kb * bk, bk)
            qe = tiles.where(m.first, q_ref[:, cs].astype(F32) * _read_factor(b_ref, cs, scalar))
            acc += dot(qe.astype(mma), h_ref[cs, vs])
        o_ref[:, vs] = (scale * acc).astype(o_ref.dtype)


def _chunk_specs(chunk, *dims):
    """BlockSpecs of one chunk of ``[B, T, H, d]`` arrays (``d`` None: ``[B, T, H]``), grid (b, n, h)."""
    return [pl.BlockSpec((None, chunk, None), lambda b, n, h: (b, n, h)) if d is None
            else pl.BlockSpec((None, chunk, None, d), lambda b, n, h: (b, n, h, 0)) for d in dims]


def _seg_spec(chunk):
    return pl.BlockSpec((None, chunk), lambda b, n, h: (b, n))


def _state_spec(dk, dv):
    return pl.BlockSpec((None, None, None, dk, dv), lambda b, n, h: (b, h, n, 0, 0))


def output_fwd(q, k, v, b, seg, h, *, scale, chunk, sub, bk, bv, warps, store_scores, interpret, log_space=0.0):
    """Outputs of the chunked form, and the intra-chunk scores for the backward.

    Args:
      q, k: ``[B, T, H, dk]``; v: ``[B, T, H, dv]`` (one matmul dtype).
      b, seg, h: from :func:`state_fwd` (``b`` ``[B, T, H]`` scalar or ``[B, T, H, dk]``).

    Returns:
      ``o`` ``[B, T, H, dv]`` in v's dtype, and with ``store_scores`` also
      ``A`` ``[B, T, H, chunk]`` (row i of chunk n at token ``n * chunk + i``).
    """
    batch, time, heads, dk = q.shape
    dv = v.shape[-1]
    scalar = b.ndim == 3
    in_specs = _chunk_specs(chunk, dk, dk, dv, None if scalar else dk)
    args = [q, k, v, b]
    if seg is not None:
        in_specs.append(_seg_spec(chunk))
        args.append(seg)
    out_shape = [jax.ShapeDtypeStruct(v.shape, v.dtype)]
    out_specs = _chunk_specs(chunk, dv)
    if store_scores:
        out_shape.append(jax.ShapeDtypeStruct((batch, time, heads, chunk), v.dtype))
        out_specs += _chunk_specs(chunk, chunk)
    out = pl.pallas_call(
        functools.partial(_output_kernel, scale=scale, sub=sub, bk=bk, bv=bv, scalar=scalar,
                          has_seg=seg is not None, store_scores=store_scores, log_space=float(log_space)),
        out_shape=tuple(out_shape),
        grid=(batch, time // chunk, heads),
        in_specs=in_specs + [_state_spec(dk, dv)],
        out_specs=tuple(out_specs),
        interpret=interpret,
        compiler_params=_params(warps),
        name="gated_output_fwd",
    )(*args, h)
    return out if store_scores else out[0]


def _grads_kernel(*refs, scale, sub, bk, bv, scalar, has_seg, log_space):
    q_ref, k_ref, v_ref, b_ref, *refs = refs
    seg_ref = refs.pop(0) if has_seg else None
    h_ref, dh_ref, a_ref, do_ref, dq_ref, dk_ref, dv_ref, dg_ref = refs
    c, dk = q_ref.shape
    dv = v_ref.shape[-1]
    mma = v_ref.dtype
    m = tiles.masks(seg_ref[...] if has_seg else None)
    b_all = b_ref[...] if scalar else None
    b_last_all = tiles.last_row(b_all) if scalar else None
    kblocks = [pl.ds(kb * bk, bk) for kb in range(dk // bk)]
    vblocks = [pl.ds(vb * bv, bv) for vb in range(dv // bv)]

    def key_decay(cs):  # exp(b_last - b) for the keys that reach the outgoing state
        if scalar:
            return tiles.where(m.to_last, jnp.exp(b_last_all - b_all)[:, None])
        b = b_ref[:, cs]
        return tiles.where(m.to_last, jnp.exp(tiles.last_row(b)[None, :] - b))

    # dv = A^T dO' + (k exp(b_last - b))^T-side: K_hat dh
    for vs in vblocks:
        acc = scale * dot(a_ref[...], do_ref[:, vs], ta=True)
        for cs in kblocks:
            acc += dot((k_ref[:, cs].astype(F32) * key_decay(cs)).astype(mma), dh_ref[cs, vs])
        dv_ref[:, vs] = acc.astype(dv_ref.dtype)

    # dA = dO' V^T on the pairs A covers
    d_scores = scale * sum(dot(do_ref[:, vs], v_ref[:, vs], tb=True) for vs in vblocks)
    d_scores = jnp.where(tiles.both(rows(c) >= cols(c), m.same), d_scores, 0.0)
    if scalar:
        d_scores = d_scores * _scalar_decay(b_all, m.same)
        d_scores_mma = d_scores.astype(mma)
    else:
        s = _Sub(c, sub)
    x_sum = jnp.zeros((c,), F32)  # scalar gates: sum over features of q dq - k dk
    extra_sum = jnp.zeros((), F32)

    for cs in kblocks:
        q, k = q_ref[:, cs].astype(F32), k_ref[:, cs].astype(F32)
        # from the carried state: q reads h_n, k writes h_{n+1}
        dq = sum(dot(do_ref[:, vs], h_ref[cs, vs], tb=True) for vs in vblocks)
        dq = tiles.where(m.first, scale * dq * _read_factor(b_ref, cs, scalar))
        dk = key_decay(cs) * sum(dot(v_ref[:, vs], dh_ref[cs, vs], tb=True) for vs in vblocks)
        # d b_last: the key decays to the chunk end and the carried-state decay
        hdh = sum(jnp.sum(h_ref[cs, vs].astype(F32) * dh_ref[cs, vs].astype(F32), axis=1) for vs in vblocks)
        if scalar:
            extra_sum += jnp.sum(k * dk) + tiles.where(m.keep, jnp.exp(b_last_all) * jnp.sum(hdh))
            dq += dot(d_scores_mma, k_ref[:, cs].astype(mma))
            dk += dot(d_scores_mma, q_ref[:, cs].astype(mma), ta=True)
            x_sum += jnp.sum(q * dq - k * dk, axis=1)
        else:
            b = b_ref[:, cs]
            b_last = tiles.last_row(b)
            extra = jnp.sum(k * dk, axis=0) + tiles.where(m.keep, jnp.exp(b_last) * hdh)
            dq_intra, dk = _vector_intra_grads(q, k, b, b_ref, q_ref, k_ref, cs, d_scores, dk, s, mma, log_space)
            dq += dq_intra
            dg = tiles.reverse_cumsum(q * dq - k * dk) + extra[None, :]
            dg_ref[:, cs] = dg.astype(dg_ref.dtype)
        dq_ref[:, cs] = dq.astype(dq_ref.dtype)
        dk_ref[:, cs] = dk.astype(dk_ref.dtype)
    if scalar:
        dg_ref[...] = (tiles.reverse_cumsum(x_sum) + extra_sum).astype(dg_ref.dtype)


def _vector_intra_grads(q, k, b, b_ref, q_ref, k_ref, cs, d_scores, dk, sub, mma, log_space):
    """Gradients through the vector-gated scores of one feature block.

    Returns ``(dq_intra, dk + dk_intra)``; ``d_scores`` ``[C, C]`` f32 is dL/dA
    (zero above the diagonal and across segments).
    """

    def chunk_start_form(dk):
        dq, dk_intra = tiles.chunk_start_grads(q, k, b, d_scores, mma)
        return dq, dk + dk_intra

    def sub_chunk_form(dk):
        eq = _query_factor(b, b_ref, cs, sub)
        qhat = (q * eq).astype(mma)
        dqhat = jnp.zeros_like(q)
        for a in range(1, sub.n):
            ek = _key_factor(b, b_ref, cs, sub, a)
            da = jnp.where(sub.blk == a, d_scores, 0.0).astype(mma)
            dqhat += dot(da, (k * ek).astype(mma))
            dk += ek * dot(da, qhat, ta=True)
        diag = jnp.sum(jnp.where(sub.i == sub.j, d_scores, 0.0), axis=1, keepdims=True)
        dq = eq * dqhat + diag * k
        dk += diag * q

        def lag(d, carry):
            dq, dk = carry
            src, ok = sub.lagged(d)  # key i - d of query i
            e = jnp.exp(jnp.where(ok, b - b_ref[src, cs], NEG_INF))
            band = jnp.sum(jnp.where(sub.j == sub.i - d, d_scores, 0.0), axis=1, keepdims=True)
            dq += band * k_ref[src, cs].astype(F32) * e
            dst, ok = sub.led(d)  # query j + d of key j
            e = jnp.exp(jnp.where(ok, b_ref[dst, cs] - b, NEG_INF))
            band = jnp.sum(jnp.where(sub.i == sub.j + d, d_scores, 0.0), axis=0)[:, None]
            dk += band * q_ref[dst, cs].astype(F32) * e
            return dq, dk

        return lax.fori_loop(1, sub.s, lag, (dq, dk))

    return tiles.by_chunk_start(b, log_space, chunk_start_form, sub_chunk_form, dk)


def grads(q, k, v, b, seg, h, dh, scores, do, *, scale, chunk, sub, bk, bv, warps, g_dtype, interpret,
          log_space=0.0):
    """``dq, dk, dv`` (their inputs' dtype) and ``dg`` (``g_dtype``, b's shape) of every chunk.

    ``h``, ``b`` from :func:`state_fwd`, ``dh`` from :func:`state_bwd`,
    ``scores`` from :func:`output_fwd`, ``do`` ``[B, T, H, dv]`` (v's dtype).
    """
    batch, time, heads, dk = q.shape
    dv = v.shape[-1]
    scalar = b.ndim == 3
    gd = None if scalar else dk
    in_specs = _chunk_specs(chunk, dk, dk, dv, gd)
    args = [q, k, v, b]
    if seg is not None:
        in_specs.append(_seg_spec(chunk))
        args.append(seg)
    in_specs += [_state_spec(dk, dv), _state_spec(dk, dv)] + _chunk_specs(chunk, chunk, dv)
    return pl.pallas_call(
        functools.partial(_grads_kernel, scale=scale, sub=sub, bk=bk, bv=bv, scalar=scalar, has_seg=seg is not None,
                          log_space=float(log_space)),
        out_shape=(jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct(k.shape, k.dtype),
                   jax.ShapeDtypeStruct(v.shape, v.dtype), jax.ShapeDtypeStruct(b.shape, g_dtype)),
        grid=(batch, time // chunk, heads),
        in_specs=in_specs,
        out_specs=tuple(_chunk_specs(chunk, dk, dk, dv, gd)),
        interpret=interpret,
        compiler_params=_params(warps),
        name="gated_grads",
    )(*args, h, dh, scores, do)
