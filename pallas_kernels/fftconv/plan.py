"""The static plan of an FFT convolution: FFT size, levels, radices, tiles, constants.

A length-``N`` DFT (``N`` a power of two) is split into *levels*
``N = s_0 * s_1 * ... * s_m``. Viewing a sequence as ``[s_0, ..., s_m]``
(``s_0`` the slowest digit of the time index), level ``i`` is a DFT along axis
``i`` followed by the twiddle ``W_{N_i}^{k_i * n_rest}`` (``N_i = s_i * ... * s_m``,
``n_rest`` the time index of the axes after ``i``): the Cooley-Tukey
"four-step" recursion. Each level is one kernel pass through HBM, except the
last ("mid") one, whose kernel also multiplies by the filter spectrum and runs
the inverse of its own level, so a sequence that fits in one level is one pass
end to end.

Inside a kernel the DFT of one level (size ``s``) runs on a ``[s, W]`` tile
(``W`` columns side by side): densely (one complex matmul, ``s <= dense_max``)
or in two matmul stages ``s = a * b`` with a twiddle between them (see
:mod:`pallas_kernels.fftconv.tile_fft`). Every complex matmul is real
matmuls; in ``"bf16x3"`` precision each one is three bf16 matmuls with float32
accumulation on hi/lo splits of both operands (relative error ~1e-5 per stage,
against ~4e-3 for plain bf16).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Tuple

import jax.numpy as jnp
import ml_dtypes
import numpy as np

MIN_FFT = 256  # smaller FFT sizes are padded up (zero padding never wraps)
MIN_RADIX = 16  # matmul dims below 16 do not map to tensor cores
PRECISIONS = ("bf16x3", "bf16", "f32")


def fft_size(n: int) -> int:
    """The FFT size for a linear convolution of ``n`` output taps: a power of two >= max(n, 256)."""
    return max(MIN_FFT, 1 << max(n - 1, 0).bit_length())


@dataclasses.dataclass(frozen=True)
class Level:
    """One level: a DFT of ``size`` points, dense or as ``a x b`` (``a`` the slow digit)."""

    size: int
    a: int  # == size for a dense level
    b: int  # == 1 for a dense level
    cols: int  # tile width W: columns transformed side by side by one program

    @property
    def dense(self) -> bool:
        return self.b == 1


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything static about one call: shapes, levels and kernel options."""

    n: int  # FFT size
    levels: Tuple[Level, ...]  # outer levels first; levels[-1] is the mid level
    channels: int
    precision: str
    num_warps: int

    @property
    def mid(self) -> Level:
        return self.levels[-1]

    def rest(self, i: int) -> int:
        """``R_i``: the product of the level sizes after level ``i``."""
        return math.prod(lv.size for lv in self.levels[i + 1 :])

    def before(self, i: int) -> int:
        """``Q_i``: the product of the level sizes before level ``i``."""
        return math.prod(lv.size for lv in self.levels[:i])


def _two_stage(size: int, dense_max: int) -> Optional[Tuple[int, int]]:
    """``(a, b)`` with ``a * b == size``, both in [16, dense_max], ``a + b`` smallest (``a <= b``)."""
    best = None
    a = MIN_RADIX
    while a <= dense_max:
        b = size // a
        if a * b == size and MIN_RADIX <= b <= dense_max and a <= b:
            if best is None or a + b < sum(best):
                best = (a, b)
        a *= 2
    return best


def _level_cost(size: int, dense_max: int, two_stage: bool = True) -> Optional[Tuple[int, int, int]]:
    """``(cost, a, b)`` of one level (cost: matmul depth per element), or None if impossible."""
    split = _two_stage(size, dense_max) if two_stage else None
    options = []
    if split is not None:
        options.append((sum(split), split[0], split[1]))
    if MIN_RADIX <= size <= max(dense_max, 128):
        options.append((size, size, 1))
    return min(options) if options else None


