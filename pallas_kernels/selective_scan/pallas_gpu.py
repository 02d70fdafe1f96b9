"""Triton-backend Pallas kernels for the selective scan: forward and backward.

Arrays arrive in the grouped layout of :mod:`pallas_kernels.selective_scan.api`:
``u``, ``delta``, ``z``, ``y`` ``[batch, length, groups, cpg]`` (``cpg`` channels
per group of ``B``/``C``), ``A`` ``[groups, cpg, state]``, ``B``, ``C``
``[batch, length, groups, state]`` float32, ``D``/``delta_bias``
``[groups, cpg]``, ``keep`` ``[batch, length]`` (0 where a segment starts),
states ``[batch, groups, cpg, state]``. ``state`` is a power of two (the api
pads it).

Grid ``(batch, groups, channel blocks)``. One program owns ``channels``
channels of one group: its ``[channels, state]`` float32 state lives in
registers for the whole sequence, and the ``[batch, length, channels, state]``
tensor of the recurrence never exists in memory.

Forward (:func:`forward`): the sequence is walked in tiles of ``time`` steps,
sequentially (``h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t`` is a chain
through the state; the exponentials, the contraction with ``C``, ``D u`` and
the ``silu(z)`` gate hang off that chain and overlap with it). All loads of a
tile (rows of ``u``, ``delta``, ``z``, ``B``, ``C``, ``keep``) are issued
together one tile ahead: the loop carries the next tile's rows, so memory
latency hides behind the current tile's arithmetic. A log-space formulation
(cumulative sums of ``delta A`` inside a tile) was rejected: ``exp(-cumsum)``
overflows as soon as a tile's total decay passes ~88 nats, which Mamba's
parameters reach (``delta`` ~ 1, ``A`` ~ -16). With ``save_bounds`` the state
entering every ``chunk`` steps is written out: the only residual of the
backward besides the inputs.

Backward (:func:`backward`): chunks in reverse order. For each chunk, the state
is recomputed from its stored boundary, and the state entering every tile is
written to a per-program scratch buffer (``chunk / time`` states, a few KiB,
L2-resident). Then tiles in reverse: a tile's ``time`` states are recomputed
into registers (a static Python list: no dynamic register indexing) and walked
backwards with the adjoint ``lam_t = dL/dh_t``::

    lam_t  = gy_t C_t^T + keep_{t+1} exp(delta_{t+1} A) lam_{t+1}
    ddelta = sum_n lam (A exp(delta A) h_{t-1} + u B);  du = delta sum_n lam B + D gy
    dA    += lam exp(delta A) h_{t-1} delta;  dB_t = sum_d lam delta u;  dC_t = sum_d gy h_t

``dB``/``dC`` come out per channel block (summed by the caller); ``dA``,
``dD``, ``ddelta_bias`` per batch row. Length need not be a multiple of
``time``: steps past the end load a clamped row and count as ``delta = 0``
(state unchanged), and their stores are masked.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

LOG2E = math.log2(math.e)


class Config(NamedTuple):
    """Static shape and option facts one kernel launch depends on (GPU and TPU kernels)."""

    length: int
    cpg: int  # channels per group
    channels: int  # channels per program (GPU: a power of two; TPU: lanes)
    state: int  # GPU: a power of two; TPU: any
    time: int  # steps per tile (TPU: per time block)
    chunk: int  # steps per stored boundary (a multiple of time; TPU: = time)
    has_z: bool
    has_D: bool
    has_bias: bool
    softplus: bool
    has_keep: bool
    has_h0: bool
    num_warps: int

    @property
    def tiles(self):
        return -(-self.length // self.time)

    @property
    def per_chunk(self):
        return self.chunk // self.time

    @property
    def chunks(self):
        return -(-self.tiles // self.per_chunk)

    @property
    def ragged(self):
        return self.chunks * self.chunk != self.length


def softplus(x):
    """``log(1 + e^x)`` as ``jax.nn.softplus`` computes it."""
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


def sigmoid(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _unpack(refs, names):
    return dict(zip(names, refs))


def _in_names(cfg, backward=False):
    names = ["u", "delta", "A", "B", "C"]
    names += ["z"] * cfg.has_z + ["D"] * cfg.has_D + ["bias"] * cfg.has_bias + ["keep"] * cfg.has_keep
    if backward:
        return names + ["bounds", "gy"]
    return names + ["h0"] * cfg.has_h0


class _Rows(NamedTuple):
    """One step's inputs, float32: ``delta`` before bias/softplus, ``u``, ``z`` ``[channels]``,
    ``B``, ``C`` ``[state]``, ``keep`` a scalar."""

    delta: jax.Array
    u: jax.Array
    z: jax.Array
    B: jax.Array
    C: jax.Array
    keep: jax.Array


def _row_index(cfg, t):
    """The row to read for step ``t`` (clamped past the end) and whether ``t`` is real."""
    t = jnp.asarray(t, jnp.int32)
    if not cfg.ragged:
        return t, True
    return jnp.minimum(t, cfg.length - 1), t < cfg.length


def _load(ref, mask):
    """``ref[...]`` as float32; where ``mask`` (None: everywhere) is False, zeros."""
    if mask is None:
        return ref[...].astype(jnp.float32)
    return plgpu.load(ref, mask=mask, other=0.0).astype(jnp.float32)


def _store(ref, value, mask):
    plgpu.store(ref, value.astype(ref.dtype), mask=mask)


def _rows_mask(cmask):
    return None if cmask is None else cmask[:, None]


def _load_rows(r, cfg, t, cmask, *, need_C=True, need_z=True):
    tc, _ = _row_index(cfg, t)

    def row(name):
        return _load(r[name].at[tc], cmask)

    f32 = jnp.float32
    return _Rows(
        delta=row("delta"),
        u=row("u"),
        z=row("z") if cfg.has_z and need_z else jnp.zeros((), f32),
        B=r["B"][tc].astype(f32),
        C=r["C"][tc].astype(f32) if need_C else jnp.zeros((), f32),
        keep=r["keep"][tc].astype(f32) if cfg.has_keep else jnp.ones((), f32),
    )


def _discretise(cfg, rows, t, bias, A2):
    """``(pre, delta, dA)``: the softplus argument, the step size and ``keep * exp(delta A)``."""
    pre = rows.delta + bias if cfg.has_bias else rows.delta
    delta = softplus(pre) if cfg.softplus else pre
    keep = rows.keep
    if cfg.ragged:
        valid = t < cfg.length
        delta = jnp.where(valid, delta, 0.0)  # past the end: the state stays as it is
        keep = jnp.where(valid, keep, 1.0)
    dA = jnp.exp2(delta[:, None] * A2)
    if cfg.has_keep:
        dA = dA * keep
    return pre, delta, dA


def _program_consts(r, cfg):
    """``(cmask, A, D, bias)``: the mask of this program's real channels (None when all
    are) and its float32 parameters."""
    cmask = None
    if cfg.cpg % cfg.channels:
        cmask = pl.program_id(2) * cfg.channels + jnp.arange(cfg.channels) < cfg.cpg
    A = _load(r["A"], _rows_mask(cmask))
    vec = lambda name: _load(r[name], cmask) if name in r else None  # noqa: E731
    return cmask, A, vec("D"), vec("bias")


def _store_row(ref, cfg, t, value, mask):
    """Store row ``t`` of ``ref`` where ``mask`` (None: everywhere) holds and ``t`` is real."""
    tc, valid = _row_index(cfg, t)
    if cfg.ragged:
        mask = valid if mask is None else jnp.logical_and(mask, valid)
    _store(ref.at[tc], value, mask)


def _forward_kernel(*refs, cfg: Config, save_bounds: bool, return_final: bool):
    n_in = len(_in_names(cfg))
    r = _unpack(refs[:n_in], _in_names(cfg))
    outs = refs[n_in:]
    y_ref = outs[0]
    final_ref = outs[1] if return_final else None
    bounds_ref = outs[-1] if save_bounds else None
    cmask, A, D, bias = _program_consts(r, cfg)
    A2 = A * LOG2E
    T = cfg.time

    def tile_rows(i):
        return tuple(_load_rows(r, cfg, i * T + s, cmask) for s in range(T))

    def tile(i, carry):
        h, rows = carry
        nxt = tile_rows(jnp.minimum(i + 1, cfg.tiles - 1))  # in flight while this tile computes
        if save_bounds:
            @pl.when(jax.lax.rem(i, cfg.per_chunk) == 0)
            def _():
                _store(bounds_ref.at[jax.lax.div(i, cfg.per_chunk)], h, _rows_mask(cmask))

        for s in range(T):
            t = i * T + s
            x = rows[s]
            _, delta, dA = _discretise(cfg, x, t, bias, A2)
            h = dA * h + (delta * x.u)[:, None] * x.B[None, :]
            y = jnp.sum(h * x.C[None, :], axis=1)
            if cfg.has_D:
                y = y + D * x.u
            if cfg.has_z:
                y = y * x.z * sigmoid(x.z)
            _store_row(y_ref, cfg, t, y, cmask)
        return h, nxt

    if cfg.has_h0:
        h = _load(r["h0"], _rows_mask(cmask))
    else:
        h = jnp.zeros((cfg.channels, cfg.state), jnp.float32)
    h, _ = jax.lax.fori_loop(0, cfg.tiles, tile, (h, tile_rows(0)))
    if return_final:
        _store(final_ref, h, _rows_mask(cmask))


def _specs(cfg, batch, groups, names):
    """BlockSpecs for the arrays named ``names`` (grid ``(batch, groups, blocks)``)."""
    L, Dc, N = cfg.length, cfg.channels, cfg.state
    table = {
        "seq": pl.BlockSpec((None, L, None, Dc), lambda i, k, j: (i, 0, k, j)),
        "bc": pl.BlockSpec((None, L, None, N), lambda i, k, j: (i, 0, k, 0)),
        "A": pl.BlockSpec((None, Dc, N), lambda i, k, j: (k, j, 0)),
        "vec": pl.BlockSpec((None, Dc), lambda i, k, j: (k, j)),
        "keep": pl.BlockSpec((None, L), lambda i, k, j: (i, 0)),
        "state": pl.BlockSpec((None, None, Dc, N), lambda i, k, j: (i, k, j, 0)),
        "bounds": pl.BlockSpec((None, cfg.chunks, None, Dc, N), lambda i, k, j: (i, 0, k, j, 0)),
        "part_bc": pl.BlockSpec((None, L, None, None, N), lambda i, k, j: (i, 0, k, j, 0)),
        "part_state": pl.BlockSpec((None, None, Dc, N), lambda i, k, j: (i, k, j, 0)),
        "part_vec": pl.BlockSpec((None, None, Dc), lambda i, k, j: (i, k, j)),
        "scratch": pl.BlockSpec((None, None, None, cfg.per_chunk, Dc, N), lambda i, k, j: (i, k, j, 0, 0, 0)),
    }
    kind = dict(u="seq", delta="seq", z="seq", gy="seq", B="bc", C="bc", A="A", D="vec", bias="vec",
                keep="keep", h0="state", bounds="bounds")
    return [table[kind.get(n, n)] for n in names]


def _grid(cfg, batch, groups):
    return (batch, groups, pl.cdiv(cfg.cpg, cfg.channels))


def forward(inputs, cfg: Config, *, save_bounds, return_final, interpret):
    """Run the forward kernel.

    Args:
      inputs: dict with ``u``, ``delta``, ``A``, ``B``, ``C`` and, as ``cfg``
        says, ``z``, ``D``, ``bias``, ``keep``, ``h0`` (grouped layout).

    Returns:
      ``(y, final or None, bounds or None)``: ``y`` like ``u``; ``final``
      ``[batch, groups, cpg, state]`` and ``bounds`` ``[batch, chunks, groups,
      cpg, state]`` float32.
    """
    u = inputs["u"]
    batch, _, groups, cpg = u.shape
    names = _in_names(cfg)
    out_shape = [jax.ShapeDtypeStruct(u.shape, u.dtype)]
    out_specs = _specs(cfg, batch, groups, ["seq"])
    state = (batch, groups, cpg, cfg.state)
    if return_final:
        out_shape.append(jax.ShapeDtypeStruct(state, jnp.float32))
        out_specs += _specs(cfg, batch, groups, ["state"])
    if save_bounds:
        out_shape.append(jax.ShapeDtypeStruct((batch, cfg.chunks) + state[1:], jnp.float32))
        out_specs += _specs(cfg, batch, groups, ["bounds"])
    outs = pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg, save_bounds=save_bounds, return_final=return_final),
        out_shape=out_shape,
        grid=_grid(cfg, batch, groups),
        in_specs=_specs(cfg, batch, groups, names),
        out_specs=out_specs,
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=1),
        name="selective_scan_fwd",
    )(*[inputs[n] for n in names])
    final = outs[1] if return_final else None
    bounds = outs[-1] if save_bounds else None
    return outs[0], final, bounds


def _backward_kernel(*refs, cfg: Config, has_dfinal: bool, interpret: bool):
    names = _in_names(cfg, backward=True) + ["dfinal"] * has_dfinal
    r = _unpack(refs[: len(names)], names)
    out_names = (["du", "ddelta"] + ["dz"] * cfg.has_z + ["dB", "dC", "dA"] + ["dD"] * cfg.has_D
                 + ["dbias"] * cfg.has_bias + ["dh0", "scratch"])
    o = _unpack(refs[len(names):], out_names)
    cmask, A, D, bias = _program_consts(r, cfg)
    A2 = A * LOG2E
    T, S = cfg.time, cfg.per_chunk
    Dc, N = cfg.channels, cfg.state
    zeros = functools.partial(jnp.zeros, dtype=jnp.float32)

    def barrier():
        if not interpret:  # the scratch is written and read back by different threads
            plgpu.debug_barrier()

    def advance(t0, h):
        for s in range(T):
            x = _load_rows(r, cfg, t0 + s, cmask, need_C=False, need_z=False)
            _, delta, dA = _discretise(cfg, x, t0 + s, bias, A2)
            h = dA * h + (delta * x.u)[:, None] * x.B[None, :]
        return h

    def tile_backward(t0, h, carry):
        lam, dA_acc, dD_acc, dbias_acc = carry
        steps = []
        for s in range(T):  # recompute the tile's states, keeping them in registers
            x = _load_rows(r, cfg, t0 + s, cmask, need_C=False, need_z=False)
            pre, delta, dA = _discretise(cfg, x, t0 + s, bias, A2)
            h_prev = h
            h = dA * h + (delta * x.u)[:, None] * x.B[None, :]
            steps.append((x, pre, delta, dA, h_prev, h))
        for s in reversed(range(T)):
            t = t0 + s
            x, pre, delta, dA, h_prev, h = steps[s]
            tc, valid = _row_index(cfg, t)
            C = r["C"][tc].astype(jnp.float32)
            g = _load(r["gy"].at[tc], cmask)
            if cfg.ragged:
                g = jnp.where(valid, g, 0.0)
            if cfg.has_z:
                zz = _load(r["z"].at[tc], cmask)
                sig = sigmoid(zz)
                y = jnp.sum(h * C[None, :], axis=1)
                if cfg.has_D:
                    y = y + D * x.u
                _store_row(o["dz"], cfg, t, g * y * sig * (1.0 + zz * (1.0 - sig)), cmask)
                g = g * zz * sig
            lam = lam + g[:, None] * C[None, :]
            _store_row(o["dC"], cfg, t, jnp.sum(g[:, None] * h, axis=0), None)
            lam_b = jnp.sum(lam * x.B[None, :], axis=1)
            t1 = lam * dA * h_prev
            ddelta = jnp.sum(t1 * A, axis=1) + x.u * lam_b
            dA_acc = dA_acc + t1 * delta[:, None]
            du = delta * lam_b
            if cfg.has_D:
                du = du + D * g
                dD_acc = dD_acc + g * x.u
            _store_row(o["du"], cfg, t, du, cmask)
            _store_row(o["dB"], cfg, t, jnp.sum(lam * (delta * x.u)[:, None], axis=0), None)
            if cfg.softplus:
                ddelta = ddelta * sigmoid(pre)
            if cfg.ragged:
                ddelta = jnp.where(valid, ddelta, 0.0)
            if cfg.has_bias:
                dbias_acc = dbias_acc + ddelta
            _store_row(o["ddelta"], cfg, t, ddelta, cmask)
            lam = lam * dA
        return lam, dA_acc, dD_acc, dbias_acc

    def chunk(ci, carry):
        c = cfg.chunks - 1 - ci
        h = _load(r["bounds"].at[c], _rows_mask(cmask))
        if S == 1:
            return tile_backward(c * T, h, carry)
        barrier()  # the previous chunk's reads of the scratch are done

        def fill(s, h):
            plgpu.store(o["scratch"].at[s], h)
            return advance((c * S + s) * T, h)

        h = jax.lax.fori_loop(0, S - 1, fill, h)
        plgpu.store(o["scratch"].at[jnp.int32(S - 1)], h)
        barrier()

        def back(si, carry):
            s = S - 1 - si
            return tile_backward((c * S + s) * T, o["scratch"][s], carry)

        return jax.lax.fori_loop(0, S, back, carry)

    lam = zeros((Dc, N))
    if has_dfinal:
        lam = _load(r["dfinal"], _rows_mask(cmask))
    carry = (lam, zeros((Dc, N)), zeros((Dc,)), zeros((Dc,)))
    lam, dA_acc, dD_acc, dbias_acc = jax.lax.fori_loop(0, cfg.chunks, chunk, carry)
    _store(o["dh0"], lam, _rows_mask(cmask))
    _store(o["dA"], dA_acc, _rows_mask(cmask))
    if cfg.has_D:
        _store(o["dD"], dD_acc, cmask)
    if cfg.has_bias:
        _store(o["dbias"], dbias_acc, cmask)


def backward(inputs, bounds, gy, dfinal, cfg: Config, *, interpret):
    """Run the backward kernel.

    Args:
      inputs: as for :func:`forward` (``h0`` unused).
      bounds: the forward's ``[batch, chunks, groups, cpg, state]`` boundary states.
      gy: ``[batch, length, groups, cpg]`` cotangent of ``y``.
      dfinal: cotangent of the final state or None.

    Returns:
      dict with ``du``, ``ddelta``, ``dz`` (like their inputs), ``dB``, ``dC``
      ``[batch, length, groups, blocks, state]`` (sum over blocks), ``dA``
      ``[batch, groups, cpg, state]``, ``dD``, ``dbias`` ``[batch, groups, cpg]``
      (sum over batch), ``dh0`` ``[batch, groups, cpg, state]``; float32 except
      the first three.
    """
    u = inputs["u"]
    batch, length, groups, cpg = u.shape
    blocks = pl.cdiv(cpg, cfg.channels)
    names = _in_names(cfg, backward=True)
    args = [inputs[n] for n in names[:-2]] + [bounds, gy]
    in_specs = _specs(cfg, batch, groups, names)
    if dfinal is not None:
        args.append(dfinal)
        in_specs += _specs(cfg, batch, groups, ["state"])
    f32 = jnp.float32
    state = (batch, groups, cpg, cfg.state)
    outs = [("du", u.shape, u.dtype, "seq"), ("ddelta", u.shape, inputs["delta"].dtype, "seq")]
    if cfg.has_z:
        outs.append(("dz", u.shape, inputs["z"].dtype, "seq"))
    part = (batch, length, groups, blocks, cfg.state)
    outs += [("dB", part, f32, "part_bc"), ("dC", part, f32, "part_bc"), ("dA", state, f32, "part_state")]
    if cfg.has_D:
        outs.append(("dD", (batch, groups, cpg), f32, "part_vec"))
    if cfg.has_bias:
        outs.append(("dbias", (batch, groups, cpg), f32, "part_vec"))
    outs.append(("dh0", state, f32, "state"))
    outs.append(("scratch", (batch, groups, blocks, cfg.per_chunk, cfg.channels, cfg.state), f32, "scratch"))
    res = pl.pallas_call(
        functools.partial(_backward_kernel, cfg=cfg, has_dfinal=dfinal is not None, interpret=interpret),
        out_shape=[jax.ShapeDtypeStruct(s, d) for _, s, d, _ in outs],
        grid=_grid(cfg, batch, groups),
        in_specs=in_specs,
        out_specs=_specs(cfg, batch, groups, [k for *_, k in outs]),
        interpret=interpret,
        compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=1),
        name="selective_scan_bwd",
    )(*args)
    return {name: v for (name, *_), v in zip(outs, res) if name != "scratch"}
