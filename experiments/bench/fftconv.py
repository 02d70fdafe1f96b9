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
from sequax.ops.fftconv import fft_conv

CHANNELS = 1024
VARIANTS = {
    "default": {},
    "precision_bf16": dict(precision="bf16"),
    "tile4096": dict(tile=4096, tile_bwd=2048),
    "warps4": dict(num_warps=4),
}


def _batch(length):
    return 8 if length <= 16384 else 2


def _case(length, quick, variants=("default",)):
    batch = _batch(length)

    def measure():
        ku, kk = jax.random.split(jax.random.PRNGKey(0))
        u = jax.random.normal(ku, (batch, length, CHANNELS), jnp.float32)
        k = jax.random.normal(kk, (length, CHANNELS), jnp.float32) / length**0.5
        iters = 5 if quick else 20
        out = {}
        xla_fwd, xla_both = fwd_bwd(lambda u, k: fft_conv(u, k, backend="xla"), argnums=(0, 1))
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


def run(quick: bool) -> None:
    if quick:
        for length in (1024, 16384, 131072):
            _case(length, quick)
        return
    for length in (1024, 4096, 16384, 65536, 262144, 1048576):
        _case(length, quick, variants=tuple(VARIANTS) if length == 16384 else ("default",))
