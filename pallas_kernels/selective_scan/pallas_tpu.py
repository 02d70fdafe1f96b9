"""Mosaic TPU Pallas kernels for the selective scan: forward and backward.

Layout: channels on lanes, the state index on sublanes. A program owns
``channels`` channels of one group; its state is a ``[state, channels]``
float32 tile in a VMEM scratch that persists across the sequential
("arbitrary") time axis of the grid ``(batch, groups, channel blocks, time
blocks)``. Each grid step stages a ``[time, channels]`` tile of ``u``,
``delta``, ``z`` and a ``[state, time]`` tile of ``B^T``, ``C^T`` in VMEM and
walks it one step at a time: the step's row of ``u``/``delta`` is a dynamic
sublane slice, its column of ``B^T``/``C^T`` a one-hot lane reduction (no
dynamic lane indexing), broadcast over the channels.

The backward runs the time blocks in reverse: it recomputes the block's states
from the boundary state the forward stored (one per time block), keeps them in
a ``[time, state, channels]`` VMEM scratch, and walks back with the adjoint
(the same equations as :mod:`pallas_kernels.selective_scan.pallas_gpu`).
``dB``/``dC`` columns are accumulated into ``[state, time]`` tiles by one-hot
lane masks. A partial last time block is handled in the kernel: rows past the
end count as ``delta = 0`` and are never read back.

Arrays arrive in the api's grouped layout (``[batch, length, groups, cpg]``
etc., see :mod:`pallas_kernels.selective_scan.pallas_gpu`) and are brought
into the layout TPU blocks need (the last two block dimensions tile (8, 128)
or span the array): sequences ``[batch, groups, length, cpg]`` (free with one
group, Mamba's case; a copy otherwise), ``B^T``/``C^T`` and the small ones
transposed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.selective_scan.pallas_gpu import Config, sigmoid, softplus


def _t(x):  # swap the last two axes
    return jnp.swapaxes(x, -1, -2)


def _tpu_arrays(inputs, cfg):
    """The inputs in the kernels' layout: ``A^T`` ``[groups, state, cpg]``, ``B^T``, ``C^T``
    ``[batch, groups, state, length]``, ``D``/``bias`` ``[groups, 1, cpg]``, ``keep``
    ``[batch, 1, length]``, ``h0`` ``[batch, groups, state, cpg]``."""
    seq = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # noqa: E731  [b, l, g, c] -> [b, g, l, c]
    out = dict(u=seq(inputs["u"]), delta=seq(inputs["delta"]), A=_t(inputs["A"]),
               B=jnp.transpose(inputs["B"], (0, 2, 3, 1)), C=jnp.transpose(inputs["C"], (0, 2, 3, 1)))
    if cfg.has_z:
        out["z"] = seq(inputs["z"])
    for name in ("D", "bias"):
        if name in inputs:
            out[name] = inputs[name][:, None, :]
    if cfg.has_keep:
        out["keep"] = inputs["keep"][:, None, :]
    if "h0" in inputs:
        out["h0"] = _t(inputs["h0"])
    return out


def _blocks(cfg):
    return pl.cdiv(cfg.cpg, cfg.channels), pl.cdiv(cfg.length, cfg.time)


def _specs(cfg, reverse=False):
    T, Dc, N = cfg.time, cfg.channels, cfg.state
    nt = _blocks(cfg)[1]

    def tb(k):
        return nt - 1 - k if reverse else k

    return dict(
        seq=pl.BlockSpec((None, None, T, Dc), lambda b, g, j, k: (b, g, tb(k), j)),
        A=pl.BlockSpec((None, N, Dc), lambda b, g, j, k: (g, 0, j)),
        bc=pl.BlockSpec((None, None, N, T), lambda b, g, j, k: (b, g, 0, tb(k))),
        vec=pl.BlockSpec((None, 1, Dc), lambda b, g, j, k: (g, 0, j)),
        keep=pl.BlockSpec((None, 1, T), lambda b, g, j, k: (b, 0, tb(k))),
        state=pl.BlockSpec((None, None, N, Dc), lambda b, g, j, k: (b, g, 0, j)),
        bounds=pl.BlockSpec((None, None, None, N, Dc), lambda b, g, j, k: (b, tb(k), g, 0, j)),
        part_bc=pl.BlockSpec((None, None, None, N, T), lambda b, g, j, k: (b, g, j, 0, tb(k))),
        part_vec=pl.BlockSpec((None, None, 1, Dc), lambda b, g, j, k: (b, g, 0, j)),
    )


def _names(cfg):
    return (["u", "delta", "A", "B", "C"] + ["z"] * cfg.has_z + ["D"] * cfg.has_D + ["bias"] * cfg.has_bias
            + ["keep"] * cfg.has_keep)


_KIND = dict(u="seq", delta="seq", z="seq", gy="seq", A="A", B="bc", C="bc", D="vec", bias="vec",
             keep="keep", h0="state", dfinal="state", bounds="bounds")


def _channel_mask(cfg):
    """``[1, channels]``: this program's real channels (None when a block has no padding).

    A partial channel block holds garbage past the last channel; masked to zeros, it
    stays finite and cannot reach the sums over channels (``dB``, ``dC``)."""
    if cfg.cpg % cfg.channels == 0:
        return None
    lane = lax.broadcasted_iota(jnp.int32, (1, cfg.channels), 1)
    return pl.program_id(2) * cfg.channels + lane < cfg.cpg


def _masked(x, mask):
    return x if mask is None else jnp.where(mask, x, 0.0)


class _Step:
    """One time step's float32 inputs inside a block (``t`` dynamic)."""

    def __init__(self, r, cfg, t, block, lane, cmask):
        f32 = jnp.float32
        self.valid = block * cfg.time + t < cfg.length
        onehot = lane == t  # [1, time]
        row_ok = self.valid if cmask is None else jnp.logical_and(cmask, self.valid)

        def row(name):
            return jnp.where(row_ok, r[name][pl.ds(t, 1), :].astype(f32), 0.0)  # [1, channels]

        def column(name):  # [state, 1]
            col = jnp.sum(jnp.where(onehot, r[name][...].astype(f32), 0.0), axis=1, keepdims=True)
            return jnp.where(self.valid, col, 0.0)

        pre = row("delta")
        if cfg.has_bias:
            pre = pre + r["bias"][...].astype(f32)
        delta = softplus(pre) if cfg.softplus else pre
        self.pre, self.delta = pre, jnp.where(row_ok, delta, 0.0)
        self.u = row("u")
        self.z = row("z") if cfg.has_z else None
        self.B, self.C = column("B"), column("C")
        dA = jnp.exp(self.delta * _masked(r["A"][...].astype(f32), cmask))  # [state, channels]
        if cfg.has_keep:
            keep = jnp.sum(jnp.where(onehot, r["keep"][...].astype(f32), 0.0), axis=1, keepdims=True)
            dA = dA * jnp.where(self.valid, keep, 1.0)
        self.dA = dA
        self.onehot = onehot

    def advance(self, h):
        return self.dA * h + (self.delta * self.u) * self.B