@functools.lru_cache(maxsize=None)
def _split_levels(n: int, max_size: int, dense_max: int, two_stage: bool) -> Tuple[Tuple[int, int, int], ...]:
    """Level sizes (fewest levels, then least matmul work): ``((size, a, b), ...)``."""
    sizes = [1 << e for e in range(4, max_size.bit_length()) if (1 << e) <= max_size]
    best = None
    for count in range(1, 8):
        def search(remaining, depth):
            if depth == 1:
                if remaining in sizes and _level_cost(remaining, dense_max, two_stage):
                    yield (remaining,)
                return
            for s in sizes:
                if remaining % s == 0 and remaining // s >= MIN_RADIX:
                    for tail in search(remaining // s, depth - 1):
                        yield (s,) + tail

        for combo in search(n, count):
            costs = [_level_cost(s, dense_max, two_stage) for s in combo]
            if any(c is None for c in costs):
                continue
            # Least work; then the largest mid level (it does forward and inverse on chip).
            key = (sum(c[0] for c in costs), -combo[-1])
            if best is None or key < best[0]:
                best = (key, tuple((s, c[1], c[2]) for s, c in zip(combo, costs)))
        if best is not None:
            return best[1]
    raise ValueError(f"cannot split an FFT of size {n} into levels of at most {max_size}")


def make_plan(n: int, channels: int, *, max_size: int, dense_max: int, tile: int,
              precision: str, num_warps: int, two_stage: bool = True) -> Plan:
    """The plan for an ``n``-point FFT over ``channels`` channels.

    ``max_size``: the largest level done on chip; ``dense_max``: the largest
    radix of a matmul stage; ``tile``: the most complex elements one program
    holds (``size * cols``); ``two_stage``: allow two-stage levels (else every
    level is one dense matmul, as on TPU).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    split = _split_levels(n, max_size, dense_max, two_stage)
    levels = []
    total_rest = n
    for i, (size, a, b) in enumerate(split):
        total_rest //= size
        is_mid = i == len(split) - 1
        cols = max(1, tile // size)
        if b == 1:
            cols = max(cols, MIN_RADIX)  # a dense stage's matmul N dimension is the tile width
        span = channels if is_mid else total_rest * channels
        cols = min(cols, 1 << max(span - 1, 0).bit_length())  # no wider than the columns there are
        if not is_mid:
            cols = math.gcd(cols, span)  # outer tiles never straddle the end of a row
        if b == 1:
            cols = max(cols, MIN_RADIX)
        levels.append(Level(size=size, a=a, b=b, cols=cols))
    return Plan(n=n, levels=tuple(levels), channels=channels, precision=precision, num_warps=num_warps)


@dataclasses.dataclass(frozen=True)
class Seq:
    """A ``[batch, rows, channels]`` array read or written as pair-packed complex columns.

    Time ``t`` of the FFT lives at row ``(t + shift) mod n`` when that row is
    ``< rows`` (else it is zero / not written). ``paired``: ``re`` is batch
    ``2p`` and ``im`` batch ``2p + 1``; otherwise ``re`` is batch ``p`` and
    ``im`` is zero (reads) or dropped (writes).
    """

    batch: int
    rows: int
    shift: int = 0
    paired: bool = True


# ----------------------------------------------------------------------------------------------
# Constants: DFT matrices (split into bf16 hi/lo) and twiddle tables.


def _split_bf16(x: np.ndarray):
    hi = x.astype(ml_dtypes.bfloat16)
    lo = (x - hi.astype(np.float64)).astype(ml_dtypes.bfloat16)
    return hi, lo


@functools.lru_cache(maxsize=None)
def _dft_np(r: int):
    j = np.arange(r)
    angle = -2.0 * np.pi * np.outer(j, j) / r
    return np.cos(angle), np.sin(angle)


def dft_operands(r: int, precision: str):
    """The forward DFT matrix ``F = exp(-2 pi i jk / r)`` as kernel operands.

    A dict of ``re``, ``im``, ``sum`` (``re + im``) and ``diff`` (``re - im``),
    each a tuple: ``(hi, lo)`` bf16 for ``"bf16x3"``, ``(m,)`` bf16 for
    ``"bf16"``, ``(m,)`` float32 for ``"f32"``. ``sum``/``diff`` serve the
    three-multiplication complex product (forward / conjugated).
    """
    re, im = _dft_np(r)
    parts = {"re": re, "im": im, "sum": re + im, "diff": re - im}
    if precision == "bf16x3":
        return {k: tuple(jnp.asarray(x) for x in _split_bf16(v)) for k, v in parts.items()}
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    return {k: (jnp.asarray(v, dtype),) for k, v in parts.items()}


def stage_twiddle(level: Level):
    """``W_s^{ib * ka}`` as ``[b, a]`` float32 (re, im): the twiddle between the two stages."""
    ib = np.arange(level.b)[:, None]
    ka = np.arange(level.a)[None, :]
    angle = -2.0 * np.pi * (ib * ka) / level.size
    return jnp.asarray(np.cos(angle), jnp.float32), jnp.asarray(np.sin(angle), jnp.float32)


def _phase(k, n, modulus):
    """``exp(-2 pi i k n / modulus)`` (re, im) float32, from the exact integer product mod ``modulus``."""
    prod = (k * n) % modulus  # int32: callers keep k * n < N <= 2^31
    angle = prod.astype(jnp.float32) * np.float32(-2.0 * np.pi / modulus)
    return jnp.cos(angle), jnp.sin(angle)


def level_twiddles(plan: Plan, i: int):
    """Twiddles of level ``i`` (applied in level ``i+1``'s kernel), as float32 tables.

    The twiddle of level ``i`` is ``W_{N_i}^{k_i * n_rest}``; level ``i+1`` sees
    ``n_rest = n_{i+1} * R_{i+1} + r`` with ``r = column // channels``, so it
    factors into a row table ``W_{s_i s_{i+1}}^{k_i n_{i+1}}``
    (``[s_i, s_{i+1}]``) and a column table ``W_{N_i}^{k_i r}``
    (``[s_i, R_{i+1}]``, all ones when level ``i+1`` is the mid level).
    Returns ``(row_re, row_im, col_re, col_im)``.
    """
    s_i, s_next = plan.levels[i].size, plan.levels[i + 1].size
    rest_next = plan.rest(i + 1)
    k = jnp.arange(s_i, dtype=jnp.int32)[:, None]
    row = _phase(k, jnp.arange(s_next, dtype=jnp.int32)[None, :], s_i * s_next)
    col = _phase(k, jnp.arange(rest_next, dtype=jnp.int32)[None, :], s_i * s_next * rest_next)
    return (*row, *col)
