"""Triton-backend Pallas kernels of the FFT convolution: one kernel per level pass.

Data between passes is a complex float32 sequence per *pair* (``re = u[2p]``,
``im = u[2p+1]``: a convolution with a real filter maps the pair to the pair of
outputs, so two real sequences share one complex FFT), stored as two planes
``[P * Q_i, s_i, R_i * C]`` (the same ``[P, N, C]`` buffer viewed per level,
see :mod:`pallas_kernels.fftconv.plan`). Every kernel moves ``[s, W]`` tiles
with computed row/column indices, so a tile may read any strided pattern and
the zero padding of the sequences is a load mask, never a copy.

Kernels:

- :func:`forward_level` -- level ``i < m``: (twiddle of level ``i-1``), DFT, store.
- :func:`inverse_level` -- its inverse: inverse DFT, (conjugate twiddle), store;
  level 0 writes the real outputs (``+ bias * u``) straight into ``[B, L, C]``.
- :func:`mid` -- the last level: DFT, then either store the spectrum (the filter,
  ``mode="spectrum"``) or multiply by the filter spectrum and run the inverse
  (``mode="conv"``). With a single level this is the whole convolution in one pass.
- :func:`mid_backward` -- the backward's last level: per pair, ``du`` (filter
  conjugated) and the accumulated ``sum_p G_p conj(U_p)`` for ``dk``, over a
  group of pairs per program.

Grids put the axis that shares data fastest (pairs share the filter tile).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

from pallas_kernels.fftconv import tile_fft
from pallas_kernels.fftconv.plan import Plan, Seq, dft_operands, level_twiddles, stage_twiddle


# ----------------------------------------------------------------------------------------------
# Operands shared by the kernels of one plan.


def _level_operands(plan: Plan, i: int):
    level = plan.levels[i]
    ops = {"mats_a": dft_operands(level.a, plan.precision)}
    if not level.dense:
        ops["mats_b"] = dft_operands(level.b, plan.precision)
        ops["stage_tw"] = stage_twiddle(level)
    if i > 0:
        row_re, row_im, col_re, col_im = level_twiddles(plan, i - 1)
        ops["row_tw"] = (row_re, row_im)
        if i < len(plan.levels) - 1:
            ops["col_tw"] = (col_re, col_im)
    return ops


def _constants(ins):
    """Load the DFT matrices and the stage twiddle (small, read whole by every program)."""
    return tuple(jax.tree_util.tree_map(lambda r: r[...], ins[key]) if key in ins else None
                 for key in ("mats_a", "mats_b", "stage_tw"))


def _fft(consts, level, x, precision):
    return tile_fft.forward(x, level, *consts, precision=precision)


def _ifft(consts, level, z, precision):
    return tile_fft.inverse(z, level, *consts, precision=precision)


def _twiddle(ins, slab, prev_size, rows, cols, channels):
    """The twiddle of the previous level for a time tile (``None`` at level 0)."""
    if "row_tw" not in ins:
        return None
    k_prev = lax.rem(slab, prev_size)
    tw = tuple(r[k_prev, rows] for r in ins["row_tw"])
    if "col_tw" in ins:
        col = tuple(c[k_prev, lax.div(cols, channels)] for c in ins["col_tw"])
        tw = tile_fft.cmul(tw, col)
    return tw


def _seq_index(spec: Seq, n, rest, channels, rows, cols):
    """``(flat, channel, valid)`` of a tile in a ``Seq`` array viewed as ``[batch, rows * C]``.

    Time ``t = rows * rest + cols // C`` and channel ``cols % C``; without a
    shift the flat offset is simply ``rows * rest * C + cols`` (contiguous along
    the columns, which keeps the loads coalesced and vectorised).
    """
    valid = cols < rest * channels
    if spec.shift:
        t = lax.rem(rows * rest + lax.div(cols, channels) + spec.shift, n)
        c = lax.rem(cols, channels)
        return t * channels + c, c, valid & (t < spec.rows)
    flat = rows * (rest * channels) + cols
    c = cols if rest == 1 else lax.rem(cols, channels)
    return flat, c, valid & (flat < spec.rows * channels)


def _load_seq(ref, spec: Seq, p, index):
    flat, _, valid = index
    b0 = 2 * p if spec.paired else p
    re = plt.load(ref.at[b0, flat], mask=valid, other=0.0).astype(jnp.float32)
    if spec.paired:
        im = plt.load(ref.at[b0 + 1, flat], mask=valid & (b0 + 1 < spec.batch), other=0.0)
        im = im.astype(jnp.float32)
    else:
        im = jnp.zeros_like(re)
    return re, im


def _store_seq(ref, spec: Seq, p, index, x, bias=None, skip=None):
    """Store ``x``; with ``bias``, add ``bias[c] * skip`` (``skip`` a paired input ``Seq`` ref)."""
    flat, c, valid = index
    b0 = 2 * p if spec.paired else p
    re, im = x
    if bias is not None:
        w = plt.load(bias.at[c], mask=c < bias.shape[0], other=0.0).astype(jnp.float32)
        s_re, s_im = _load_seq(skip, spec, p, index)
        re, im = re + w * s_re, im + w * s_im
    plt.store(ref.at[b0, flat], re.astype(ref.dtype), mask=valid)
    if spec.paired:
        plt.store(ref.at[b0 + 1, flat], im.astype(ref.dtype), mask=valid & (b0 + 1 < spec.batch))


def _load_planes(refs, slab, rows, cols, mask=None):
    if mask is None:
        return tuple(r[slab, rows, cols] for r in refs)
    return tuple(plt.load(r.at[slab, rows, cols], mask=mask, other=0.0) for r in refs)


def _store_planes(refs, slab, rows, cols, x, mask=None):
    for r, v in zip(refs, x):
        if mask is None:
            r[slab, rows, cols] = v
        else:
            plt.store(r.at[slab, rows, cols], v, mask=mask)


def _call(kernel, inputs, outputs, grid, plan, name, interpret):
    """``pallas_call`` over dicts of inputs and output shapes (flattened in key order)."""
    flat_in, tree_in = jax.tree_util.tree_flatten(inputs)
    flat_out, tree_out = jax.tree_util.tree_flatten(outputs)

    def body(*refs):
        ins = jax.tree_util.tree_unflatten(tree_in, refs[: len(flat_in)])
        outs = jax.tree_util.tree_unflatten(tree_out, refs[len(flat_in) :])
        kernel(ins, outs)

    result = pl.pallas_call(
        body,
        out_shape=flat_out,
        grid=grid,
        interpret=interpret,
        compiler_params=plt.CompilerParams(num_warps=plan.num_warps, num_stages=1),
        name=name,
    )(*flat_in)
    return jax.tree_util.tree_unflatten(tree_out, result)


def plane_channels(plan: Plan) -> int:
    """Channels of the complex planes between passes."""
    return plan.channels


def max_groups(plan: Plan) -> int:
    """Any number of pair groups (each writes its own partial filter gradient)."""
    return 1 << 30


def _planes_shape(rows, cols, slabs):
    return (jax.ShapeDtypeStruct((slabs, rows, cols), jnp.float32),) * 2


# ----------------------------------------------------------------------------------------------
# Outer levels.


def forward_level(plan: Plan, i: int, src, pairs: int, *, seq: Optional[Seq] = None, interpret=False):
    """Level ``i < m`` forward: ``src`` is a ``Seq`` array (``i == 0``) or planes of level ``i``.

    Returns the planes ``[pairs * Q_i, s_i, R_i * C]`` (frequency ``k_i`` as the row).
    """
    level, channels = plan.levels[i], plan.channels
    rest, width = plan.rest(i), level.cols
    slabs = pairs * plan.before(i)
    prev = plan.levels[i - 1].size if i else 1
    ops = _level_operands(plan, i)

    def kernel(ins, outs):
        consts = _constants(ins)
        j, slab = pl.program_id(0), pl.program_id(1)
        rows, cols = tile_fft.time_index(level, width)
        cols = cols + j * width
        if seq is not None:
            x = _load_seq(ins["src"], seq, slab, _seq_index(seq, plan.n, rest, channels, rows, cols))
        else:
            x = _load_planes(ins["src"], slab, rows, cols)
        tw = _twiddle(ins, slab, prev, rows, cols, channels)
        if tw is not None:
            x = tile_fft.cmul(x, tw)
        z = _fft(consts, level, x, plan.precision)
        f_rows, f_cols = tile_fft.freq_index(level, width)
        _store_planes(outs["out"], slab, f_rows, f_cols + j * width, z)

    inputs = dict(ops, src=src)
    outputs = {"out": _planes_shape(level.size, rest * channels, slabs)}
    grid = (rest * channels // width, slabs)
    return _call(kernel, inputs, outputs, grid, plan, f"fftconv_level{i}_fwd", interpret)["out"]


def inverse_level(plan: Plan, i: int, src, pairs: int, *, out=None, seq: Optional[Seq] = None,
                  bias=None, skip=None, interpret=False):
    """Inverse of :func:`forward_level`. Level 0 writes ``out`` (a ``ShapeDtypeStruct``) through ``seq``."""
    level, channels = plan.levels[i], plan.channels
    rest, width = plan.rest(i), level.cols
    slabs = pairs * plan.before(i)
    prev = plan.levels[i - 1].size if i else 1
    ops = _level_operands(plan, i)

    def kernel(ins, outs):
        consts = _constants(ins)
        j, slab = pl.program_id(0), pl.program_id(1)
        f_rows, f_cols = tile_fft.freq_index(level, width)
        z = _load_planes(ins["src"], slab, f_rows, f_cols + j * width)
        x = _ifft(consts, level, z, plan.precision)
        rows, cols = tile_fft.time_index(level, width)
        cols = cols + j * width
        tw = _twiddle(ins, slab, prev, rows, cols, channels)
        if tw is not None:
            x = tile_fft.cmul_conj(x, tw)
        if seq is not None:
            index = _seq_index(seq, plan.n, rest, channels, rows, cols)
            _store_seq(outs["out"], seq, slab, index, x, ins.get("bias"), ins.get("skip"))
        else:
            _store_planes(outs["out"], slab, rows, cols, x)

    inputs = dict(ops, src=src)
    if bias is not None:
        inputs.update(bias=bias, skip=skip)
    outputs = {"out": out if seq is not None else _planes_shape(level.size, rest * channels, slabs)}
    grid = (rest * channels // width, slabs)
    return _call(kernel, inputs, outputs, grid, plan, f"fftconv_level{i}_inv", interpret)["out"]


# ----------------------------------------------------------------------------------------------
# The mid level.


def _filter_index(level, width, c0):
    """Indices of a frequency tile in the filter-spectrum array (see :func:`spectrum_shape`)."""
    if level.dense:
        rows, cols = tile_fft.freq_index(level, width)
        return (rows, cols + c0), cols + c0
    b, a = level.b, level.a
    kb = lax.broadcasted_iota(jnp.int32, (b, 1, 1), 0)
    c = lax.broadcasted_iota(jnp.int32, (1, width, 1), 1) + c0
    ka = lax.broadcasted_iota(jnp.int32, (1, 1, a), 2)
    return (kb, c, ka), c


def spectrum_shape(plan: Plan):
    """Shape of one plane of the filter spectrum: ``[Q_m, s, C]`` (dense) or ``[Q_m, b, C, a]``."""
    level, q = plan.mid, plan.before(len(plan.levels) - 1)
    if level.dense:
        return (q, level.size, plan.channels)
    return (q, level.b, plan.channels, level.a)


def _mid_setup(plan):
    m = len(plan.levels) - 1
    level = plan.mid
    return m, level, plan.levels[m - 1].size if m else 1, _level_operands(plan, m)


def _mid_load(ins, key, plan, level, seq, p, slab, rows, cols, prev):
    channels = plan.channels
    if seq is not None:
        x = _load_seq(ins[key], seq, p, _seq_index(seq, plan.n, 1, channels, rows, cols))
    else:
        x = _load_planes(ins[key], slab, rows, cols, mask=cols < channels)
    tw = _twiddle(ins, slab, prev, rows, cols, channels)
    return (tile_fft.cmul(x, tw) if tw is not None else x), tw


def _mid_store(outs, key, plan, seq, p, slab, rows, cols, x, tw, bias=None, skip=None):
    if tw is not None:
        x = tile_fft.cmul_conj(x, tw)
    if seq is not None:
        index = _seq_index(seq, plan.n, 1, plan.channels, rows, cols)
        _store_seq(outs[key], seq, p, index, x, bias, skip)
    else:
        _store_planes(outs[key], slab, rows, cols, x, mask=cols < plan.channels)


def mid(plan: Plan, src, pairs: int, *, mode: str, spectrum=None, conj_filter=False, out=None,
        seq: Optional[Seq] = None, bias=None, interpret=False):
    """The last level. ``mode="spectrum"``: return the filter spectrum planes (scaled by 1/N).

    ``mode="conv"``: multiply by ``spectrum`` (conjugated if ``conj_filter``),
    inverse, and return planes (``m > 0``) or write ``out`` through ``seq``
    (``m == 0``, ``+ bias * src`` if ``bias``).
    """
    m, level, prev, ops = _mid_setup(plan)
    width, channels = level.cols, plan.channels
    q_size = plan.before(m)
    scale = 1.0 / plan.n

    def kernel(ins, outs):
        consts = _constants(ins)
        p, cb, q = pl.program_id(0), pl.program_id(1), pl.program_id(2)
        slab = p * q_size + q
        rows, cols = tile_fft.time_index(level, width)
        cols = cols + cb * width
        x, tw = _mid_load(ins, "src", plan, level, seq, p, slab, rows, cols, prev)
        z = _fft(consts, level, x, plan.precision)
        h_index, h_cols = _filter_index(level, width, cb * width)
        h_mask = h_cols < channels
        if mode == "spectrum":
            for r, v in zip(outs["out"], z):
                plt.store(r.at[(q, *h_index)], v * scale, mask=h_mask)
            return
        h = tuple(plt.load(r.at[(q, *h_index)], mask=h_mask, other=0.0) for r in ins["spectrum"])
        z = tile_fft.cmul_conj(z, h) if conj_filter else tile_fft.cmul(z, h)
        x = _ifft(consts, level, z, plan.precision)
        _mid_store(outs, "out", plan, seq, p, slab, rows, cols, x, tw, ins.get("bias"), ins.get("src"))

    inputs = dict(ops, src=src)
    if mode == "spectrum":
        outputs = {"out": (jax.ShapeDtypeStruct(spectrum_shape(plan), jnp.float32),) * 2}
    else:
        inputs["spectrum"] = spectrum
        if bias is not None:
            inputs["bias"] = bias
        outputs = {"out": out if seq is not None else _planes_shape(level.size, channels, pairs * q_size)}
    grid = (pairs, pl.cdiv(channels, width), q_size)
    return _call(kernel, inputs, outputs, grid, plan, f"fftconv_mid_{mode}", interpret)["out"]


def mid_backward(plan: Plan, grad, primal, spectrum, pairs: int, groups: int, *, du_out=None,
                 dh_out=None, seq_grad: Optional[Seq] = None, seq_primal: Optional[Seq] = None,
                 seq_dh: Optional[Seq] = None, bias=None, interpret=False):
    """Backward of the last level, ``groups`` programs per tile (``pairs % groups == 0``).

    Per pair: ``du = ifft(G conj(H))`` (``+ bias * g`` when written through
    ``seq_grad``); per group: ``ifft(sum_p G_p conj(U_p)) / N``, whose real part
    (summed over groups and the outer inverse levels) is the filter's gradient.
    Returns ``(du, dk_part)``: planes, or the ``du_out`` / ``dh_out`` arrays
    when ``m == 0``.
    """
    m, level, prev, ops = _mid_setup(plan)
    width, channels = level.cols, plan.channels
    q_size = plan.before(m)
    per_group = pairs // groups
    scale = 1.0 / plan.n

    def kernel(ins, outs):
        consts = _constants(ins)
        g, cb, q = pl.program_id(0), pl.program_id(1), pl.program_id(2)
        rows, cols = tile_fft.time_index(level, width)
        cols = cols + cb * width
        h_index, h_cols = _filter_index(level, width, cb * width)
        h_mask = h_cols < channels

        def pair(it, acc):
            p = g * per_group + it
            slab = p * q_size + q
            x, tw = _mid_load(ins, "grad", plan, level, seq_grad, p, slab, rows, cols, prev)
            zg = _fft(consts, level, x, plan.precision)
            h = tuple(plt.load(r.at[(q, *h_index)], mask=h_mask, other=0.0) for r in ins["spectrum"])
            xd = _ifft(consts, level, tile_fft.cmul_conj(zg, h), plan.precision)
            _mid_store(outs, "du", plan, seq_grad, p, slab, rows, cols, xd, tw, ins.get("bias"), ins.get("grad"))
            x, _ = _mid_load(ins, "primal", plan, level, seq_primal, p, slab, rows, cols, prev)
            zu = _fft(consts, level, x, plan.precision)
            prod = tile_fft.cmul_conj(zg, zu)
            return acc[0] + prod[0], acc[1] + prod[1]

        shape = (level.size, width) if level.dense else (level.b, width, level.a)
        zero = jnp.zeros(shape, jnp.float32)
        acc = lax.fori_loop(0, per_group, pair, (zero, zero))
        x = _ifft(consts, level, (acc[0] * scale, acc[1] * scale), plan.precision)
        slab = g * q_size + q
        tw = _twiddle(ins, slab, prev, rows, cols, channels)
        _mid_store(outs, "dk", plan, seq_dh, g, slab, rows, cols, x, tw)

    inputs = dict(ops, grad=grad, primal=primal, spectrum=spectrum)
    if bias is not None:
        inputs["bias"] = bias
    outputs = {
        "du": du_out if seq_grad is not None else _planes_shape(level.size, channels, pairs * q_size),
        "dk": dh_out if seq_dh is not None else _planes_shape(level.size, channels, groups * q_size),
    }
    grid = (groups, pl.cdiv(channels, width), q_size)
    result = _call(kernel, inputs, outputs, grid, plan, "fftconv_mid_bwd", interpret)
    return result["du"], result["dk"]
