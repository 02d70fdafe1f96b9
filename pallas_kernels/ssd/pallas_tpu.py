"""Mosaic TPU Pallas kernels for SSD (Mamba-2): the chunked algorithm on the MXU, forward and backward.

Grid ``(batch, heads, chunks)`` with the chunk axis sequential ("arbitrary"):
on a TPU core the grid runs in order anyway, so one kernel walks a head's
chunks with the running ``[head_dim, state]`` state in a VMEM scratch, and
per chunk does the intra-chunk matmuls (``C B^T``, ``(C B^T o L) (dt x)``),
the entering state's output ``exp(s) C H^T`` and the state update
``exp(s_last) H + (x w)^T B``; the state entering each chunk is written out
for the backward. The backward walks the chunks in reverse with the state's
adjoint in VMEM and produces every gradient of its chunk (the equations of
:mod:`pallas_kernels.ssd.pallas_gpu`); ``dB``/``dC`` come out per head and are
summed per group by the caller.

Vectors over a chunk live as ``[1, chunk]`` rows or ``[chunk, 1]`` columns
(2-D layouts throughout). Cumulative sums are log-step (Hillis-Steele) sums of
``pltpu.roll`` shifts, so every decay between two positions is a sum of the
``dt A`` it spans (the reference's segment sums), and a partial last chunk is
masked in the kernel (rows past the end count as ``dt = 0``, ``x = B = C =
0``). ``A``, ``D`` are read from SMEM. TPU blocks tile their last two
dimensions, so ``x``/``y`` travel as ``[batch, heads, length, head_dim]`` and
``B``/``C`` as ``[batch, groups, length, state]`` (transposed here; free for
one group), ``dt`` as ``[batch, heads, 1, length]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.ssd.pallas_gpu import Config


def _mm(cfg, a, b, contract=(1, 0)):
    dtype = jnp.dtype(cfg.mm_dtype)
    precision = lax.Precision.HIGHEST if dtype == jnp.float32 else lax.Precision.DEFAULT
    return lax.dot_general(a.astype(dtype), b.astype(dtype), (((contract[0],), (contract[1],)), ((), ())),
                           precision=precision, preferred_element_type=jnp.float32)


def _swap12(v):  # [b, l, h, d] <-> [b, h, l, d]
    return jnp.transpose(v, (0, 2, 1, 3))


def _cumsum(x, axis):
    """Inclusive cumulative sum along ``axis`` of a 2-D tile by ``log2(n)`` rolled additions."""
    n = x.shape[axis]
    idx = lax.broadcasted_iota(jnp.int32, x.shape, axis)
    shift = 1
    while shift < n:
        x = x + jnp.where(idx >= shift, pltpu.roll(x, shift, axis), 0.0)
        shift *= 2
    return x


class _Chunk:
    """A chunk's decays and masks for one head; rows past the sequence end are zero."""

    def __init__(self, cfg, c, dt_row, A):
        Q = cfg.chunk
        self.I = lax.broadcasted_iota(jnp.int32, (Q, Q), 0)
        self.J = lax.broadcasted_iota(jnp.int32, (Q, Q), 1)
        self.causal = self.I >= self.J
        self.eye = self.I == self.J
        lane = lax.broadcasted_iota(jnp.int32, (1, Q), 1)
        sub = lax.broadcasted_iota(jnp.int32, (Q, 1), 0)
        self.row_ok = c * Q + lane < cfg.length  # [1, Q]
        self.col_ok = c * Q + sub < cfg.length  # [Q, 1]
        dt_row = jnp.where(self.row_ok, dt_row, 0.0)
        self.dt_row, self.dt_col = dt_row, self.column(dt_row)
        a_row = dt_row * A
        self.a_col = self.column(a_row)
        self.s_col = _cumsum(self.a_col, 0)  # sum of a from the chunk start to i
        self.s_last = jnp.sum(a_row, axis=1, keepdims=True)  # [1, 1]
        # seg_ij = sum_{j < k <= i} a_k (a cumulative sum down the masked tile), to_end_j = seg_{Q-1, j}
        self.seg = _cumsum(jnp.where(self.I > self.J, self.a_col, 0.0), 0)
        self.to_end_col = jnp.sum(jnp.where(self.J > self.I, a_row, 0.0), axis=1, keepdims=True)
        self.L = jnp.exp(jnp.where(self.causal, self.seg, -jnp.inf))

    def column(self, row):
        """``[1, Q]`` -> ``[Q, 1]`` (a masked lane reduction: no transpose)."""
        return jnp.sum(jnp.where(self.eye, row, 0.0), axis=1, keepdims=True)

    def row(self, col):
        """``[Q, 1]`` -> ``[1, Q]``."""
        return jnp.sum(jnp.where(self.eye, col, 0.0), axis=0, keepdims=True)

    def load(self, ref, dtype=jnp.float32):
        """A ``[Q, ...]`` tile with the rows past the end zeroed."""
        return jnp.where(self.col_ok, ref[...].astype(jnp.float32), 0.0).astype(dtype)


