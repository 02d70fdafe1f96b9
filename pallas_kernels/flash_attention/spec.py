"""The static configuration of one flash-attention kernel launch (hashable: a jit/custom_vjp key)."""

from __future__ import annotations

import dataclasses

from pallas_kernels.flash_attention.masks import MaskSpec
from pallas_kernels.flash_attention.scores import ScoreSpec


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """Mask and score options, head counts, tile sizes and launch parameters of one kernel."""

    mask: MaskSpec
    score: ScoreSpec
    heads: int
    kv_heads: int
    block_q: int
    block_k: int
    num_warps: int = 4  # Triton only
    num_stages: int = 2  # Triton only
    layout_cols: int = 0  # padded layout width (block mask only)
    batched_lists: bool = False  # tile lists per batch row (else shared by the batch)
    batched_positions: bool = False  # explicit positions per batch row
    reverse: bool = False  # visit query blocks last-first (causal load balance)
    precise: bool = False  # float32 inputs: IEEE float32 matmuls (no TF32)
    max_count: int = 0  # TPU only: static bound on the visible tiles of a row of the tile lists

    @property
    def groups(self) -> int:
        return self.heads // self.kv_heads
