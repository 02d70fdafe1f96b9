"""Where a kernel runs: the helpers every kernel folder's ``api.py`` shares (imports only jax)."""

import jax


def platform() -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: the default backend."""
    name = jax.default_backend()
    return "tpu" if name == "tpu" else ("cpu" if name == "cpu" else "gpu")


def kernel_platform() -> str:
    """Which kernel body runs: ``"tpu"`` (Mosaic) on a TPU, else ``"gpu"`` (Triton; interpreted on a CPU)."""
    return "tpu" if platform() == "tpu" else "gpu"


def interpret() -> bool:
    """Run the kernels in Pallas' interpreter (on a CPU)."""
    return platform() == "cpu"


def pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for n <= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()
