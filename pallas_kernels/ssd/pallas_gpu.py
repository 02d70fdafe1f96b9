"""Triton-backend Pallas kernels for SSD (Mamba-2): the chunked algorithm, forward and backward.

Per head (scalar decay ``a_t = dt_t A``), chunk ``c`` of ``chunk`` positions,
``s`` the within-chunk cumulative sum of ``a`` and ``s_last`` its total::

    y_i   = sum_{j<=i} (C_i . B_j) exp(s_i - s_j) dt_j x_j       (intra-chunk: matmuls)
          + exp(s_i) H_c C_i + D x_i                              (the entering state H_c)
    H_c+1 = exp(s_last) H_c + sum_j exp(s_last - s_j) dt_j x_j B_j^T

Forward, two kernels:

- :func:`chunk_states` (grid ``(batch, heads, head_dim blocks)``): walks the
  chunks in order; each chunk's own state contribution is one
  ``[head_dim, chunk] x [chunk, state]`` matmul; the running state stays in
  registers and the state entering every chunk, ``H`` ``[batch, chunks, heads,
  head_dim, state]`` float32, is written once (it is also the backward's
  residual), with the final state.
- :func:`chunk_outputs` (grid ``(batch, chunks, head blocks)``): every chunk in
  parallel; ``C B^T`` once per program (``heads_per_program`` heads of one
  group share it), then per head the decay mask, ``(C B^T o L) (dt x)`` and
  ``exp(s) C H^T`` on tensor cores, plus ``D x``.

Backward, two kernels: :func:`state_grads` walks the chunks in reverse with
the state's adjoint ``G`` in registers (``G_c = exp(s_last) G_c+1 + sum_i
exp(s_i) C_i^T gy_i``), writing the adjoint leaving every chunk and each
chunk's ``d s_last`` from the state passing; :func:`chunk_grads` (chunks in
parallel) produces ``dx``, ``ddt``, ``dA``, ``dD`` and (summed over its heads)
``dB``, ``dC`` from ``C B^T``, the decay mask and the two states of its chunk.

Lengths need not be a multiple of the chunk: rows past the end load as zeros
(``dt = 0``: no decay, no input) and are not stored. ``head_dim`` and
``state`` are powers of two >= 16 (the api pads). Matmuls take bf16/f16
operands when ``x`` is bf16/f16 (float32 accumulation) and full float32
precision otherwise.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu


class Config(NamedTuple):
    """Static facts one launch depends on."""

    length: int
    heads: int
    groups: int
    head_dim: int  # power of two >= 16
    state: int  # power of two >= 16
    chunk: int  # power of two >= 16
    head_block: int  # head_dim rows per program of the sequential kernels
    heads_per_program: int  # heads per program of the chunk-parallel kernels (divides heads/groups)
    has_D: bool
    has_h0: bool
    segsum: bool  # decays as sums of the dt A they span (True) or differences of cumulative sums
    mm_dtype: str  # "bfloat16", "float16" or "float32"
    num_warps: int
    num_stages: int
    bwd_num_warps: int = 8  # chunk_grads keeps several [chunk, chunk] float32 tiles live

    @property
    def chunks(self):
        return -(-self.length // self.chunk)


def _params(cfg, num_warps=None):
    return plgpu.CompilerParams(num_warps=num_warps or cfg.num_warps, num_stages=cfg.num_stages)


def _mm(cfg, a, b, contract=(1, 0)):
    """``a @ b`` on 2-D tiles contracting ``a``'s axis ``contract[0]`` with ``b``'s ``contract[1]``."""
    dtype = jnp.dtype(cfg.mm_dtype)
    precision = lax.Precision.HIGHEST if dtype == jnp.float32 else lax.Precision.DEFAULT
    return lax.dot_general(a.astype(dtype), b.astype(dtype), (((contract[0],), (contract[1],)), ((), ())),
                           precision=precision, preferred_element_type=jnp.float32)


def _rows(cfg, c):
    """Valid-row mask ``[chunk]`` of chunk ``c`` (None when the length is a multiple)."""
    if cfg.length % cfg.chunk == 0:
        return None
    return c * cfg.chunk + jnp.arange(cfg.chunk) < cfg.length


def _load(ref, mask, dtype=jnp.float32):
    if mask is None:
        return ref[...].astype(dtype)
    return plgpu.load(ref, mask=mask, other=0.0).astype(dtype)


def _store(ref, value, mask):
    plgpu.store(ref, value.astype(ref.dtype), mask=mask)


def _expand(mask, ndim):
    return None if mask is None or ndim == 1 else mask[:, None]


class _Decays(NamedTuple):
    """One head's decays over one chunk (``a = dt A``, log space)."""

    s: jax.Array  # [chunk] sum of a from the chunk start to i (inclusive)
    s_last: jax.Array  # scalar, the chunk's total
    to_end: jax.Array  # [chunk] sum of a after j to the chunk end
    seg: jax.Array  # [chunk, chunk] sum of a over j < k <= i (i >= j), or None


