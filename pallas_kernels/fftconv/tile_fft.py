"""On-chip DFTs of one tile, as real matmuls: the math shared by the kernels.

Complex values are pairs ``(re, im)`` of float32 arrays. A tile holds ``W``
independent columns of an ``s``-point sequence.

*Dense* level (``s`` a single radix): ``Z = F @ X`` on a ``[s, W]`` tile; the
frequency layout is the natural one.

*Two-stage* level ``s = a * b`` (time index ``n = ia * b + ib``, frequency
``k = ka + a * kb``), written so that no tile is ever transposed in registers:
each matmul contracts the leading or trailing axis of a 2-D view and the
layout rotates instead::

    x  [ia, ib, w] --(contract ia: X^T F_a)-->  [ib, w, ka]
       * W_s^(ib ka)                             (twiddle between the stages)
       --(contract ib: F_b X)-->                 [kb, w, ka]   frequency layout
    inverse: --(conj F_b X)--> [ib, w, ka] * conj twiddle --(conj F_a X^T)--> [ia, ib, w]

Precision (``"bf16x3"``, the default): each real matmul ``A @ B`` is
``A_hi B_hi + A_lo B_hi + A_hi B_lo`` on bf16 hi/lo splits (``A_lo = bf16(A -
A_hi)``) with float32 accumulation: about 16 significant bits per operand, so
~1e-5 relative error per stage instead of bf16's ~4e-3. ``"bf16"`` is one bf16
matmul; ``"f32"`` a float32 matmul at highest precision (CUDA cores on a GPU).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

_CONTRACT = {
    # name: (operand order, dimension numbers)
    "left": (True, (((1,), (0,)), ((), ()))),  # F @ X          [k, cols]
    "left_t": (True, (((1,), (1,)), ((), ()))),  # F @ X^T        [k, rows]
    "right_t": (False, (((0,), (0,)), ((), ()))),  # X^T @ F        [cols, k]
}


def _dot(x, f, how, precision):
    f_first, dims = _CONTRACT[how]
    lhs, rhs = (f, x) if f_first else (x, f)
    prec = lax.Precision.HIGHEST if precision == "f32" else None
    return lax.dot_general(lhs, rhs, dims, precision=prec, preferred_element_type=jnp.float32)


def split(x):
    """``(hi, lo)`` bf16 parts of a float32 array (``hi + lo`` carries ~16 significant bits)."""
    hi = x.astype(jnp.bfloat16)
    return hi, (x - hi.astype(jnp.float32)).astype(jnp.bfloat16)


def _prepare(x, precision):
    if precision == "bf16x3":
        return split(x)
    if precision == "bf16":
        return (x.astype(jnp.bfloat16),)
    return (x,)


def _real_product(xs, fs, how, precision):
    """``X (.) F`` for prepared operands (see :func:`_prepare`)."""
    if precision == "bf16x3":
        x_hi, x_lo = xs
        f_hi, f_lo = fs
        # Small terms first (they are summed into the float32 accumulator).
        return _dot(x_lo, f_hi, how, precision) + _dot(x_hi, f_lo, how, precision) + _dot(x_hi, f_hi, how, precision)
    return _dot(xs[0], fs[0], how, precision)


def cmatmul(x, mats, how, *, inverse, precision):
    """Complex matmul of a tile ``x = (re, im)`` with a DFT matrix ``F`` (``conj(F)`` if ``inverse``).

    ``mats``: the operands from :func:`pallas_kernels.fftconv.plan.dft_operands`.
    Three real products (Gauss): ``t1 = xr F_re``, ``t2 = xi F_im``,
    ``t3 = (xr + xi)(F_re + F_im)``; ``re = t1 - t2``, ``im = t3 - t1 - t2``
    (for ``conj(F)``, ``F_im -> -F_im``).
    """
    sign = -1.0 if inverse else 1.0
    t1 = _real_product(_prepare(x[0], precision), mats["re"], how, precision)
    t2 = sign * _real_product(_prepare(x[1], precision), mats["im"], how, precision)
    t3 = _real_product(_prepare(x[0] + x[1], precision), mats["diff" if inverse else "sum"], how, precision)
    return t1 - t2, t3 - t1 - t2


def cmul(x, y):
    """Elementwise complex product of ``(re, im)`` pairs (broadcasting)."""
    return x[0] * y[0] - x[1] * y[1], x[0] * y[1] + x[1] * y[0]


def cmul_conj(x, y):
    """``x * conj(y)``, elementwise."""
    return x[0] * y[0] + x[1] * y[1], x[1] * y[0] - x[0] * y[1]


def conj(x):
    return x[0], -x[1]


def forward(x, level, mats_a, mats_b=None, twiddle=None, *, precision):
    """Forward DFT of a time-domain tile.

    Dense: ``x`` ``[s, W]`` -> ``[s, W]``. Two-stage: ``x`` ``[a, b, W]`` ->
    ``[b, W, a]`` (``[kb, w, ka]``); ``twiddle`` is ``(re, im)`` ``[b, a]``.
    """
    if level.dense:
        return cmatmul(x, mats_a, "left", inverse=False, precision=precision)
    a, b, w = level.a, level.b, x[0].shape[-1]
    y = cmatmul(tuple(v.reshape(a, b * w) for v in x), mats_a, "right_t", inverse=False, precision=precision)
    tw = tuple(t.reshape(b, 1, a) for t in twiddle)
    y = cmul(tuple(v.reshape(b, w, a) for v in y), tw)
    z = cmatmul(tuple(v.reshape(b, w * a) for v in y), mats_b, "left", inverse=False, precision=precision)
    return tuple(v.reshape(b, w, a) for v in z)


def inverse(z, level, mats_a, mats_b=None, twiddle=None, *, precision):
    """Unnormalised inverse DFT (conjugate matrices) of a frequency tile from :func:`forward`."""
    if level.dense:
        return cmatmul(z, mats_a, "left", inverse=True, precision=precision)
    a, b, w = level.a, level.b, z[0].shape[1]
    y = cmatmul(tuple(v.reshape(b, w * a) for v in z), mats_b, "left", inverse=True, precision=precision)
    tw = tuple(t.reshape(b, 1, a) for t in twiddle)
    y = cmul(tuple(v.reshape(b, w, a) for v in y), conj(tw))
    x = cmatmul(tuple(v.reshape(b * w, a) for v in y), mats_a, "left_t", inverse=True, precision=precision)
    return tuple(v.reshape(a, b, w) for v in x)


def time_index(level, cols):
    """Row (time) and column indices of a time-domain tile, shaped to broadcast over it."""
    if level.dense:
        return lax.broadcasted_iota(jnp.int32, (level.size, 1), 0), lax.broadcasted_iota(jnp.int32, (1, cols), 1)
    a, b = level.a, level.b
    rows = lax.broadcasted_iota(jnp.int32, (a, b, 1), 0) * b + lax.broadcasted_iota(jnp.int32, (a, b, 1), 1)
    return rows, lax.broadcasted_iota(jnp.int32, (1, 1, cols), 2)


def freq_index(level, cols):
    """Row (frequency ``k``) and column indices of a frequency tile from :func:`forward`."""
    if level.dense:
        return time_index(level, cols)
    a, b = level.a, level.b
    rows = lax.broadcasted_iota(jnp.int32, (b, 1, a), 2) + a * lax.broadcasted_iota(jnp.int32, (b, 1, a), 0)
    return rows, lax.broadcasted_iota(jnp.int32, (1, cols, 1), 1)


__all__ = ["cmatmul", "cmul", "cmul_conj", "conj", "forward", "freq_index", "inverse", "split", "time_index"]
