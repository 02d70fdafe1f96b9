"""Test setup: 8 fake CPU devices for sharding tests, set before jax is imported."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


import jax  # noqa: E402  (after the environment above)
import pytest  # noqa: E402

# On CPU, this process compiles its (small) test programs unoptimised: they compile about a third
# faster and run in milliseconds either way. XLA reads its flags when the backend starts, so the
# flag is added for that moment only: subprocesses (training runs, notebooks) and the
# learning tests' runs (tests/train/learn_until_solved.py) keep optimised code.
_FLAGS = os.environ["XLA_FLAGS"]
if os.environ["JAX_PLATFORMS"] == "cpu" and "xla_backend_optimization_level" not in _FLAGS:
    os.environ["XLA_FLAGS"] = _FLAGS + " --xla_backend_optimization_level=0"
    jax.devices()
    os.environ["XLA_FLAGS"] = _FLAGS

ON_GPU = jax.default_backend() == "gpu"
if ON_GPU:
    # Float32 references on a GPU default to TF32 matmuls, whose error (~3e-4 relative) is larger
    # than the tolerances kernels are held to; compare against true float32.
    jax.config.update("jax_default_matmul_precision", "highest")

# Kernel tests marked `gpu` run interpreted on CPU and compiled on a GPU
# (`JAX_PLATFORMS=cuda python -m pytest -m gpu tests`); `requires_gpu` skips a
# test that has no CPU form (cuDNN, Mosaic GPU).
requires_gpu = pytest.mark.skipif(not ON_GPU, reason="needs a GPU (run with JAX_PLATFORMS=cuda -m gpu)")


def pytest_collection_modifyitems(config, items):
    """The longest tests (marked ``slow``) first, so that with ``-n 2`` they overlap the many
    short ones instead of running last, each worker alone with one of them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
