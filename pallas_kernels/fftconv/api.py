"""``fft_conv`` on Pallas kernels: the FFT as small dense DFT matmuls, filter and inverse fused.

Same signature and semantics as :func:`sequax.ops.fftconv.fft_conv` (minus
``backend``): ``y[t] = sum_j kf[j] u[t + offset - j] (+ bias * u[t])`` with
``offset = 0`` (causal) or the centre tap (two-sided), computed as the first
``length`` outputs of a circular convolution of size ``N >= length + K' - 1``
(nothing wraps), FFT math in float32.

How (see ``plan.py`` for the level split, ``tile_fft.py`` for the matmuls):

1. The filter ``h`` (the taps placed circularly so lag 0 is row 0) is
   transformed once per call: ``H = FFT(h) / N``, kept for the backward.
2. Two real sequences of a channel share one complex FFT (``u[2p] + i u[2p+1]``;
   the filter is real, so the pair's outputs come back as real and imaginary
   parts). The outer levels run as passes over HBM; the last level's kernel
   does its DFT, the product with ``H`` and the inverse in registers, so a
   sequence with ``N <= max_size`` is one kernel end to end.
3. Backward (``jax.custom_vjp``): ``du = IFFT(FFT(g) conj(H))`` (the adjoint
   of a circular convolution is the correlation) and
   ``dh = Re IFFT(sum_p G_p conj(U_p))``, summed over pairs inside the kernel,
   whose taps are ``dk``; ``dbias = sum g u``. Saved from the forward: ``H``
   and ``u``'s planes after the outer levels (the forward wrote them anyway;
   the backward would otherwise re-read ``u`` and rewrite them), or ``u`` when
   there is one level. Memory: those planes are ``8 B L' C`` bytes
   (``L' = N/2``), about twice a float32 ``u``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.platform import platform as _platform
from pallas_kernels.fftconv import pallas_gpu, pallas_tpu
from pallas_kernels.fftconv.block_sizes import block_sizes
from pallas_kernels.fftconv.plan import Plan, Seq, fft_size, make_plan

MAX_FFT = 1 << 23  # FFT sizes beyond this are refused (8M points)
_TARGET_PROGRAMS = 1024  # enough programs to fill the GPU in the backward's mid pass


def _reach(k_len, length, causal):
    """``(start, taps, offset)``: the taps that can meet an input and the row of lag zero."""
    if causal:
        return 0, min(k_len, length), 0
    centre = (k_len - 1) // 2
    reach = min(centre, length - 1)
    return centre - reach, 2 * reach + 1, reach


def why_not(u, k, *, causal=True, bias=None, **_) -> Optional[str]:
    """Why this kernel cannot serve the inputs (``None`` if it can)."""
    if _platform() not in ("cpu", "gpu", "tpu"):
        return f"no pallas fft_conv for platform {jax.default_backend()!r}"
    for name, x in (("u", u), ("k", k), ("bias", bias)):
        if x is not None and jnp.dtype(x.dtype) == jnp.float64:
            return f"the pallas kernel computes in float32; {name} is float64 (pass float32 or use backend='xla')"
    length = u.shape[1]
    _, taps, _ = _reach(k.shape[0], length, causal)
    n = fft_size(length + taps - 1)
    if n > MAX_FFT:
        return f"FFT size {n} (length {length} + {taps} taps) is above the kernel's {MAX_FFT}"
    if _platform() == "tpu":
        return pallas_tpu.why_not(u.shape, n, block_sizes())
    return None


@dataclasses.dataclass(frozen=True)
class _Static:
    plan: Plan
    plan_bwd: Plan
    k_len: int
    start: int
    taps: int
    offset: int
    k_dtype: str
    platform: str  # whose kernels: "gpu" (Triton) or "tpu" (Mosaic)
    interpret: bool


def _plans(length, taps, channels, platform, overrides):
    cfg = block_sizes(kind="tpu" if platform == "tpu" else None, **overrides)
    n = fft_size(length + taps - 1)
    kw = dict(max_size=cfg["max_size"], dense_max=cfg["dense_max"], precision=cfg["precision"],
              two_stage=cfg["two_stage"])
    plan = make_plan(n, channels, tile=cfg["tile"], num_warps=cfg["num_warps"], **kw)
    bwd = make_plan(n, channels, tile=cfg["tile_bwd"], num_warps=cfg["num_warps_bwd"] or cfg["num_warps"], **kw)
    # Same levels in both (the HBM layouts do not depend on the tile width).
    assert [lv.size for lv in plan.levels] == [lv.size for lv in bwd.levels]
    return plan, bwd


def _view(kernels, planes, plan: Plan, i: int, slabs_per: int):
    """Reshape planes to level ``i``'s view ``[slabs_per * Q_i, s_i, R_i * C]``."""
    shape = (slabs_per * plan.before(i), plan.levels[i].size, plan.rest(i) * kernels.plane_channels(plan))
    return tuple(v.reshape(shape) for v in planes)


