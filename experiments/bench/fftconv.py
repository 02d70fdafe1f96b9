"""Benchmark cases for ``sequax.ops.fftconv.fft_conv``: the Pallas matmul-FFT kernel vs ``jnp.fft``.

Shapes: ``[B, L, 1024]`` float32, a causal kernel as long as the sequence
(Hyena's), so the FFT size is ``N = 2L``; ``B = 8`` up to L16K, ``B = 2``
beyond (one complex pair: the kernel packs two real sequences per FFT).

The two numbers (B8 L16K C1024, N = 32768):

- Minimal bytes: forward reads ``u`` and ``k`` and writes ``y``: ``(2 B L + L) C 4``
  = 1.1 GB (0.25 ms at 4.3 TB/s); forward+backward also reads ``g`` and ``u``
  and writes ``du`` and ``dk``: ~2.7 GB (0.62 ms).
- FLOPs: a radix-2 FFT costs ``5 N log2 N`` per complex sequence; the
  convolution (forward and inverse FFT of the ``B/2`` complex pairs plus the
  filter's) is ~0.02 TFLOP forward, ~0.06 TFLOP forward+backward: negligible.

What this kernel moves and executes instead (levels 32 x (32x32)): three
passes over HBM forward with complex float32 intermediates, ~6.5 GB (1.5 ms
at 4.3 TB/s), and ~7.3 GB backward (1.7 ms); dense DFT matmuls of
``18 * (radix sum)`` bf16 FLOP per complex element (three real products per
complex one, three bf16 matmuls per real product), ~0.52 TFLOP forward and
~1.3 TFLOP forward+backward (0.66 / 1.6 ms at 790 TFLOP/s). So it is bound by
its intermediate traffic and its matmul issue rate, not by the minimal bytes:
at L16K the floor is ~3.2 ms forward+backward against ``jnp.fft``'s 7.7 ms.

Also ``short_conv``: the short causal depthwise convolution every linear-attention and
Mamba layer runs on its projections (``sequax.ops.fftconv.causal_conv1d``, K = 4, bf16, the
12-layer training models' ``[8, 4096, 3 * 1024]``), as shifted taps (what it computes now) against
the grouped convolution ``lax.conv_general_dilated(feature_group_count=channels)`` it replaced,
same run.

Each line: our forward / forward+backward time and ``jnp.fft``'s in the same
process, the speedups, the relative error of our output against the
``jnp.fft`` output, and compiled temporary memory. Variants (``precision``,
tile sizes, warps) run at L16K in the full run, to pick the table's row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.bench.common import fwd_bwd, run_case, temp_bytes, time_ms
from pallas_kernels.fftconv import convolve
from sequax.ops.fftconv import causal_conv1d, fft_conv

CHANNELS = 1024
VARIANTS = {
    "default": {},
    "precision_bf16": dict(precision="bf16"),
    "tile4096": dict(tile=4096, tile_bwd=2048),
    "warps4": dict(num_warps=4),
}


def _batch(length):
    return 8 if length <= 16384 else 2


def _inputs(batch, length):
    """``u`` ``[batch, length, CHANNELS]`` and a causal kernel as long as the sequence, float32."""
    ku, kk = jax.random.split(jax.random.PRNGKey(0))
    u = jax.random.normal(ku, (batch, length, CHANNELS), jnp.float32)
    return u, jax.random.normal(kk, (length, CHANNELS), jnp.float32) / length**0.5


def _xla():
    """``jnp.fft``'s (forward, forward+backward), jitted."""
    return fwd_bwd(lambda u, k: fft_conv(u, k, backend="xla"), argnums=(0, 1))