def _forward_kernel(*refs, cfg: Config, save_bounds: bool, return_final: bool):
    names = _names(cfg) + ["h0"] * cfg.has_h0
    r = dict(zip(names, refs))
    outs = refs[len(names):]
    y_ref = outs[0]
    final_ref = outs[1] if return_final else None
    bounds_ref = outs[2 if return_final else 1] if save_bounds else None
    h_scr = outs[-1]
    block = pl.program_id(3)
    last = pl.num_programs(3) - 1
    lane = lax.broadcasted_iota(jnp.int32, (1, cfg.time), 1)
    cmask = _channel_mask(cfg)

    @pl.when(block == 0)
    def _():
        h_scr[...] = _masked(r["h0"][...].astype(jnp.float32), cmask) if cfg.has_h0 else jnp.zeros_like(h_scr)

    if save_bounds:
        bounds_ref[...] = h_scr[...]

    def step(t, h):
        x = _Step(r, cfg, t, block, lane, cmask)
        h = x.advance(h)
        y = jnp.sum(h * x.C, axis=0, keepdims=True)
        if cfg.has_D:
            y = y + r["D"][...].astype(jnp.float32) * x.u
        if cfg.has_z:
            y = y * x.z * sigmoid(x.z)
        y_ref[pl.ds(t, 1), :] = y.astype(y_ref.dtype)
        return h

    h = lax.fori_loop(0, cfg.time, step, h_scr[...])
    h_scr[...] = h
    if return_final:
        @pl.when(block == last)
        def _():
            final_ref[...] = h


