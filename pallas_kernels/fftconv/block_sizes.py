"""Tile sizes and numerics of the FFT-convolution kernels, per device kind.

- ``max_size``: the longest level a kernel transforms on chip (a sequence whose
  FFT fits is one pass end to end; longer ones are split into levels staged
  through HBM, see :mod:`pallas_kernels.fftconv.plan`).
- ``dense_max``: the largest radix of one matmul stage (levels above it run as
  two stages ``a x b``); ``two_stage=False`` makes every level one dense matmul
  (TPU: MXU-shaped ``[s, s] @ [s, 128]`` tiles, no reshapes in registers).
- ``tile`` / ``tile_bwd``: complex elements per program (``level size x
  columns``) in the forward passes / the backward's mid pass (which holds the
  filter's gradient accumulator as well).
- ``precision``: ``"bf16x3"`` (split-bf16 matmuls, ~1e-5 relative error, the
  default), ``"bf16"`` (~4e-3) or ``"f32"`` (CUDA cores; slow).
- ``num_warps``: Triton warps per program (GPU); ``num_warps_bwd``: those of the
  backward's passes (``None``: the same).

Rows are looked up by the start of ``jax.devices()[0].device_kind`` (lower
case); ``"default"`` serves any other device and interpret mode.
"""

import jax

TABLE = {
    # H200: on-chip levels of at most 512 points (measured 2026-12-02, BENCHMARKS.md: fwd+bwd
    # 12.38 vs 14.24 ms at B8 L16K C1024, 0.77 vs 1.10 ms at L1024; wider, lighter tiles).
    "nvidia h200": dict(max_size=512, dense_max=64, tile=8192, tile_bwd=4096, num_warps=8),
    "nvidia h100": dict(max_size=2048, dense_max=64, tile=8192, tile_bwd=4096, num_warps=8),
    "tpu": dict(max_size=256, dense_max=256, two_stage=False),
    "default": dict(max_size=2048, dense_max=64, two_stage=True, tile=8192, tile_bwd=4096, num_warps=8,
                    num_warps_bwd=None, precision="bf16x3"),
}


def block_sizes(kind=None, **overrides):
    """The table row for ``kind`` (default: the default device's kind), with ``overrides`` (non-None) applied."""
    kind = (kind or jax.devices()[0].device_kind).lower()
    row = next((v for k, v in TABLE.items() if k != "default" and kind.startswith(k)), TABLE["default"])
    return {**TABLE["default"], **row, **{k: v for k, v in overrides.items() if v is not None}}