def _case(length, quick, variants=("default",)):
    batch = _batch(length)

    def measure():
        u, k = _inputs(batch, length)
        iters = 5 if quick else 20
        out = {}
        xla_fwd, xla_both = _xla()
        out["xla_fwd_ms"] = time_ms(xla_fwd, u, k, iters=iters)
        out["xla_fwdbwd_ms"] = time_ms(xla_both, u, k, iters=iters)
        out["xla_temp_MiB"] = (temp_bytes(xla_both, u, k) or 0) / 2**20
        ref = xla_fwd(u, k)
        for name in variants:
            opts = VARIANTS[name]
            fwd, both = fwd_bwd(lambda u, k, opts=opts: convolve(u, k, causal=True, **opts), argnums=(0, 1))
            try:
                y = fwd(u, k)
                out[f"{name}_rel_err"] = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
                out[f"{name}_fwd_ms"] = time_ms(fwd, u, k, iters=iters)
                out[f"{name}_fwdbwd_ms"] = time_ms(both, u, k, iters=iters)
                out[f"{name}_temp_MiB"] = (temp_bytes(both, u, k) or 0) / 2**20
                out[f"{name}_speedup_fwd"] = out["xla_fwd_ms"] / out[f"{name}_fwd_ms"]
                out[f"{name}_speedup_fwdbwd"] = out["xla_fwdbwd_ms"] / out[f"{name}_fwdbwd_ms"]
            except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
                out[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        minimal = (2 * batch * length + length) * CHANNELS * 4
        if "default_fwd_ms" in out:
            out["default_fwd_GBps_minimal"] = minimal / out["default_fwd_ms"] / 1e6
        return out

    run_case("fft_conv", measure, batch=batch, length=length, channels=CHANNELS, dtype="float32")


def _grouped_conv1d(u, k):
    """The causal depthwise convolution as one grouped convolution (one channel per group)."""
    taps = k.shape[0]
    full = jnp.pad(u, ((0, 0), (taps - 1, 0), (0, 0)))
    return jax.lax.conv_general_dilated(
        full, k[::-1, None, :].astype(u.dtype), (1,), [(0, 0)], dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=u.shape[-1], preferred_element_type=jnp.float32).astype(u.dtype)


def short_conv_case(shape=(8, 4096, 3072), taps=4):
    """``causal_conv1d`` (shifted taps) vs the grouped convolution, forward and forward+backward."""

    def measure():
        u = jax.random.normal(jax.random.PRNGKey(0), shape, jnp.bfloat16)
        k = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (taps, shape[-1]), jnp.float32)
        r = {}
        for name, f in (("taps", lambda u, k: causal_conv1d(u, k, backend="xla")), ("grouped", _grouped_conv1d)):
            fwd, both = fwd_bwd(f, (0, 1))
            r[f"{name}_fwd_ms"], r[f"{name}_fwd_bwd_ms"] = time_ms(fwd, u, k), time_ms(both, u, k)
        r["fwd_speedup_vs_grouped"] = r["grouped_fwd_ms"] / r["taps_fwd_ms"]
        r["fwd_bwd_speedup_vs_grouped"] = r["grouped_fwd_bwd_ms"] / r["taps_fwd_bwd_ms"]
        diff = causal_conv1d(u, k, backend="xla").astype(jnp.float32) - _grouped_conv1d(u, k).astype(jnp.float32)
        r["max_abs_diff"] = float(jnp.max(jnp.abs(diff)))
        return r

    run_case("short_conv", measure, shape=list(shape), taps=taps, dtype="bfloat16")


# Rows of ``diagnose``: which resource bounds the kernel (matmul precision, on-chip level size,
# radix, tile width, warps), each an override of the device's table row.
DIAGNOSE_ROWS = [
    {}, dict(precision="bf16"), dict(precision="f32"),
    dict(max_size=512), dict(max_size=1024), dict(max_size=4096),
    dict(dense_max=32), dict(dense_max=128),
    dict(tile=2048, tile_bwd=2048), dict(tile=4096, tile_bwd=2048), dict(tile=16384, tile_bwd=8192),
    dict(num_warps=4), dict(num_warps=16),
]


def diagnose(lengths=(1024, 16384), rows=None, profile=True):
    """Per override row: forward and forward+backward ms at ``[8, L, 1024]`` float32 beside
    ``jnp.fft`` in the same run, and (``profile``) the default row's device time per kernel pass."""
    from experiments.bench.device_profile import device_op_times

    for length in lengths:
        batch = _batch(length)
        u, k = _inputs(batch, length)
        xla_fwd, xla_both = _xla()
        base = dict(xla_fwd_ms=time_ms(xla_fwd, u, k, iters=5), xla_fwd_bwd_ms=time_ms(xla_both, u, k, iters=5))
        ref = xla_fwd(u, k)
        for row in (DIAGNOSE_ROWS if rows is None else rows):
            def measure(row=row):
                fwd, both = fwd_bwd(lambda u, k: convolve(u, k, causal=True, **row), argnums=(0, 1))
                y = fwd(u, k)
                r = dict(base, rel_err=float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref)),
                         fwd_ms=time_ms(fwd, u, k, iters=5), fwd_bwd_ms=time_ms(both, u, k, iters=5))
                r["speedup_fwd"], r["speedup_fwd_bwd"] = r["xla_fwd_ms"] / r["fwd_ms"], r["xla_fwd_bwd_ms"] / r["fwd_bwd_ms"]
                return r

            run_case("fft_conv/diagnose", measure, batch=batch, length=length, channels=CHANNELS, row=row)
        if profile:
            fwd, both = fwd_bwd(lambda u, k: convolve(u, k, causal=True), argnums=(0, 1))
            for name, fn in (("fwd", fwd), ("fwd_bwd", both), ("xla_fwd_bwd", xla_both)):
                run_case("fft_conv/profile", lambda fn=fn: device_op_times(fn, u, k, top=12, depth=2),
                         batch=batch, length=length, what=name)


def run(quick: bool) -> None:
    short_conv_case()
    if quick:
        for length in (1024, 16384, 131072):
            _case(length, quick)
        return
    for length in (1024, 4096, 16384, 65536, 262144, 1048576):
        _case(length, quick, variants=tuple(VARIANTS) if length == 16384 else ("default",))
