"""Mosaic TPU kernels of the FFT convolution: dense DFT levels on the MXU, tiles staged in VMEM.

Same passes and signatures as :mod:`pallas_kernels.fftconv.pallas_gpu` (the
API drives either), with three TPU choices:

- every level is one dense DFT matmul ``F[s, s] @ X[s, 128]`` (``s <= 256``,
  MXU-shaped; ``plan.levels`` are dense), so no tile is reshaped in registers;
- tiles are ``BlockSpec`` blocks of ``128`` lanes; channels are padded to a
  multiple of 128 and the sequences' pairing and zero padding are XLA glue
  around the kernels (``Seq`` inputs and outputs), not load masks;
- the backward's mid pass runs the pairs along a sequential ("arbitrary") grid
  axis with the filter-gradient accumulator in VMEM scratch.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from pallas_kernels.fftconv import tile_fft
from pallas_kernels.fftconv.plan import Plan, Seq, dft_operands, level_twiddles

LANES = 128


def why_not(shape, n, cfg):
    """Why the TPU kernels cannot serve a ``[batch, length, channels]`` input with FFT size ``n``."""
    if cfg.get("precision", "bf16x3") == "f32":
        return "the TPU kernels run bf16 / split-bf16 matmuls (precision 'f32' is GPU only)"
    return None


def _padded(channels):
    return -(-channels // LANES) * LANES


def plane_channels(plan: Plan) -> int:
    """Channels of the complex planes between passes (padded to whole lane tiles)."""
    return _padded(plan.channels)


def max_groups(plan: Plan) -> int:
    """The backward's mid pass accumulates every pair in one program (sequential grid axis)."""
    return 1


# ----------------------------------------------------------------------------------------------
# XLA glue: Seq arrays <-> complex planes [pairs, n, padded channels].


def _seq_to_planes(src, seq: Seq, n, channels):
    x = src.reshape(src.shape[0], -1, channels).astype(jnp.float32)
    t = jnp.arange(n)
    rows = (t + seq.shift) % n
    x = jnp.where((rows < seq.rows)[None, :, None], jnp.take(x, jnp.minimum(rows, seq.rows - 1), axis=1), 0.0)
    x = jnp.pad(x, [(0, 0), (0, 0), (0, _padded(channels) - channels)])
    if not seq.paired:
        return x, jnp.zeros_like(x)
    if x.shape[0] % 2:
        x = jnp.pad(x, [(0, 1), (0, 0), (0, 0)])
    return x[0::2], x[1::2]


def _planes_to_seq(planes, seq: Seq, out, n, channels, bias=None, skip=None):
    rows = (jnp.arange(seq.rows) - seq.shift) % n  # row r of the array is time (r - shift) mod n
    re, im = (jnp.take(v[:, :, :channels], rows, axis=1) for v in planes)
    if seq.paired:
        y = jnp.stack([re, im], axis=1).reshape(-1, seq.rows, channels)[: seq.batch]
    else:
        y = re
    if bias is not None:
        y = y + bias.astype(jnp.float32) * skip.reshape(y.shape).astype(jnp.float32)
    return y.reshape(out.shape).astype(out.dtype)


# ----------------------------------------------------------------------------------------------
# Kernels on planes.


def _mats_specs(mats):
    def whole(x):
        return pl.BlockSpec(x.shape, lambda *_: (0,) * x.ndim)

    return jax.tree_util.tree_map(whole, mats)


