"""State-space scan benchmark cases: the Pallas selective-scan and SSD kernels beside the pure-JAX
paths, Mamba's Triton SSD kernel (a PyTorch peer, in its own process) and whole Mamba / Mamba-2
layers up to 1M tokens.

One JSON line per case (``experiments.bench.common``); every ratio is taken against an anchor
measured earlier in the same run.

Figures of merit:
- ``selective_scan`` (B, L, D, N) = (8, 2048, 2048, 16), Mamba's options (D, z gate,
  delta_bias + softplus), B/C shared: minimal traffic reads u, delta, z, B, C and writes y:
  float32 4 * 134.2 MB + 2 * 1.05 MB = 539 MB; bf16 u/delta/z/y 4 * 67.1 MB + 2.1 MB = 270 MB
  (B, C reach the kernel as float32). Work: B L D N = 5.4e8 exponentials and ~5.4 GFLOP; the
  scan is memory- and latency-bound, so GB/s on the minimal traffic is the figure
  (H200: ~4.3 TB/s measured copy). L = 16384 at B = 1: 1.07 GB float32.
- ``ssd`` (B, L, H, P, N, G) = (4, 4096, 32, 64, 128, 1) bf16, chunk 256, with D: minimal
  traffic reads x, dt (float32), B, C and writes y: 67.1 + 2.1 + 2 * 4.2 + 67.1 = 145 MB.
  FLOPs of the chunked algorithm at chunk Q per head and token: 2 Q P (intra) + 4 P N
  (chunk state + entering-state output), plus 2 Q N per group and token for C B^T:
  35.4 GFLOP at Q = 256 (the kernel's own Q = 64: 21.7 GFLOP).
- layers ``mamba`` / ``mamba2`` (d_model 1024, B = 1, bf16), forward + backward of the layer
  at L = 16K ... 1M: time per token should stay flat (linear time); out of memory is a result.

Targets (issue 9, H200): selective scan forward >= 10x the associative path and >= 40% of HBM
bandwidth on the minimal traffic (``fwd_hbm_fraction``); forward + backward >= 5x the
associative path; SSD forward + backward >= 1.0x ``mamba_chunk_scan_combined``
(``fwd_bwd_speedup_vs_mamba``); one Mamba and one Mamba-2 layer forward + backward at 1M tokens.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.common import emit, fwd_bwd, layer_fwd_bwd, run_case, run_peer, temp_bytes, time_ms
from sequax.ops.ssm import selective_scan, ssd

HBM_BYTES_PER_S = 4.3e12
SCAN_SHAPE = (8, 2048, 2048, 16)  # batch, length, channels, state
LONG_SCAN_SHAPE = (1, 16384, 2048, 16)
SSD_SHAPE = (4, 4096, 32, 64, 128, 1)  # batch, length, heads, head_dim, state, groups
SSD_CHUNK = 256
LAYER_LENGTHS = (16384, 65536, 262144, 1048576)
PEER_TIMEOUT_S = 900
SCAN_PATHS = {"associative": ("xla", "associative"), "chunked": ("xla", "chunked"), "pallas": ("pallas", None)}


def _scan_inputs(batch, length, channels, state, dtype, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 6)
    seq = lambda k, s=1.0: (s * jax.random.normal(k, (batch, length, channels))).astype(dtype)  # noqa: E731
    A = -jnp.broadcast_to(jnp.arange(1.0, state + 1), (channels, state))  # Mamba's S4D-real init
    B = jax.random.normal(keys[3], (batch, length, state))
    C = jax.random.normal(keys[4], (batch, length, state))
    D = jnp.ones((channels,))
    bias = jnp.full((channels,), -3.0)  # softplus(-3 + N(0, .5)) ~ 0.05: Mamba's dt range
    return (seq(keys[0]), seq(keys[1], 0.5), A, B, C, D, seq(keys[2]), bias)


def _scan(backend, mode):
    def f(u, delta, A, B, C, D, z, bias):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias=bias, delta_softplus=True, mode=mode,
                              backend=backend)

    return f


def _scan_bytes(batch, length, channels, state, dtype):
    item = jnp.dtype(dtype).itemsize
    return 4 * batch * length * channels * item + 2 * batch * length * state * 4


def _measure(fn, args, argnums, minimal_bytes, iters=10):
    fwd, both = fwd_bwd(fn, argnums)
    out = dict(fwd_ms=time_ms(fwd, *args, iters=iters))
    out["fwd_gbps"] = minimal_bytes / out["fwd_ms"] / 1e6
    out["fwd_hbm_fraction"] = minimal_bytes / out["fwd_ms"] / 1e-3 / HBM_BYTES_PER_S
    out["fwd_temp_bytes"] = temp_bytes(fwd, *args)
    out["fwd_bwd_ms"] = time_ms(both, *args, iters=iters)
    out["fwd_bwd_temp_bytes"] = temp_bytes(both, *args)
    return out


def _max_abs_diff(f, g, args):
    a, b = f(*args), g(*args)
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))


def _scan_cases(shape, dtype, paths=tuple(SCAN_PATHS)):
    args = _scan_inputs(*shape, dtype)
    minimal = _scan_bytes(*shape, dtype)
    argnums = (0, 1, 2, 3, 4, 5, 6, 7)
    name = jnp.dtype(dtype).name
    results = {}
    for path in paths:
        def measure(path=path):
            r = _measure(_scan(*SCAN_PATHS[path]), args, argnums, minimal)
            if path == "pallas":
                r["max_abs_diff_vs_associative"] = _max_abs_diff(
                    jax.jit(_scan("pallas", None)), jax.jit(_scan("xla", "associative")), args)
                for anchor in ("associative", "chunked"):
                    if anchor in results:
                        for k in ("fwd_ms", "fwd_bwd_ms"):
                            r[f"{k[:-3]}_speedup_vs_{anchor}"] = results[anchor][k] / r[k]
            results[path] = r
            return r

        run_case(f"selective_scan/{path}", measure, shape=dict(zip("BLDN", shape)), dtype=name,
                 minimal_bytes=minimal)


def _ssd_inputs(batch, length, heads, head_dim, state, groups, dtype=jnp.bfloat16, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    x = jax.random.normal(keys[0], (batch, length, heads, head_dim), dtype)
    dt = jax.nn.softplus(jax.random.normal(keys[1], (batch, length, heads)) - 3.0)
    A = -jnp.linspace(1.0, 16.0, heads)
    B = jax.random.normal(keys[2], (batch, length, groups, state), dtype)
    C = jax.random.normal(keys[3], (batch, length, groups, state), dtype)
    return x, dt, A, B, C, jnp.ones((heads,))


def _ssd(backend):
    def f(x, dt, A, B, C, D):
        return ssd(x, dt, A, B, C, chunk_size=SSD_CHUNK, D=D, backend=backend)

    return f


def _ssd_cases(quick):
    shape = SSD_SHAPE
    args = _ssd_inputs(*shape)
    b, l, h, p, n, g = shape
    minimal = 2 * b * l * h * p * 2 + b * l * h * 4 + 2 * b * l * g * n * 2
    info = dict(shape=dict(zip(("B", "L", "H", "P", "N", "G"), shape)), dtype="bfloat16", chunk=SSD_CHUNK,
                minimal_bytes=minimal)
    results = {}
    for path in ("xla", "pallas"):
        def measure(path=path):
            r = _measure(_ssd(path), args, (0, 1, 2, 3, 4, 5), minimal)
            if path == "pallas":
                r["max_abs_diff_vs_xla"] = _max_abs_diff(jax.jit(_ssd("pallas")), jax.jit(_ssd("xla")), args)
                if "xla" in results:
                    for k in ("fwd_ms", "fwd_bwd_ms"):
                        r[f"{k[:-3]}_speedup_vs_xla"] = results["xla"][k] / r[k]
            results[path] = r
            return r

        run_case(f"ssd/{path}", measure, **info)
    peer = _peer_ssd(shape)
    for line in peer:
        emit(**line)
    mamba = next((line for line in peer if line.get("case") == "ssd/mamba_chunk_scan_combined"
                  and "fwd_ms" in line), None)
    if mamba and "pallas" in results:
        emit(case="ssd/pallas_vs_mamba", **info,
             fwd_speedup_vs_mamba=mamba["fwd_ms"] / results["pallas"]["fwd_ms"],
             fwd_bwd_speedup_vs_mamba=mamba["fwd_bwd_ms"] / results["pallas"]["fwd_bwd_ms"])


def _peer_ssd(shape):
    """``peers_ssm.py`` (Mamba's Triton kernels, PyTorch) in its own process: its JSON lines, or an error line."""
    return run_peer("peers_ssm.py", ["--ssd", ",".join(map(str, shape)), "--chunk", str(SSD_CHUNK)],
                    "ssd/peers", PEER_TIMEOUT_S)


def _layer_cases(lengths):
    """One Mamba / Mamba-2 layer (d_model 1024, B 1, bf16) forward + backward at growing length."""
    for mixer in ("mamba", "mamba2"):
        for length in lengths:
            run_case(f"layer/{mixer}", lambda mixer=mixer, length=length: layer_fwd_bwd(mixer, length),
                     length=length, d_model=1024, batch=1, dtype="bfloat16")


# Block-size rows for the Triton kernels (``sweep``): overrides of the device's table row.
SCAN_SWEEP = [dict(channels=c, time=t, num_warps=w) for c, t, w in
              [(16, 8, 1), (16, 8, 2), (16, 8, 4), (32, 4, 4), (32, 8, 2), (32, 8, 4), (32, 16, 4), (32, 8, 8),
               (64, 8, 4), (64, 8, 8)]]
SSD_SWEEP = [dict(chunk=q, heads_per_program=hp, num_warps=w, bwd_num_warps=bw, segsum=s) for q, hp, w, bw, s in
             [(64, 1, 4, 8, True), (64, 4, 4, 8, True), (64, 4, 8, 8, True), (64, 8, 4, 8, True),
              (64, 4, 4, 4, True), (64, 4, 4, 8, False), (128, 2, 8, 8, True), (128, 4, 8, 8, True),
              (32, 4, 4, 4, True)]]


def _with_table(module, row, fn):
    """``fn()`` with ``row`` overriding the kernel table's row for this device."""
    saved = dict(module.TABLE)
    kind = jax.devices()[0].device_kind.lower()
    key = next((k for k in module.TABLE if k != "default" and kind.startswith(k)), "default")
    module.TABLE[key] = {**module.TABLE["default"], **module.TABLE[key], **row}
    try:
        return fn()
    finally:
        module.TABLE.clear()
        module.TABLE.update(saved)


def sweep():
    """One line per block-size row: the selective scan (float32, ``SCAN_SHAPE``) and SSD (``SSD_SHAPE``)."""
    from pallas_kernels.selective_scan import block_sizes as scan_table
    from pallas_kernels.ssd import block_sizes as ssd_table

    scan_args = _scan_inputs(*SCAN_SHAPE, jnp.float32)
    scan_bytes = _scan_bytes(*SCAN_SHAPE, jnp.float32)
    for row in SCAN_SWEEP:
        run_case("sweep/selective_scan", lambda row=row: _with_table(
            scan_table, row, lambda: _measure(_scan("pallas", None), scan_args, tuple(range(8)), scan_bytes,
                                              iters=5)), **row)
    ssd_args = _ssd_inputs(*SSD_SHAPE)
    for row in SSD_SWEEP:
        run_case("sweep/ssd", lambda row=row: _with_table(
            ssd_table, row, lambda: _measure(_ssd("pallas"), ssd_args, tuple(range(6)), 1, iters=5)), **row)


SPLIT_SWEEP = [dict(split_below=p, split_programs=p, min_piece=m) for p, m in  # cut below p programs, up to p
               [(0, 256), (4096, 256), (8192, 256), (16384, 128), (32768, 128)]]


def split_sweep():
    """One Mamba layer at 1M and 16K tokens without and with the sequence cut into pieces
    (``split_*``, ``min_piece``) first (the 1M figures are the scarce ones), then the selective
    scan at the main shape (float32 and bf16) and at B1 L16K, beside the associative path in
    the same run."""
    from pallas_kernels.selective_scan import block_sizes as scan_table

    for length in (LAYER_LENGTHS[-1], LAYER_LENGTHS[0]):
        for row in (SPLIT_SWEEP[0], SPLIT_SWEEP[3]):
            run_case("split/layer_mamba", lambda row=row, length=length: _with_table(
                scan_table, row, lambda: layer_fwd_bwd("mamba", length)), length=length, d_model=1024, batch=1,
                dtype="bfloat16", **row)
    for shape, dtype in ((LONG_SCAN_SHAPE, jnp.float32), (SCAN_SHAPE, jnp.float32), (SCAN_SHAPE, jnp.bfloat16)):
        args, minimal = _scan_inputs(*shape, dtype), _scan_bytes(*shape, dtype)
        info = dict(shape=dict(zip("BLDN", shape)), dtype=jnp.dtype(dtype).name)
        kept = {}
        run_case("split/associative", lambda args=args, minimal=minimal, kept=kept: kept.setdefault("r", _measure(
            _scan("xla", "associative"), args, tuple(range(8)), minimal, iters=5)), **info)
        anchor = kept.get("r")
        for row in SPLIT_SWEEP if dtype == jnp.float32 else SPLIT_SWEEP[::2]:
            def measure(row=row, args=args, minimal=minimal, anchor=anchor):
                r = _with_table(scan_table, row, lambda: _measure(_scan("pallas", None), args, tuple(range(8)),
                                                                   minimal, iters=5))
                if anchor and "fwd_ms" in anchor:
                    for k in ("fwd_ms", "fwd_bwd_ms"):
                        r[f"{k[:-3]}_speedup_vs_associative"] = anchor[k] / r[k]
                return r

            run_case("split/pallas", measure, **info, **row)


def run(quick: bool) -> None:
    """All cases (``quick``: float32 and bf16 scans at the main shape, SSD, layers at 16K and 1M)."""
    emit(case="ssm/setup", device=jax.devices()[0].device_kind, jax=jax.__version__, quick=quick,
         numpy=np.__version__)
    _scan_cases(SCAN_SHAPE, jnp.float32)
    _scan_cases(SCAN_SHAPE, jnp.bfloat16, paths=("associative", "pallas") if quick else tuple(SCAN_PATHS))
    _scan_cases(LONG_SCAN_SHAPE, jnp.float32, paths=("associative", "pallas") if quick else tuple(SCAN_PATHS))
    _ssd_cases(quick)
    _layer_cases((LAYER_LENGTHS[0], LAYER_LENGTHS[-1]) if quick else LAYER_LENGTHS)


if __name__ == "__main__":
    if "--sweep" in sys.argv:
        sweep()
    elif "--split" in sys.argv:
        split_sweep()
    else:
        run(quick="--quick" in sys.argv)
