"""Pallas kernels for Mamba-2's SSD (the chunked algorithm), forward and backward (see api.py)."""

from pallas_kernels.ssd.api import ssd, why_not

__all__ = ["ssd", "why_not"]