def _call(kernel, inputs, in_specs, outputs, out_specs, grid, semantics, name, interpret, scratch=()):
    flat_in, tree_in = jax.tree_util.tree_flatten(inputs)
    flat_specs = jax.tree_util.tree_leaves(in_specs, is_leaf=lambda s: isinstance(s, pl.BlockSpec))
    flat_out, tree_out = jax.tree_util.tree_flatten(outputs)
    flat_out_specs = jax.tree_util.tree_leaves(out_specs, is_leaf=lambda s: isinstance(s, pl.BlockSpec))
    n_in, n_out = len(flat_in), len(flat_out)

    def body(*refs):
        ins = jax.tree_util.tree_unflatten(tree_in, refs[:n_in])
        outs = jax.tree_util.tree_unflatten(tree_out, refs[n_in : n_in + n_out])
        kernel(ins, outs, *refs[n_in + n_out :])

    result = pl.pallas_call(
        body,
        out_shape=flat_out,
        grid=grid,
        in_specs=flat_specs,
        out_specs=flat_out_specs,
        scratch_shapes=list(scratch),
        interpret=interpret,
        compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
        name=name,
    )(*flat_in)
    return jax.tree_util.tree_unflatten(tree_out, result)


def _twiddle_inputs(plan: Plan, i: int, tile_index):
    """Inputs + specs for the twiddle of level ``i-1`` applied in level ``i`` (empty at level 0).

    ``tile_index(*grid) -> (slab, column block)``.
    """
    if i == 0:
        return {}, {}
    prev, size = plan.levels[i - 1].size, plan.levels[i].size
    row_re, row_im, col_re, col_im = level_twiddles(plan, i - 1)
    cp = _padded(plan.channels)
    inputs = {"row": (row_re[..., None], row_im[..., None])}

    def row_map(*g):
        slab, _ = tile_index(*g)
        return (lax.rem(slab, prev), 0, 0)

    specs = {"row": (pl.BlockSpec((None, size, 1), row_map),) * 2}
    if i < len(plan.levels) - 1:
        inputs["col"] = (col_re[..., None, None], col_im[..., None, None])

        def col_map(*g):
            slab, j = tile_index(*g)
            return (lax.rem(slab, prev), lax.div(j * LANES, cp), 0, 0)

        specs["col"] = (pl.BlockSpec((None, None, 1, 1), col_map),) * 2
    return inputs, specs


def _tw_value(ins):
    if "row" not in ins:
        return None
    tw = tuple(r[...] for r in ins["row"])  # [s, 1]
    if "col" in ins:
        tw = tile_fft.cmul(tw, tuple(c[...] for c in ins["col"]))  # [1, 1] broadcast
    return tw


def _dft(ins, x, inverse, precision):
    mats = jax.tree_util.tree_map(lambda r: r[...], ins["mats"])
    return tile_fft.cmatmul(x, mats, "left", inverse=inverse, precision=precision)


def _planes(shape):
    return (jax.ShapeDtypeStruct(shape, jnp.float32),) * 2