def _decays(cfg, dt, A, *, matrix):
    """The decays of a chunk. With ``cfg.segsum`` every decay between two positions is a sum of
    the ``a`` it spans (a cumulative sum down the masked ``[chunk, chunk]`` matrix, as the
    reference's segment sums), so it stays exact to float32 rounding of its own size however
    large the chunk's total; otherwise a difference of cumulative sums (cheaper; loses
    ``|s| eps`` where strong decays precede weak ones)."""
    a = dt * A
    s, s_last = jnp.cumsum(a), jnp.sum(a)
    k = jnp.arange(cfg.chunk)
    later = k[:, None] > k[None, :]  # [k, j]: k after j
    if not cfg.segsum:
        seg = s[:, None] - s[None, :] if matrix else None
        return _Decays(s, s_last, s_last - s, seg)
    if not matrix:
        return _Decays(s, s_last, jnp.sum(jnp.where(later, a[:, None], 0.0), axis=0), None)
    seg = jnp.cumsum(jnp.where(later, a[:, None], 0.0), axis=0)
    last = k[:, None] == cfg.chunk - 1
    return _Decays(s, s_last, jnp.sum(jnp.where(last, seg, 0.0), axis=0), seg)


def _causal(cfg):
    i = jnp.arange(cfg.chunk)
    return i[:, None] >= i[None, :]


def _decay_matrix(d, causal):
    """``L_ij = exp(seg_ij)`` for ``i >= j``, else 0 (the masked exponent never overflows)."""
    return jnp.exp(jnp.where(causal, d.seg, -jnp.inf))


# ---------------------------------------------------------------- forward


def _chunk_states_kernel(*refs, cfg: Config):
    x_ref, dt_ref, A_ref, B_ref = refs[:4]
    h0_ref = refs[4] if cfg.has_h0 else None
    H_ref, final_ref = refs[-2:]
    Q = cfg.chunk
    A = A_ref[pl.program_id(1)].astype(jnp.float32)

    def chunk(c, h):
        _store(H_ref.at[c], h, None)
        rows = _rows(cfg, c)
        seq = pl.ds(c * Q, Q)
        dt = _load(dt_ref.at[seq], rows)
        d = _decays(cfg, dt, A, matrix=False)
        x = _load(x_ref.at[seq, :], _expand(rows, 2))
        B = _load(B_ref.at[seq, :], _expand(rows, 2), cfg.mm_dtype)
        xw = x * (jnp.exp(d.to_end) * dt)[:, None]
        return jnp.exp(d.s_last) * h + _mm(cfg, xw, B, (0, 0))

    h = jnp.zeros((cfg.head_block, cfg.state), jnp.float32)
    if cfg.has_h0:
        h = h0_ref[...].astype(jnp.float32)
    h = lax.fori_loop(0, cfg.chunks, chunk, h)
    _store(final_ref, h, None)


