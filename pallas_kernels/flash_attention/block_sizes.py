"""Block sizes for the flash-attention kernels, per device kind and head dim.

Triton rows (GPU): ``kernel: (block_q, block_k, num_warps, num_stages)`` for the
forward (``fwd``), the dq kernel (``dq``: its key tiles are the inner loop) and
the dk/dv kernel (``dkdv``: ``block_k`` key rows stay in registers while
``block_q`` query tiles stream past). TPU rows: ``(block_q, block_k)`` per
kernel (VMEM tiles; the MXU wants multiples of 128). Rows are looked up by the
start of ``jax.devices()[0].device_kind`` (lower case); ``"cpu"`` serves interpret
mode with small blocks so that short test sequences still span several tiles.

Every block is a power of two >= 16; the api shrinks a block to the padded
length of a short sequence and, with a block mask, to its block size.
The H100/H200 rows follow the published Triton flash-attention tunings for
Hopper (128-row query tiles, 64-key inner tiles at head dim 128, fewer rows at
256 to stay within registers); `experiments/benchmark_attention.py --sweep`
measures alternatives.
"""

import jax

_HOPPER = {
    64: dict(fwd=(128, 64, 4, 3), dq=(128, 64, 4, 3), dkdv=(64, 128, 4, 3)),
    # head dim 128: measured on an H200 (benchmark_attention.py --sweep, 2026-12-02, BENCHMARKS.md)
    128: dict(fwd=(128, 128, 8, 3), dq=(128, 128, 8, 2), dkdv=(64, 64, 4, 3)),
    256: dict(fwd=(64, 64, 8, 2), dq=(64, 64, 8, 2), dkdv=(32, 64, 8, 2)),
}
_AMPERE = {
    64: dict(fwd=(128, 64, 4, 3), dq=(128, 64, 4, 3), dkdv=(64, 128, 4, 3)),
    128: dict(fwd=(128, 64, 4, 2), dq=(64, 64, 4, 2), dkdv=(64, 64, 4, 2)),
    256: dict(fwd=(64, 32, 4, 2), dq=(64, 32, 4, 2), dkdv=(32, 64, 8, 1)),
}
_TPU = {d: dict(fwd=(512, 512), dq=(512, 512), dkdv=(512, 512)) for d in (64, 128, 256)}
_CPU = {d: dict(fwd=(16, 16, 4, 1), dq=(16, 16, 4, 1), dkdv=(16, 16, 4, 1)) for d in (64, 128, 256)}

TABLE = {
    "nvidia h200": _HOPPER,
    "nvidia h100": _HOPPER,
    "nvidia gh200": _HOPPER,
    "nvidia a100": _AMPERE,
    "tpu": _TPU,
    "cpu": _CPU,
    "default": _AMPERE,
}


# The softcap's tanh in compiled GPU kernels on 16-bit inputs (``scores.ScoreSpec.tanh``): "exp2", or
# "approx" (the GPU's tanh.approx) where measured faster (``experiments.bench.attention.softcap_tanh_cases``).
# H200, causal softcap 30, B4 H16 L8192 D128 bf16, Triton kernels, same run (2026-12-02): forward 5.61 ->
# 3.61 ms, forward+backward 19.64 -> 15.14 ms, the same largest output difference from float32 (0.0101).
SOFTCAP_TANH = {"nvidia h200": "approx", "nvidia h100": "approx", "default": "exp2"}


def _row(table, kind):
    """``table``'s entry for device ``kind`` (default: the default device's): the first key ``kind``
    starts with (lower case), else ``"default"``."""
    kind = (kind or jax.devices()[0].device_kind).lower()
    return next((v for k, v in table.items() if k != "default" and kind.startswith(k)), table["default"])


def softcap_tanh(kind: str = None) -> str:
    """``"exp2"`` or ``"approx"``: the softcap's tanh for compiled GPU kernels on ``kind``."""
    return _row(SOFTCAP_TANH, kind)


# backend="mosaic_gpu": the backward's kernels, "mosaic_gpu" (mosaic_gpu_bwd) or "triton" (the Triton
# dq and dk/dv kernels from the Mosaic forward's lse).
MOSAIC_GPU_BACKWARD = {"default": "mosaic_gpu"}


# backend=None on a GPU: the Mosaic GPU kernels where they serve the call (plain causal / bidirectional,
# softcap, bf16/f16, head dim 64/128) and this says so, else the Triton kernels. H200, B4 H16 L8192 D128
# bf16, forward+backward against cuDNN's plain attention, same run (2026-12-02): causal 0.79 (Triton 0.56),
# causal softcap 30 0.56 (Triton 0.38), bidirectional 0.75 (Triton 0.66).
PREFER_MOSAIC_GPU = {"nvidia h200": True, "nvidia h100": True, "default": False}


def prefer_mosaic_gpu(kind: str = None) -> bool:
    """Whether ``flash_attention(backend=None)`` takes the Mosaic GPU kernels where they serve, on ``kind``."""
    return bool(_row(PREFER_MOSAIC_GPU, kind))


def mosaic_gpu_backward(kind: str = None) -> str:
    """``"mosaic_gpu"`` or ``"triton"``: the backward of ``backend="mosaic_gpu"`` on ``kind``."""
    return _row(MOSAIC_GPU_BACKWARD, kind)


def block_sizes(head_dim: int, kind: str = None, **overrides):
    """``{"fwd": row, "dq": row, "dkdv": row}`` for ``head_dim`` on device ``kind`` (default device).

    ``head_dim`` is rounded up to a row of the table (64, 128 or 256);
    ``overrides`` replace whole rows (``fwd=(64, 64, 4, 2)``).
    """
    table = _row(TABLE, kind)
    dim = next(d for d in (64, 128, 256) if head_dim <= d or d == 256)
    return {**table[dim], **{k: tuple(v) for k, v in overrides.items() if v is not None}}