def forward(inputs, cfg: Config, *, save_bounds, return_final, interpret=False):
    """As :func:`pallas_kernels.selective_scan.pallas_gpu.forward`; ``bounds`` come in this
    kernel's layout ``[batch, time blocks, groups, state, cpg]`` (one per ``time`` steps)."""
    a = _tpu_arrays(inputs, cfg)
    u = a["u"]
    batch, groups, _, cpg = u.shape
    nc, nt = _blocks(cfg)
    sp = _specs(cfg)
    names = _names(cfg) + ["h0"] * cfg.has_h0
    out_shape, out_specs = [jax.ShapeDtypeStruct(u.shape, u.dtype)], [sp["seq"]]
    state = (batch, groups, cfg.state, cpg)
    if return_final:
        out_shape.append(jax.ShapeDtypeStruct(state, jnp.float32))
        out_specs.append(sp["state"])
    if save_bounds:
        out_shape.append(jax.ShapeDtypeStruct((batch, nt, groups, cfg.state, cpg), jnp.float32))
        out_specs.append(sp["bounds"])
    outs = pl.pallas_call(
        functools.partial(_forward_kernel, cfg=cfg, save_bounds=save_bounds, return_final=return_final),
        out_shape=out_shape,
        grid=(batch, groups, nc, nt),
        in_specs=[sp[_KIND[n]] for n in names],
        out_specs=out_specs,
        scratch_shapes=[pltpu.VMEM((cfg.state, cfg.channels), jnp.float32)],
        interpret=interpret,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        name="selective_scan_fwd",
    )(*[a[n] for n in names])
    final = _t(outs[1]) if return_final else None
    bounds = outs[-1] if save_bounds else None
    return jnp.transpose(outs[0], (0, 2, 1, 3)), final, bounds


def _backward_kernel(*refs, cfg: Config, has_dfinal: bool):
    names = _names(cfg) + ["bounds", "gy"] + ["dfinal"] * has_dfinal
    r = dict(zip(names, refs))
    out_names = (["du", "ddelta"] + ["dz"] * cfg.has_z + ["dB", "dC", "dA"] + ["dD"] * cfg.has_D
                 + ["dbias"] * cfg.has_bias + ["dh0"])
    o = dict(zip(out_names, refs[len(names):]))
    lam_scr, hs_scr = refs[len(names) + len(out_names):]
    f32 = jnp.float32
    k = pl.program_id(3)
    block = pl.num_programs(3) - 1 - k
    lane = lax.broadcasted_iota(jnp.int32, (1, cfg.time), 1)
    cmask = _channel_mask(cfg)
    A = _masked(r["A"][...].astype(f32), cmask)
    D = _masked(r["D"][...].astype(f32), cmask) if cfg.has_D else None

    @pl.when(k == 0)
    def _():
        lam_scr[...] = _masked(r["dfinal"][...].astype(f32), cmask) if has_dfinal else jnp.zeros_like(lam_scr)
        o["dA"][...] = jnp.zeros_like(o["dA"])
        for name in ("dD", "dbias"):
            if name in o:
                o[name][...] = jnp.zeros_like(o[name])

    def fwd(t, h):
        hs_scr[t] = h  # the state before step t
        return _Step(r, cfg, t, block, lane, cmask).advance(h)

    lax.fori_loop(0, cfg.time, fwd, _masked(r["bounds"][...].astype(f32), cmask))

    def bwd(i, carry):
        lam, dB, dC, dA_acc, dD_acc, dbias_acc = carry
        t = cfg.time - 1 - i
        x = _Step(r, cfg, t, block, lane, cmask)
        h_prev = hs_scr[t]
        h = x.advance(h_prev)
        g = _masked(jnp.where(x.valid, r["gy"][pl.ds(t, 1), :].astype(f32), 0.0), cmask)  # [1, channels]
        if cfg.has_z:
            sig = sigmoid(x.z)
            y = jnp.sum(h * x.C, axis=0, keepdims=True)
            if cfg.has_D:
                y = y + D * x.u
            o["dz"][pl.ds(t, 1), :] = (g * y * sig * (1.0 + x.z * (1.0 - sig))).astype(o["dz"].dtype)
            g = g * x.z * sig
        lam = lam + x.C * g
        dC = dC + jnp.where(x.onehot, jnp.sum(h * g, axis=1, keepdims=True), 0.0)
        lam_b = jnp.sum(lam * x.B, axis=0, keepdims=True)
        t1 = lam * x.dA * h_prev
        ddelta = jnp.sum(t1 * A, axis=0, keepdims=True) + x.u * lam_b
        dA_acc = dA_acc + t1 * x.delta
        du = x.delta * lam_b
        if cfg.has_D:
            du = du + D * g
            dD_acc = dD_acc + g * x.u
        o["du"][pl.ds(t, 1), :] = du.astype(o["du"].dtype)
        dB = dB + jnp.where(x.onehot, jnp.sum(lam * (x.delta * x.u), axis=1, keepdims=True), 0.0)
        if cfg.softplus:
            ddelta = ddelta * sigmoid(x.pre)
        ddelta = jnp.where(x.valid, ddelta, 0.0)
        if cfg.has_bias:
            dbias_acc = dbias_acc + ddelta
        o["ddelta"][pl.ds(t, 1), :] = ddelta.astype(o["ddelta"].dtype)
        return lam * x.dA, dB, dC, dA_acc, dD_acc, dbias_acc

    N, T, Dc = cfg.state, cfg.time, cfg.channels
    zeros = functools.partial(jnp.zeros, dtype=f32)
    carry = (lam_scr[...], zeros((N, T)), zeros((N, T)), zeros((N, Dc)), zeros((1, Dc)), zeros((1, Dc)))
    lam, dB, dC, dA_acc, dD_acc, dbias_acc = lax.fori_loop(0, cfg.time, bwd, carry)
    lam_scr[...] = lam
    o["dB"][...] = dB
    o["dC"][...] = dC
    o["dA"][...] += dA_acc
    if cfg.has_D:
        o["dD"][...] += dD_acc
    if cfg.has_bias:
        o["dbias"][...] += dbias_acc

    @pl.when(k == pl.num_programs(3) - 1)
    def _():
        o["dh0"][...] = lam


