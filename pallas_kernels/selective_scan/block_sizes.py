"""Block sizes for the selective-scan kernels, per device kind.

GPU (Triton) entries:

- ``channels``: most channels one program scans side by side (its state tile is
  ``[channels, state]`` in registers); shrunk (down to ``min_channels``) until
  the grid has at least ``min_programs`` programs, so a small batch still
  fills the SMs.
- ``time``: steps per tile: the loads of a tile are issued together (and the
  next tile's are prefetched while this one is computed), and the backward
  keeps a tile's states in registers.
- ``chunk``: steps between the boundary states the forward stores for the
  backward (a multiple of ``time``; the backward recomputes one chunk at a time).
- ``num_warps``: warps per program.
- ``split_below``, ``split_programs``, ``min_piece``: when the grid has fewer
  than ``split_below`` programs (a small batch), the sequence is cut into
  enough pieces of at least ``min_piece`` steps to make ``split_programs``
  programs, scanned side by side (two kernel passes and a scan over the
  pieces' states: ``api._split_scan``). H200, ``python -m experiments.bench.ssm
  --split`` (2026-12-02): at B1 L16K D2048 the cut (128 pieces) takes the
  float32 scan from 6.33 to 1.80 ms forward and 27.9 to 9.6 ms forward +
  backward, a Mamba layer at 16K tokens from 31.5 to 14.8 ms; at B8 L2048
  (1,024 programs) it is slower (1.2 -> 1.8 ms: twice the work, no idle SMs
  to fill), hence the threshold.

TPU (Mosaic) entries: ``channels`` (lanes, a multiple of 128) and ``time``
(steps per grid step staged in VMEM, a multiple of 8).

Rows are looked up by the start of ``jax.devices()[0].device_kind`` (lower
case); ``"default"`` serves any other device and interpret mode.
"""

import jax

TABLE = {
    # H200: the fastest forward+backward row of `python -m experiments.bench.ssm --sweep` (2026-12-02)
    "nvidia h200": dict(channels=16, min_channels=16, min_programs=264, time=8, chunk=128, num_warps=1,
                        split_below=1024, split_programs=16384, min_piece=128),
    "nvidia h100": dict(channels=32, min_channels=16, min_programs=264, time=8, chunk=128, num_warps=4),
    "tpu": dict(channels=128, time=128),
    "default": dict(channels=32, min_channels=16, min_programs=264, time=8, chunk=128, num_warps=4,
                    split_below=0, split_programs=16384, min_piece=128),
}


def block_sizes(**overrides):
    """The table row for the default device, with ``overrides`` applied."""
    kind = jax.devices()[0].device_kind.lower()
    row = next((v for k, v in TABLE.items() if k != "default" and kind.startswith(k)), TABLE["default"])
    return {**TABLE["default"], **row, **{k: v for k, v in overrides.items() if v is not None}}
