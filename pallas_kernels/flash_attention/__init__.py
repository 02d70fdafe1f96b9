"""Pallas flash attention (forward + backward) with every mask of ``sequax.ops.attention`` (see api.py)."""

from pallas_kernels.flash_attention.api import alibi_of, attention, flash_attention, why_not

__all__ = ["alibi_of", "attention", "flash_attention", "why_not"]