def _specs(cfg, reverse=False):
    Q, P, N, r = cfg.chunk, cfg.head_dim, cfg.state, cfg.heads // cfg.groups

    def c(k):
        return cfg.chunks - 1 - k if reverse else k

    return dict(
        x=pl.BlockSpec((None, None, Q, P), lambda b, h, k: (b, h, c(k), 0)),
        dt=pl.BlockSpec((None, None, 1, Q), lambda b, h, k: (b, h, 0, c(k))),
        bc=pl.BlockSpec((None, None, Q, N), lambda b, h, k: (b, lax.div(h, r), c(k), 0)),
        smem=pl.BlockSpec(memory_space=pltpu.SMEM),
        state=pl.BlockSpec((None, None, P, N), lambda b, h, k: (b, h, 0, 0)),
        chunk_state=pl.BlockSpec((None, None, None, P, N), lambda b, h, k: (b, c(k), h, 0, 0)),
        scalar=pl.BlockSpec((None, None, 1, 1), lambda b, h, k: (b, h, 0, 0)),
        part_bc=pl.BlockSpec((None, None, Q, N), lambda b, h, k: (b, h, c(k), 0)),
    )


def _params():
    return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))


def _forward_kernel(*refs, cfg: Config):
    x_ref, dt_ref, A_ref, B_ref, C_ref = refs[:5]
    i = 5
    D_ref = refs[i] if cfg.has_D else None
    i += cfg.has_D
    h0_ref = refs[i] if cfg.has_h0 else None
    y_ref, H_ref, final_ref, state = refs[-4:]
    h, c = pl.program_id(1), pl.program_id(2)

    @pl.when(c == 0)
    def _():
        state[...] = h0_ref[...].astype(jnp.float32) if cfg.has_h0 else jnp.zeros_like(state)

    H = state[...]
    H_ref[...] = H
    ch = _Chunk(cfg, c, dt_ref[...].astype(jnp.float32), A_ref[h])
    x = ch.load(x_ref)
    B, C = ch.load(B_ref, cfg.mm_dtype), ch.load(C_ref, cfg.mm_dtype)
    M = _mm(cfg, C, B, (1, 1)) * ch.L * ch.dt_row
    y = _mm(cfg, M, x) + jnp.exp(ch.s_col) * _mm(cfg, C, H, (1, 1))
    if cfg.has_D:
        y = y + D_ref[h] * x
    y_ref[...] = y.astype(y_ref.dtype)
    xw = x * (jnp.exp(ch.to_end_col) * ch.dt_col)
    H = jnp.exp(ch.s_last) * H + _mm(cfg, xw, B, (0, 0))
    state[...] = H

    @pl.when(c == cfg.chunks - 1)
    def _():
        final_ref[...] = H


