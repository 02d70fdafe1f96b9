"""Block sizes for the SSD kernels, per device kind.

GPU (Triton) entries:

- ``chunk``: positions per chunk (power of two >= 16): the intra-chunk matmuls
  are ``[chunk, chunk]``; the states written per chunk shrink as it grows.
- ``head_block``: ``head_dim`` rows of the state per program of the
  sequential state kernels (more programs when batch * heads is small).
- ``heads_per_program``: heads one chunk-parallel program loops over, sharing
  ``C B^T`` (the largest divisor of heads-per-group not above it is used).
- ``segsum``: decays between two positions as sums of the ``dt A`` they span
  (a cumulative sum down a ``[chunk, chunk]`` tile; exact whatever the
  chunk's total) rather than differences of cumulative sums (cheaper, loses
  ``|total| * eps`` after strong decays).
- ``num_warps``, ``num_stages``: Triton launch parameters; ``bwd_num_warps`` for the
  chunk-gradient kernel, which keeps several ``[chunk, chunk]`` float32 tiles live.

TPU (Mosaic) entries: ``chunk`` (a multiple of 128 for the lane layout of the
``[chunk, chunk]`` tiles).

Rows are looked up by the start of ``jax.devices()[0].device_kind`` (lower
case); ``"default"`` serves any other device and interpret mode.
"""

import jax

GPU_ROW = dict(chunk=64, head_block=32, heads_per_program=4, num_warps=4, num_stages=2, bwd_num_warps=8,
               segsum=True)
TABLE = {
    "nvidia h200": dict(GPU_ROW),
    "nvidia h100": dict(GPU_ROW),
    "tpu": dict(chunk=128),
    "default": dict(GPU_ROW),
}


def block_sizes(**overrides):
    """The table row for the default device, with ``overrides`` applied."""
    kind = jax.devices()[0].device_kind.lower()
    row = next((v for k, v in TABLE.items() if k != "default" and kind.startswith(k)), TABLE["default"])
    return {**TABLE["default"], **row, **{k: v for k, v in overrides.items() if v is not None}}
