"""Pallas kernels for sequax's hot paths (GPU: Triton and Mosaic GPU; TPU: Mosaic).

One folder per op (``api.py``, ``pallas_gpu.py``, ``mosaic_gpu.py``,
``pallas_tpu.py``, ``block_sizes.py``), each exposing the signature of its
pure-JAX reference in ``sequax.ops`` and tested against it (interpreted on CPU).
This package imports only jax; ``sequax.ops`` reaches it lazily through
``backend="pallas"``. The contract is written in ``pallas_kernels/README.md``;
``linear_scan`` is its worked example.
"""