def forward(x, dt, A, B, C, D, h0, cfg: Config, *, interpret=False):
    """``(y, H, final)`` as the GPU kernels' ``chunk_states`` + ``chunk_outputs``.

    Args: as :func:`pallas_kernels.ssd.pallas_gpu.chunk_states` (``dt`` ``[batch, length,
    heads]`` float32; ``D`` ``[heads]`` or None).
    """
    batch = x.shape[0]
    sp = _specs(cfg)
    dt_t = jnp.transpose(dt, (0, 2, 1))[:, :, None, :]  # [b, H, 1, l]
    args = [_swap12(x), dt_t, A, _swap12(B), _swap12(C)]
    specs = [sp["x"], sp["dt"], sp["smem"], sp["bc"], sp["bc"]]
    if cfg.has_D:
        args.append(D)
        specs.append(sp["smem"])
    if cfg.has_h0:
        args.append(h0)
        specs.append(sp["state"])
    state = (batch, cfg.heads, cfg.head_dim, cfg.state)
    y, H, final = pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg),
        out_shape=[jax.ShapeDtypeStruct(args[0].shape, x.dtype),
                   jax.ShapeDtypeStruct((batch, cfg.chunks) + state[1:], jnp.float32),
                   jax.ShapeDtypeStruct(state, jnp.float32)],
        grid=(batch, cfg.heads, cfg.chunks),
        in_specs=specs,
        out_specs=[sp["x"], sp["chunk_state"], sp["state"]],
        scratch_shapes=[pltpu.VMEM((cfg.head_dim, cfg.state), jnp.float32)],
        interpret=interpret,
        compiler_params=_params(),
        name="ssd_fwd",
    )(*args)
    return _swap12(y), H, final


def _backward_kernel(*refs, cfg: Config, has_dfinal: bool):
    x_ref, dt_ref, A_ref, B_ref, C_ref, H_ref, gy_ref = refs[:7]
    i = 7
    D_ref = refs[i] if cfg.has_D else None
    i += cfg.has_D
    dfinal_ref = refs[i] if has_dfinal else None
    outs = refs[i + has_dfinal:]
    dx_ref, ddt_ref, dB_ref, dC_ref, dA_ref = outs[:5]
    dD_ref = outs[5] if cfg.has_D else None
    dh0_ref, G_scr = outs[-2:]
    h, k = pl.program_id(1), pl.program_id(2)
    c = cfg.chunks - 1 - k
    f32 = jnp.float32

    @pl.when(k == 0)
    def _():
        G_scr[...] = dfinal_ref[...].astype(f32) if has_dfinal else jnp.zeros_like(G_scr)
        dA_ref[...] = jnp.zeros_like(dA_ref)
        if cfg.has_D:
            dD_ref[...] = jnp.zeros_like(dD_ref)

    A = A_ref[h]
    ch = _Chunk(cfg, c, dt_ref[...].astype(f32), A)
    x, gy = ch.load(x_ref), ch.load(gy_ref)
    B, C = ch.load(B_ref, cfg.mm_dtype), ch.load(C_ref, cfg.mm_dtype)
    H, G = H_ref[...], G_scr[...]
    CB = _mm(cfg, C, B, (1, 1))
    M = CB * ch.L
    e_s, w = jnp.exp(ch.s_col), jnp.exp(ch.to_end_col)
    xdt = x * ch.dt_col
    BG = _mm(cfg, B, G, (1, 1))  # [Q, P]
    dxdt = _mm(cfg, M, gy, (0, 0)) + w * BG
    dM = _mm(cfg, gy, xdt, (1, 1))
    dCB = dM * ch.L
    E = jnp.where(ch.I > ch.J, dM * M, 0.0)
    dC_ref[...] = _mm(cfg, dCB, B) + e_s * _mm(cfg, gy, H)
    dB_ref[...] = _mm(cfg, dCB, C, (0, 0)) + w * _mm(cfg, xdt, G)
    dw = jnp.sum(xdt * BG, axis=1, keepdims=True) * w  # [Q, 1]
    de = jnp.sum(gy * _mm(cfg, C, H, (1, 1)), axis=1, keepdims=True) * e_s
    # d a_k: the pairs j < k <= i, the s_i with i >= k, the to_end_j with j < k, the chunk total.
    S = jnp.sum(jnp.where(ch.I > ch.J, _cumsum(E, 1), 0.0), axis=0, keepdims=True)  # [1, Q]
    lane = lax.broadcasted_iota(jnp.int32, S.shape, 1)
    da = jnp.where(lane == 0, 0.0, pltpu.roll(S, 1, 1))
    da = da + jnp.sum(jnp.where(ch.causal, de, 0.0), axis=0, keepdims=True)
    da = da + jnp.sum(jnp.where(ch.causal, 0.0, dw), axis=0, keepdims=True)
    decay = jnp.exp(ch.s_last)
    da = da + jnp.sum(G * H, keepdims=True) * decay
    dx = dxdt * ch.dt_col
    if cfg.has_D:
        dx = dx + D_ref[h] * gy
        dD_ref[...] += jnp.sum(gy * x, keepdims=True)
    dx_ref[...] = dx.astype(dx_ref.dtype)
    ddt_ref[...] = ch.row(jnp.sum(x * dxdt, axis=1, keepdims=True)) + da * A
    dA_ref[...] += jnp.sum(da * ch.dt_row, keepdims=True)
    G = decay * G + _mm(cfg, gy * e_s, C, (0, 0))
    G_scr[...] = G

    @pl.when(k == cfg.chunks - 1)
    def _():
        dh0_ref[...] = G


