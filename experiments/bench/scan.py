"""Benchmark cases for ``sequax.ops.scan.linear_scan``: the Pallas kernel vs the pure-JAX modes.

Minimal traffic for a real f32 scan over ``[B, L, F]``: read ``a`` and ``b``,
write ``h``: ``12 B L F`` bytes; the arithmetic is 2 flops per element, so the
op is memory-bound (floor at 4.3 TB/s: B4 L8192 F16384 -> 2.0 GB, ~0.47 ms).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.bench.common import fwd_bwd, run_case, temp_bytes, time_ms
from sequax.ops.scan import linear_scan


def _case(batch, length, features, quick):
    def measure():
        ka, kb = jax.random.split(jax.random.PRNGKey(0))
        a = jax.random.uniform(ka, (batch, length, features), jnp.float32, 0.9, 1.0)
        b = jax.random.normal(kb, (batch, length, features), jnp.float32)
        out = {}
        minimal = 12 * batch * length * features
        for name, kw in (("pallas", dict(backend="pallas")), ("associative", dict(backend="xla", mode="associative")),
                         ("chunked", dict(backend="xla", mode="chunked"))):
            fwd, both = fwd_bwd(lambda a, b, kw=kw: linear_scan(a, b, **kw), argnums=(0, 1))
            out[f"{name}_fwd_ms"] = time_ms(fwd, a, b, iters=5 if quick else 20)
            out[f"{name}_fwdbwd_ms"] = time_ms(both, a, b, iters=5 if quick else 20)
            out[f"{name}_temp_MiB"] = (temp_bytes(both, a, b) or 0) / 2**20
        out["pallas_fwd_GBps"] = minimal / out["pallas_fwd_ms"] / 1e6
        out["speedup_fwd_vs_associative"] = out["associative_fwd_ms"] / out["pallas_fwd_ms"]
        out["speedup_fwdbwd_vs_associative"] = out["associative_fwdbwd_ms"] / out["pallas_fwdbwd_ms"]
        return out

    run_case("linear_scan", measure, batch=batch, length=length, features=features)


def run(quick: bool) -> None:
    _case(4, 8192, 16384 if not quick else 4096, quick)
