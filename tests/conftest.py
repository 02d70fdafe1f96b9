"""Test setup: 8 fake CPU devices for sharding tests, set before jax is imported."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import jax  # noqa: E402  (after the environment above)
import pytest  # noqa: E402

ON_GPU = jax.default_backend() == "gpu"
if ON_GPU:
    # Float32 references on a GPU default to TF32 matmuls, whose error (~3e-4 relative) is larger
    # than the tolerances kernels are held to; compare against true float32.
    jax.config.update("jax_default_matmul_precision", "highest")

# Kernel tests marked `gpu` run interpreted on CPU and compiled on a GPU
# (`JAX_PLATFORMS=cuda python -m pytest -m gpu tests`); `requires_gpu` skips a
# test that has no CPU form (cuDNN, Mosaic GPU).
requires_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a GPU (run with JAX_PLATFORMS=cuda -m gpu)")