def backward(x, dt, A, B, C, D, H, gy, dfinal, cfg: Config, *, interpret=False):
    """All gradients: dict ``dx``, ``ddt`` ``[batch, length, heads]``, ``dA``, ``dD`` ``[heads]``,
    ``dB``, ``dC`` ``[batch, length, heads, state]`` (sum per group), ``dh0``."""
    batch, length = x.shape[:2]
    sp = _specs(cfg, reverse=True)
    dt_t = jnp.transpose(dt, (0, 2, 1))[:, :, None, :]
    args = [_swap12(x), dt_t, A, _swap12(B), _swap12(C), H, _swap12(gy)]
    specs = [sp["x"], sp["dt"], sp["smem"], sp["bc"], sp["bc"], sp["chunk_state"], sp["x"]]
    if cfg.has_D:
        args.append(D)
        specs.append(sp["smem"])
    if dfinal is not None:
        args.append(dfinal)
        specs.append(sp["state"])
    f32 = jnp.float32
    state = (batch, cfg.heads, cfg.head_dim, cfg.state)
    part = (batch, cfg.heads, length, cfg.state)
    scalar = (batch, cfg.heads, 1, 1)
    outs = [("dx", args[0].shape, x.dtype, "x"), ("ddt", dt_t.shape, f32, "dt"), ("dB", part, f32, "part_bc"),
            ("dC", part, f32, "part_bc"), ("dA", scalar, f32, "scalar")]
    if cfg.has_D:
        outs.append(("dD", scalar, f32, "scalar"))
    outs.append(("dh0", state, f32, "state"))
    res = pl.pallas_call(
        functools.partial(_backward_kernel, cfg=cfg, has_dfinal=dfinal is not None),
        out_shape=[jax.ShapeDtypeStruct(s, d) for _, s, d, _ in outs],
        grid=(batch, cfg.heads, cfg.chunks),
        in_specs=specs,
        out_specs=[sp[kind] for *_, kind in outs],
        scratch_shapes=[pltpu.VMEM((cfg.head_dim, cfg.state), f32)],
        interpret=interpret,
        compiler_params=_params(),
        name="ssd_bwd",
    )(*args)
    g = {name: v for (name, *_), v in zip(outs, res)}
    g["ddt"] = jnp.transpose(g["ddt"][:, :, 0, :], (0, 2, 1))
    for name in ("dx", "dB", "dC"):
        g[name] = _swap12(g[name])
    g["dA"] = jnp.sum(g["dA"], axis=(0, 2, 3))
    if cfg.has_D:
        g["dD"] = jnp.sum(g["dD"], axis=(0, 2, 3))
    return g
