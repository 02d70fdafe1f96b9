"""Pallas kernels for Mamba's selective scan (S6), forward and backward (see api.py)."""

from pallas_kernels.selective_scan.api import selective_scan, why_not

__all__ = ["selective_scan", "why_not"]