def _seq_specs(cfg):
    """BlockSpecs of the sequential kernels (grid ``(batch, heads, head_dim blocks)``)."""
    L, Pb, N, r = cfg.length, cfg.head_block, cfg.state, cfg.heads // cfg.groups
    return dict(
        x=pl.BlockSpec((None, L, None, Pb), lambda b, h, p: (b, 0, h, p)),
        dt=pl.BlockSpec((None, L, None), lambda b, h, p: (b, 0, h)),
        A=pl.BlockSpec((cfg.heads,), lambda b, h, p: (0,)),
        bc=pl.BlockSpec((None, L, None, N), lambda b, h, p: (b, 0, lax.div(h, r), 0)),
        state=pl.BlockSpec((None, None, Pb, N), lambda b, h, p: (b, h, p, 0)),
        chunk_states=pl.BlockSpec((None, cfg.chunks, None, Pb, N), lambda b, h, p: (b, 0, h, p, 0)),
        per_chunk=pl.BlockSpec((None, cfg.chunks, None, None), lambda b, h, p: (b, 0, h, p)),
    )


def _seq_grid(cfg, batch):
    return (batch, cfg.heads, cfg.head_dim // cfg.head_block)


def chunk_states(x, dt, A, B, h0, cfg: Config, *, interpret):
    """States entering each chunk and the final state.

    Args:
      x: ``[batch, length, heads, head_dim]``; ``dt`` ``[batch, length, heads]``
        float32; ``A`` ``[heads]`` float32; ``B`` ``[batch, length, groups,
        state]``; ``h0`` ``[batch, heads, head_dim, state]`` float32 or None.

    Returns:
      ``(H, final)``: ``[batch, chunks, heads, head_dim, state]`` and
      ``[batch, heads, head_dim, state]``, float32.
    """
    batch = x.shape[0]
    sp = _seq_specs(cfg)
    args, specs = [x, dt, A, B], [sp["x"], sp["dt"], sp["A"], sp["bc"]]
    if cfg.has_h0:
        args.append(h0)
        specs.append(sp["state"])
    state = (batch, cfg.heads, cfg.head_dim, cfg.state)
    return pl.pallas_call(
        functools.partial(_chunk_states_kernel, cfg=cfg),
        out_shape=[jax.ShapeDtypeStruct((batch, cfg.chunks) + state[1:], jnp.float32),
                   jax.ShapeDtypeStruct(state, jnp.float32)],
        grid=_seq_grid(cfg, batch),
        in_specs=specs,
        out_specs=[sp["chunk_states"], sp["state"]],
        interpret=interpret,
        compiler_params=_params(cfg),
        name="ssd_chunk_states",
    )(*args)


def _par_specs(cfg):
    """BlockSpecs of the chunk-parallel kernels (grid ``(chunks, batch, head blocks)``: the
    chunk count, the largest, on the grid's first axis, which CUDA does not cap at 65535)."""
    Q, hp, P, N = cfg.chunk, cfg.heads_per_program, cfg.head_dim, cfg.state
    blocks_per_group = cfg.heads // cfg.groups // hp
    return dict(
        x=pl.BlockSpec((None, Q, hp, P), lambda c, b, k: (b, c, k, 0)),
        dt=pl.BlockSpec((None, Q, hp), lambda c, b, k: (b, c, k)),
        vec=pl.BlockSpec((hp,), lambda c, b, k: (k,)),
        bc=pl.BlockSpec((None, Q, None, N), lambda c, b, k: (b, c, lax.div(k, blocks_per_group), 0)),
        chunk_states=pl.BlockSpec((None, None, hp, P, N), lambda c, b, k: (b, c, k, 0, 0)),
        per_chunk=pl.BlockSpec((None, None, hp), lambda c, b, k: (b, c, k)),
        part_bc=pl.BlockSpec((None, Q, None, N), lambda c, b, k: (b, c, k, 0)),
    )


def _par_grid(cfg, batch):
    return (cfg.chunks, batch, cfg.heads // cfg.heads_per_program)


def _chunk_outputs_kernel(*refs, cfg: Config):
    x_ref, dt_ref, A_ref, B_ref, C_ref, H_ref = refs[:6]
    D_ref = refs[6] if cfg.has_D else None
    y_ref = refs[-1]
    rows = _rows(cfg, pl.program_id(0))
    C = _load(C_ref, _expand(rows, 2), cfg.mm_dtype)
    CB = _mm(cfg, C, _load(B_ref, _expand(rows, 2), cfg.mm_dtype), (1, 1))
    causal = _causal(cfg)

    def head(j, carry):
        dt = _load(dt_ref.at[:, j], rows)
        d = _decays(cfg, dt, A_ref[j].astype(jnp.float32), matrix=True)
        M = CB * _decay_matrix(d, causal) * dt[None, :]
        x = _load(x_ref.at[:, j, :], _expand(rows, 2), x_ref.dtype)
        y = _mm(cfg, M, x) + jnp.exp(d.s)[:, None] * _mm(cfg, C, H_ref[j], (1, 1))
        if cfg.has_D:
            y = y + D_ref[j].astype(jnp.float32) * x.astype(jnp.float32)
        _store(y_ref.at[:, j, :], y, _expand(rows, 2))
        return carry

    lax.fori_loop(0, cfg.heads_per_program, head, 0)


def chunk_outputs(x, dt, A, B, C, H, D, cfg: Config, *, interpret):
    """``y`` ``[batch, length, heads, head_dim]`` in ``x``'s dtype from the entering states ``H``."""
    batch = x.shape[0]
    sp = _par_specs(cfg)
    args = [x, dt, A, B, C, H]
    specs = [sp["x"], sp["dt"], sp["vec"], sp["bc"], sp["bc"], sp["chunk_states"]]
    if cfg.has_D:
        args.append(D)
        specs.append(sp["vec"])
    return pl.pallas_call(
        functools.partial(_chunk_outputs_kernel, cfg=cfg),
        out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
        grid=_par_grid(cfg, batch),
        in_specs=specs,
        out_specs=sp["x"],
        interpret=interpret,
        compiler_params=_params(cfg),
        name="ssd_chunk_outputs",
    )(*args)


# ---------------------------------------------------------------- backward


def _state_grads_kernel(*refs, cfg: Config, has_dfinal: bool):
    gy_ref, dt_ref, A_ref, C_ref, H_ref = refs[:5]
    dfinal_ref = refs[5] if has_dfinal else None
    G_ref, ddecay_ref, dh0_ref = refs[-3:]
    Q = cfg.chunk
    A = A_ref[pl.program_id(1)].astype(jnp.float32)

    def chunk(ci, g):
        c = cfg.chunks - 1 - ci
        _store(G_ref.at[c], g, None)  # the adjoint of the state leaving chunk c
        rows = _rows(cfg, c)
        seq = pl.ds(c * Q, Q)
        dt = _load(dt_ref.at[seq], rows)
        d = _decays(cfg, dt, A, matrix=False)
        decay = jnp.exp(d.s_last)
        ddecay_ref[c] = jnp.sum(g * H_ref[c]) * decay  # d s_last through the state passing
        gy = _load(gy_ref.at[seq, :], _expand(rows, 2)) * jnp.exp(d.s)[:, None]
        C = _load(C_ref.at[seq, :], _expand(rows, 2), cfg.mm_dtype)
        return decay * g + _mm(cfg, gy, C, (0, 0))

    g = jnp.zeros((cfg.head_block, cfg.state), jnp.float32)
    if has_dfinal:
        g = dfinal_ref[...].astype(jnp.float32)
    g = lax.fori_loop(0, cfg.chunks, chunk, g)
    _store(dh0_ref, g, None)


def state_grads(gy, dt, A, C, H, dfinal, cfg: Config, *, interpret):
    """Adjoints of the chunk states.

    Returns:
      ``(G, ddecay, dh0)``: ``G`` ``[batch, chunks, heads, head_dim, state]``
      (the adjoint of the state leaving each chunk), ``ddecay`` ``[batch,
      chunks, heads, head_dim blocks]`` (to be summed over the last axis: d
      ``s_last`` through the state passing), ``dh0`` like the initial state.
    """
    batch = gy.shape[0]
    sp = _seq_specs(cfg)
    args, specs = [gy, dt, A, C, H], [sp["x"], sp["dt"], sp["A"], sp["bc"], sp["chunk_states"]]
    if dfinal is not None:
        args.append(dfinal)
        specs.append(sp["state"])
    state = (batch, cfg.heads, cfg.head_dim, cfg.state)
    blocks = cfg.head_dim // cfg.head_block
    return pl.pallas_call(
        functools.partial(_state_grads_kernel, cfg=cfg, has_dfinal=dfinal is not None),
        out_shape=[jax.ShapeDtypeStruct((batch, cfg.chunks) + state[1:], jnp.float32),
                   jax.ShapeDtypeStruct((batch, cfg.chunks, cfg.heads, blocks), jnp.float32),
                   jax.ShapeDtypeStruct(state, jnp.float32)],
        grid=_seq_grid(cfg, batch),
        in_specs=specs,
        out_specs=[sp["chunk_states"], sp["per_chunk"], sp["state"]],
        interpret=interpret,
        compiler_params=_params(cfg),
        name="ssd_state_grads",
    )(*args)


def _spanning_pairs(E, causal, eye):
    """``[chunk]``: ``sum_{j < k <= i} E_ij`` for every ``k`` (``E`` zero unless ``i > j``).

    ``P_im = sum_{j <= m} E_ij`` (a cumulative sum along rows), ``S_m = sum_{i > m} P_im``, and
    the answer is ``S_{k-1}``: sums of the spanning pairs only. (Row minus column sums of
    ``E`` give the same in exact arithmetic, but there the pairs that do not span ``k``
    cancel, and with strong decays elsewhere in the chunk their rounding swamps a small
    gradient.)
    """
    P = jnp.cumsum(E, axis=1)
    S = jnp.sum(jnp.where(causal & ~eye, P, 0.0), axis=0)
    k = jnp.arange(E.shape[0])
    return jnp.sum(jnp.where(k[:, None] == k[None, :] - 1, S[:, None], 0.0), axis=0)


def _chunk_grads_kernel(*refs, cfg: Config):
    x_ref, dt_ref, A_ref, B_ref, C_ref, H_ref, G_ref, ddecay_ref, gy_ref = refs[:9]
    D_ref = refs[9] if cfg.has_D else None
    outs = refs[10 if cfg.has_D else 9:]
    dx_ref, ddt_ref, dA_ref = outs[:3]
    dD_ref = outs[3] if cfg.has_D else None
    dB_ref, dC_ref = outs[-2:]
    rows = _rows(cfg, pl.program_id(0))
    rows2 = _expand(rows, 2)
    C = _load(C_ref, rows2, cfg.mm_dtype)
    B = _load(B_ref, rows2, cfg.mm_dtype)
    CB = _mm(cfg, C, B, (1, 1))
    causal = _causal(cfg)
    eye = jnp.arange(cfg.chunk)[:, None] == jnp.arange(cfg.chunk)[None, :]

    def head(j, acc):
        dB, dC = acc
        A = A_ref[j].astype(jnp.float32)
        dt = _load(dt_ref.at[:, j], rows)
        d = _decays(cfg, dt, A, matrix=True)
        e_s, w = jnp.exp(d.s), jnp.exp(d.to_end)
        L = _decay_matrix(d, causal)
        M = CB * L
        x = _load(x_ref.at[:, j, :], rows2)
        xdt = x * dt[:, None]
        gy = _load(gy_ref.at[:, j, :], rows2)
        H, G = H_ref[j], G_ref[j]
        BG = _mm(cfg, B, G, (1, 1))  # [Q, P]: the leaving state's adjoint seen from each row
        dxdt = _mm(cfg, M, gy, (0, 0)) + w[:, None] * BG
        dM = _mm(cfg, gy, xdt, (1, 1))
        dCB = dM * L
        E = jnp.where(causal & ~eye, dM * M, 0.0)  # d seg_ij of every pair i > j
        dC = dC + _mm(cfg, dCB, B) + e_s[:, None] * _mm(cfg, gy, H)
        dB = dB + _mm(cfg, dCB, C, (0, 0)) + w[:, None] * _mm(cfg, xdt, G)
        CH = _mm(cfg, C, H, (1, 1))
        dw = jnp.sum(xdt * BG, axis=1) * w  # d to_end_j
        de = jnp.sum(gy * CH, axis=1) * e_s  # d s_i
        # d a_k collects every decay spanning k: the pairs j < k <= i, the s_i with i >= k,
        # the to_end_j with j < k and the chunk's total (through the state passing); each as a
        # sum of its own terms.
        da = _spanning_pairs(E, causal, eye) + jnp.sum(jnp.where(causal, de[:, None], 0.0), axis=0)
        da = da + jnp.sum(jnp.where(causal, 0.0, dw[:, None]), axis=0) + ddecay_ref[j]
        dx = dxdt * dt[:, None]
        if cfg.has_D:
            dx = dx + D_ref[j].astype(jnp.float32) * gy
            dD_ref[j] = jnp.sum(gy * x)
        _store(dx_ref.at[:, j, :], dx, rows2)
        _store(ddt_ref.at[:, j], jnp.sum(x * dxdt, axis=1) + da * A, rows)
        dA_ref[j] = jnp.sum(da * dt)
        return dB, dC

    zeros = jnp.zeros((cfg.chunk, cfg.state), jnp.float32)
    dB, dC = lax.fori_loop(0, cfg.heads_per_program, head, (zeros, zeros))
    _store(dB_ref, dB, rows2)
    _store(dC_ref, dC, rows2)


def chunk_grads(x, dt, A, B, C, H, G, ddecay, gy, D, cfg: Config, *, interpret):
    """Gradients from each chunk, all chunks in parallel.

    Returns:
      dict ``dx`` (like ``x``), ``ddt`` ``[batch, length, heads]``, ``dA``,
      ``dD`` ``[batch, chunks, heads]`` (sum over batch and chunks), ``dB``,
      ``dC`` ``[batch, length, head blocks, state]`` (sum over each group's
      blocks); float32 except ``dx``.
    """
    batch, length = x.shape[:2]
    sp = _par_specs(cfg)
    args = [x, dt, A, B, C, H, G, ddecay, gy]
    specs = [sp["x"], sp["dt"], sp["vec"], sp["bc"], sp["bc"], sp["chunk_states"], sp["chunk_states"],
             sp["per_chunk"], sp["x"]]
    if cfg.has_D:
        args.append(D)
        specs.append(sp["vec"])
    f32 = jnp.float32
    per_chunk = jax.ShapeDtypeStruct((batch, cfg.chunks, cfg.heads), f32)
    blocks = cfg.heads // cfg.heads_per_program
    outs = [("dx", jax.ShapeDtypeStruct(x.shape, x.dtype), sp["x"]),
            ("ddt", jax.ShapeDtypeStruct(dt.shape, f32), sp["dt"]),
            ("dA", per_chunk, sp["per_chunk"])]
    if cfg.has_D:
        outs.append(("dD", per_chunk, sp["per_chunk"]))
    part = jax.ShapeDtypeStruct((batch, length, blocks, cfg.state), f32)
    outs += [("dB", part, sp["part_bc"]), ("dC", part, sp["part_bc"])]
    res = pl.pallas_call(
        functools.partial(_chunk_grads_kernel, cfg=cfg),
        out_shape=[o[1] for o in outs],
        grid=_par_grid(cfg, batch),
        in_specs=specs,
        out_specs=[o[2] for o in outs],
        interpret=interpret,
        compiler_params=_params(cfg, cfg.bwd_num_warps),
        name="ssd_chunk_grads",
    )(*args)
    return {o[0]: v for o, v in zip(outs, res)}
