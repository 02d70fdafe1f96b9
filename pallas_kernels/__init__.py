"""Pallas kernels for sequax's hot paths (GPU: Triton and Mosaic GPU; TPU: Mosaic).

One folder per kernel (``reference.py``, ``pallas_gpu.py``, ``pallas_tpu.py``,
``api.py``, ``block_sizes.py``), each with the signature of its pure-JAX
reference in ``sequax.ops`` and tested against it (interpreted on CPU).
``sequax.ops`` reaches them through ``backend="pallas"``. This package depends
only on jax.
"""
