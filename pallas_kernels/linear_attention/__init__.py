"""Pallas kernels for chunked linear attention (see ../README.md for the folder contract).

``gated`` serves ``gla``, ``retention`` and ``linear_attention``; ``delta_rule``
serves ``delta_rule`` (``sequax.ops.linear_attention``). Files: ``api.py``
(custom_vjp, padding, ``why_not``), ``pallas_gpu.py`` / ``pallas_gpu_delta.py``
(Triton), ``pallas_tpu.py`` (Mosaic TPU), ``tiles.py`` (in-kernel helpers),
``block_sizes.py``.
"""

from pallas_kernels.linear_attention.api import delta_rule, gated, why_not, why_not_delta

__all__ = ["delta_rule", "gated", "why_not", "why_not_delta"]