def _forward_levels(kernels, plan, src, pairs, seq, interpret):
    """The outer forward levels of ``src`` (a ``Seq`` array); planes at the mid view, or ``src`` if none."""
    m = len(plan.levels) - 1
    x = src
    for i in range(m):
        x = kernels.forward_level(plan, i, x if i else src, pairs, seq=seq if i == 0 else None,
                                  interpret=interpret)
        x = _view(kernels, x, plan, i + 1, pairs)
    return x


def _inverse_levels(kernels, plan, x, pairs, out, seq, bias, skip, interpret):
    """The outer inverse levels from mid-view planes; level 0 writes ``out`` through ``seq``."""
    m = len(plan.levels) - 1
    for i in reversed(range(m)):
        x = _view(kernels, x, plan, i, pairs)
        first = i == 0
        x = kernels.inverse_level(plan, i, x, pairs, out=out if first else None, seq=seq if first else None,
                                  bias=bias if first else None, skip=skip if first else None,
                                  interpret=interpret)
    return x


def _kernels(st):
    return pallas_tpu if st.platform == "tpu" else pallas_gpu


def _flat(x):
    """A ``[batch, rows, channels]`` array as the ``[batch, rows * channels]`` view the kernels index."""
    return x.reshape(x.shape[0], -1)


def _spectrum(kf, st: _Static):
    """``FFT(h) / N`` of the circularly placed taps, in the mid kernel's layout (two planes)."""
    kernels, plan = _kernels(st), st.plan
    seq = Seq(batch=1, rows=st.taps, shift=st.offset, paired=False)
    src = _flat(kf[None])
    x = _forward_levels(kernels, plan, src, 1, seq, st.interpret)
    m = len(plan.levels) - 1
    return kernels.mid(plan, x, 1, mode="spectrum", seq=seq if m == 0 else None, interpret=st.interpret)


