"""Pallas FFT convolution: the FFT as small dense DFT matmuls, filter multiply and inverse fused (see api.py)."""

from pallas_kernels.fftconv.api import convolve, fft_conv, why_not

__all__ = ["convolve", "fft_conv", "why_not"]