def _level_pass(plan: Plan, i: int, x, pairs: int, inverse: bool, interpret):
    level = plan.levels[i]
    cp = _padded(plan.channels)
    slabs, cols = pairs * plan.before(i), plan.rest(i) * cp
    x = tuple(v.reshape(slabs, level.size, cols) for v in x)
    tile = pl.BlockSpec((None, level.size, LANES), lambda j, s: (s, 0, j))
    tw_in, tw_specs = _twiddle_inputs(plan, i, lambda j, s: (s, j))
    inputs = dict(tw_in, x=x, mats=dft_operands(level.size, plan.precision))
    specs = dict(tw_specs, x=(tile, tile), mats=_mats_specs(inputs["mats"]))

    def kernel(ins, outs):
        tw = _tw_value(ins)
        v = tuple(r[...] for r in ins["x"])
        if not inverse and tw is not None:
            v = tile_fft.cmul(v, tw)
        v = _dft(ins, v, inverse, plan.precision)
        if inverse and tw is not None:
            v = tile_fft.cmul_conj(v, tw)
        for r, val in zip(outs["out"], v):
            r[...] = val

    outputs = {"out": _planes((slabs, level.size, cols))}
    grid = (cols // LANES, slabs)
    name = f"fftconv_level{i}_{'inv' if inverse else 'fwd'}"
    return _call(kernel, inputs, specs, outputs, {"out": (tile, tile)}, grid, ("parallel", "parallel"), name,
                 interpret)["out"]


def forward_level(plan: Plan, i: int, src, pairs: int, *, seq=None, interpret=False):
    """As :func:`pallas_kernels.fftconv.pallas_gpu.forward_level` (planes padded to 128 lanes)."""
    x = _seq_to_planes(src, seq, plan.n, plan.channels) if seq is not None else src
    return _level_pass(plan, i, x, pairs, False, interpret)


def inverse_level(plan: Plan, i: int, src, pairs: int, *, out=None, seq=None, bias=None, skip=None,
                  interpret=False):
    """As :func:`pallas_kernels.fftconv.pallas_gpu.inverse_level`."""
    x = _level_pass(plan, i, src, pairs, True, interpret)
    if seq is None:
        return x
    return _planes_to_seq(tuple(v.reshape(pairs, plan.n, -1) for v in x), seq, out, plan.n, plan.channels,
                          bias, skip)


def spectrum_shape(plan: Plan):
    """Shape of one plane of the filter spectrum: ``[Q_m, s, padded channels]``."""
    return (plan.before(len(plan.levels) - 1), plan.mid.size, _padded(plan.channels))


def _mid_inputs(plan, x, pairs, slab_of):
    m = len(plan.levels) - 1
    level, cp = plan.mid, _padded(plan.channels)
    q = plan.before(m)
    x = tuple(v.reshape(pairs * q, level.size, cp) for v in x)
    tw_in, tw_specs = _twiddle_inputs(plan, m, lambda *g: (slab_of(*g), 0))
    inputs = dict(tw_in, mats=dft_operands(level.size, plan.precision))
    specs = dict(tw_specs, mats=_mats_specs(inputs["mats"]))
    return x, inputs, specs, q, cp


def mid(plan: Plan, src, pairs: int, *, mode, spectrum=None, conj_filter=False, out=None, seq=None,
        bias=None, interpret=False):
    """As :func:`pallas_kernels.fftconv.pallas_gpu.mid`."""
    x = _seq_to_planes(src, seq, plan.n, plan.channels) if seq is not None else src
    level = plan.mid
    x, inputs, specs, q, cp = _mid_inputs(plan, x, pairs, lambda c, p, qq: p * plan.before(len(plan.levels) - 1) + qq)
    tile = pl.BlockSpec((None, level.size, LANES), lambda c, p, qq: (p * q + qq, 0, c))
    h_tile = pl.BlockSpec((None, level.size, LANES), lambda c, p, qq: (qq, 0, c))
    inputs["x"], specs["x"] = x, (tile, tile)
    scale = 1.0 / plan.n
    if mode == "conv":
        inputs["h"], specs["h"] = spectrum, (h_tile, h_tile)

    def kernel(ins, outs):
        tw = _tw_value(ins)
        v = tuple(r[...] for r in ins["x"])
        if tw is not None:
            v = tile_fft.cmul(v, tw)
        z = _dft(ins, v, False, plan.precision)
        if mode == "spectrum":
            for r, val in zip(outs["out"], z):
                r[...] = val * scale
            return
        h = tuple(r[...] for r in ins["h"])
        z = tile_fft.cmul_conj(z, h) if conj_filter else tile_fft.cmul(z, h)
        v = _dft(ins, z, True, plan.precision)
        if tw is not None:
            v = tile_fft.cmul_conj(v, tw)
        for r, val in zip(outs["out"], v):
            r[...] = val

    if mode == "spectrum":
        outputs, out_specs = {"out": _planes(spectrum_shape(plan))}, {"out": (h_tile, h_tile)}
    else:
        outputs, out_specs = {"out": _planes((pairs * q, level.size, cp))}, {"out": (tile, tile)}
    grid = (cp // LANES, pairs, q)
    result = _call(kernel, inputs, specs, outputs, out_specs, grid, ("parallel",) * 3, f"fftconv_mid_{mode}",
                   interpret)["out"]
    if mode == "spectrum" or seq is None:
        return result
    return _planes_to_seq(tuple(v.reshape(pairs, plan.n, cp) for v in result), seq, out, plan.n, plan.channels,
                          bias, src)


def mid_backward(plan: Plan, grad, primal, spectrum, pairs: int, groups: int, *, du_out=None, dh_out=None,
                 seq_grad=None, seq_primal=None, seq_dh=None, bias=None, interpret=False):
    """As :func:`pallas_kernels.fftconv.pallas_gpu.mid_backward`; pairs run sequentially (one group)."""
    m = len(plan.levels) - 1
    g_planes = _seq_to_planes(grad, seq_grad, plan.n, plan.channels) if seq_grad is not None else grad
    u_planes = _seq_to_planes(primal, seq_primal, plan.n, plan.channels) if seq_primal is not None else primal
    level = plan.mid
    q = plan.before(m)
    g_planes, inputs, specs, _, cp = _mid_inputs(plan, g_planes, pairs, lambda c, qq, p: qq)
    u_planes = tuple(v.reshape(pairs * q, level.size, cp) for v in u_planes)
    tile = pl.BlockSpec((None, level.size, LANES), lambda c, qq, p: (p * q + qq, 0, c))
    acc_tile = pl.BlockSpec((None, level.size, LANES), lambda c, qq, p: (qq, 0, c))
    inputs.update(grad=g_planes, primal=u_planes, h=spectrum)
    specs.update(grad=(tile, tile), primal=(tile, tile), h=(acc_tile, acc_tile))
    scale = 1.0 / plan.n

    def kernel(ins, outs, acc):
        p = pl.program_id(2)

        @pl.when(p == 0)
        def _():
            acc[...] = jnp.zeros(acc.shape, jnp.float32)

        tw = _tw_value(ins)

        def load(key):
            v = tuple(r[...] for r in ins[key])
            return tile_fft.cmul(v, tw) if tw is not None else v

        def finish(v):
            return tile_fft.cmul_conj(v, tw) if tw is not None else v

        zg = _dft(ins, load("grad"), False, plan.precision)
        h = tuple(r[...] for r in ins["h"])
        du = finish(_dft(ins, tile_fft.cmul_conj(zg, h), True, plan.precision))
        for r, val in zip(outs["du"], du):
            r[...] = val
        zu = _dft(ins, load("primal"), False, plan.precision)
        prod = tile_fft.cmul_conj(zg, zu)
        acc[0] = acc[0] + prod[0]
        acc[1] = acc[1] + prod[1]

        @pl.when(p == pl.num_programs(2) - 1)
        def _():
            dk = finish(_dft(ins, (acc[0] * scale, acc[1] * scale), True, plan.precision))
            for r, val in zip(outs["dk"], dk):
                r[...] = val

    outputs = {"du": _planes((pairs * q, level.size, cp)), "dk": _planes((q, level.size, cp))}
    out_specs = {"du": (tile, tile), "dk": (acc_tile, acc_tile)}
    grid = (cp // LANES, q, pairs)
    result = _call(kernel, inputs, specs, outputs, out_specs, grid, ("parallel", "parallel", "arbitrary"),
                   "fftconv_mid_bwd", interpret, scratch=[pltpu.VMEM((2, level.size, LANES), jnp.float32)])
    du, dk = result["du"], result["dk"]
    if m == 0:
        du = _planes_to_seq(tuple(v.reshape(pairs, plan.n, cp) for v in du), seq_grad, du_out, plan.n,
                            plan.channels, bias, grad)
        dk = _planes_to_seq(tuple(v.reshape(1, plan.n, cp) for v in dk), seq_dh, dh_out, plan.n, plan.channels)
    return du, dk
