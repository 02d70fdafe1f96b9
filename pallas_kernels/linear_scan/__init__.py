"""Pallas kernels for ``h_t = a_t h_{t-1} + b_t`` (the contract's worked example; see ../README.md)."""

from pallas_kernels.linear_scan.api import linear_scan, why_not

__all__ = ["linear_scan", "why_not"]