def _convolve(u, spectrum, bias, st: _Static, *, plan, conj_filter):
    """``(y, x_mid)``: the first ``length`` outputs of the circular convolution of ``u`` with the
    filter (+ bias * u), and ``u``'s planes after the outer levels (``None`` with one level)."""
    kernels = _kernels(st)
    batch, length, channels = u.shape
    pairs = -(-batch // 2)
    seq = Seq(batch=batch, rows=length)
    src = _flat(u)
    out = jax.ShapeDtypeStruct(src.shape, u.dtype)
    m = len(plan.levels) - 1
    if m == 0:
        y = kernels.mid(plan, src, pairs, mode="conv", spectrum=spectrum, conj_filter=conj_filter,
                        out=out, seq=seq, bias=bias, interpret=st.interpret)
        return y.reshape(u.shape), None
    x_mid = _forward_levels(kernels, plan, src, pairs, seq, st.interpret)
    x = kernels.mid(plan, x_mid, pairs, mode="conv", spectrum=spectrum, conj_filter=conj_filter,
                    interpret=st.interpret)
    y = _inverse_levels(kernels, plan, x, pairs, out, seq, bias, src, st.interpret)
    return y.reshape(u.shape), x_mid


def _groups(kernels, plan: Plan, pairs: int) -> int:
    """Pair groups of the backward's mid pass: a divisor of ``pairs``, enough programs to fill the GPU."""
    m = len(plan.levels) - 1
    tiles = -(-plan.channels // plan.mid.cols) * plan.before(m)
    want = min(kernels.max_groups(plan), max(1, -(-_TARGET_PROGRAMS // tiles)))
    return max(d for d in range(1, pairs + 1) if pairs % d == 0 and d <= want)


def _backward_parts(u, xu, g, spectrum, bias, st: _Static):
    """``(du, dkf)``: the input gradient and the gradient of the reachable taps ``[taps, C]``.

    ``u`` is needed with one level; with several, ``xu`` (its planes after the
    outer levels, kept from the forward) replaces it.
    """
    kernels, plan = _kernels(st), st.plan_bwd
    batch, length, channels = g.shape
    pairs = -(-batch // 2)
    groups = _groups(kernels, plan, pairs)
    seq = Seq(batch=batch, rows=length)
    g_src = _flat(g)
    m = len(plan.levels) - 1
    du_out = jax.ShapeDtypeStruct(g_src.shape, g.dtype)
    # The filter gradient dh[t] (t the circular lag) lands on tap (t + offset) mod N.
    dk_seq = Seq(batch=groups if m == 0 else 1, rows=st.taps, shift=st.offset, paired=False)
    dk_out = jax.ShapeDtypeStruct((dk_seq.batch, st.taps * channels), jnp.float32)
    if m == 0:
        du, dkf = kernels.mid_backward(plan, g_src, _flat(u), spectrum, pairs, groups, du_out=du_out, dh_out=dk_out,
                                       seq_grad=seq, seq_primal=seq, seq_dh=dk_seq, bias=bias,
                                       interpret=st.interpret)
        return du.reshape(g.shape), jnp.sum(dkf, axis=0).reshape(st.taps, channels)
    xg = _forward_levels(kernels, plan, g_src, pairs, seq, st.interpret)
    du_mid, dk_mid = kernels.mid_backward(plan, xg, xu, spectrum, pairs, groups, interpret=st.interpret)
    du = _inverse_levels(kernels, plan, du_mid, pairs, du_out, seq, bias, g_src, st.interpret)
    if groups > 1:
        dk_mid = tuple(v.reshape((groups, -1) + v.shape[1:]).sum(0) for v in dk_mid)
    dkf = _inverse_levels(kernels, plan, dk_mid, 1, dk_out, dk_seq, None, None, st.interpret)
    return du.reshape(g.shape), dkf.reshape(st.taps, channels)


def _taps_of(k, st: _Static):
    return k[st.start : st.start + st.taps]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _fft_conv(u, k, bias, st: _Static):
    return _convolve(u, _spectrum(_taps_of(k, st), st), bias, st, plan=st.plan, conj_filter=False)[0]


def _fft_conv_fwd(u, k, bias, st):
    spectrum = _spectrum(_taps_of(k, st), st)
    y, xu = _convolve(u, spectrum, bias, st, plan=st.plan, conj_filter=False)
    # Saved: the filter spectrum, and u's planes after the outer levels (which the
    # backward would otherwise recompute from u); u itself only where still needed.
    keep_u = xu is None or bias is not None
    return y, (u if keep_u else None, xu, spectrum, bias)


def _fft_conv_bwd(st, res, g):
    u, xu, spectrum, bias = res
    du, dkf = _backward_parts(u, xu, g, spectrum, bias, st)
    dk = jnp.zeros((st.k_len, dkf.shape[1]), jnp.float32).at[st.start : st.start + st.taps].set(dkf)
    dbias = None
    if bias is not None:
        dbias = jnp.einsum("blc,blc->c", g.astype(jnp.float32), u.astype(jnp.float32)).astype(bias.dtype)
    return du, dk.astype(st.k_dtype), dbias


_fft_conv.defvjp(_fft_conv_fwd, _fft_conv_bwd)


def convolve(u, k, *, causal=True, bias=None, platform=None, **overrides):
    """:func:`fft_conv` with block-size / precision ``overrides`` (see :mod:`.block_sizes`).

    ``platform``: ``"gpu"`` or ``"tpu"`` kernels (default: the current
    platform's; on a CPU the GPU kernels, interpreted). Kernels of a platform
    other than the current one run interpreted.
    """
    batch, length, channels = u.shape
    start, taps, offset = _reach(k.shape[0], length, causal)
    here = _platform()
    platform = platform or ("tpu" if here == "tpu" else "gpu")
    plan, plan_bwd = _plans(length, taps, channels, platform, overrides)
    st = _Static(plan=plan, plan_bwd=plan_bwd, k_len=k.shape[0], start=start, taps=taps, offset=offset,
                 k_dtype=jnp.dtype(k.dtype).name, platform=platform, interpret=platform != here)
    if bias is not None:
        bias = jnp.asarray(bias)
    return _fft_conv(u, k, bias, st)


def fft_conv(u, k, *, causal=True, bias=None):
    """Depthwise long convolution through a matmul FFT (see :func:`sequax.ops.fftconv.fft_conv`).

    Args:
      u: ``[batch, length, channels]`` floating input.
      k: ``[kernel_length, channels]`` kernel; two-sided kernels (``causal=False``)
        have odd length with lag zero at the centre.
      causal: causal or centred two-sided kernel.
      bias: optional ``[channels]`` skip weight (``bias * u`` is added).

    Returns:
      ``[batch, length, channels]`` in ``u``'s dtype (FFT math in float32).
    """
    return convolve(u, k, causal=causal, bias=bias)