def backward(inputs, bounds, gy, dfinal, cfg: Config, *, interpret=False):
    """As :func:`pallas_kernels.selective_scan.pallas_gpu.backward` (same returns and layouts)."""
    a = _tpu_arrays(inputs, cfg)
    u = a["u"]
    batch, groups, length, cpg = u.shape
    nc, nt = _blocks(cfg)
    sp = _specs(cfg, reverse=True)
    names = _names(cfg) + ["bounds", "gy"]
    args = [a[n] for n in _names(cfg)] + [bounds, jnp.transpose(gy, (0, 2, 1, 3))]
    if dfinal is not None:
        names.append("dfinal")
        args.append(_t(dfinal))
    f32 = jnp.float32
    state = (batch, groups, cfg.state, cpg)
    vec = (batch, groups, 1, cpg)
    outs = [("du", u.shape, u.dtype, "seq"), ("ddelta", u.shape, a["delta"].dtype, "seq")]
    if cfg.has_z:
        outs.append(("dz", u.shape, a["z"].dtype, "seq"))
    part = (batch, groups, nc, cfg.state, length)
    outs += [("dB", part, f32, "part_bc"), ("dC", part, f32, "part_bc"), ("dA", state, f32, "state")]
    if cfg.has_D:
        outs.append(("dD", vec, f32, "part_vec"))
    if cfg.has_bias:
        outs.append(("dbias", vec, f32, "part_vec"))
    outs.append(("dh0", state, f32, "state"))
    res = pl.pallas_call(
        functools.partial(_backward_kernel, cfg=cfg, has_dfinal=dfinal is not None),
        out_shape=[jax.ShapeDtypeStruct(s, d) for _, s, d, _ in outs],
        grid=(batch, groups, nc, nt),
        in_specs=[sp[_KIND[n]] for n in names],
        out_specs=[sp[kind] for *_, kind in outs],
        scratch_shapes=[pltpu.VMEM((cfg.state, cfg.channels), f32),
                        pltpu.VMEM((cfg.time, cfg.state, cfg.channels), f32)],
        interpret=interpret,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        name="selective_scan_bwd",
    )(*args)
    g = {name: v for (name, *_), v in zip(outs, res)}
    # Back to the api's layouts: sequences [b, l, g, cpg]; dB/dC [b, l, g, blocks, n];
    # states [b, g, cpg, n]; vectors [b, g, cpg].
    for name in ("du", "ddelta", "dz"):
        if name in g:
            g[name] = jnp.transpose(g[name], (0, 2, 1, 3))
    for name in ("dB", "dC"):
        g[name] = jnp.transpose(g[name], (0, 4, 1, 2, 3))
    for name in ("dA", "dh0"):
        g[name] = _t(g[name])
    for name in ("dD", "dbias"):
        if name in g:
            g[name] = g[name][:, :, 0, :]
    return g
