"""pallas_kernels.linear_scan against sequax.ops.scan.linear_scan's pure-JAX path.

Marked `gpu`: interpreted on CPU, compiled on a GPU (`JAX_PLATFORMS=cuda pytest -m gpu`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.linear_scan import pallas_gpu, pallas_tpu
from sequax.ops.scan import LINEAR_SCAN, linear_scan

pytestmark = pytest.mark.gpu

RNG = np.random.default_rng(0)
SHAPE = (2, 37, 3, 50)  # 150 channels: one full and one partial block of 128
A = jnp.asarray(RNG.uniform(0.5, 1.0, SHAPE), jnp.float32)
B = jnp.asarray(RNG.normal(size=SHAPE), jnp.float32)
H0 = jnp.asarray(RNG.normal(size=SHAPE[:1] + SHAPE[2:]), jnp.float32)
SEG = jnp.asarray(np.cumsum(RNG.uniform(size=SHAPE[:2]) < 0.15, axis=1))
SEG = SEG.at[:, 18].set(SEG[:, 18] + 7)  # isolated one-token segments
OPTIONS = {
    "plain": {},
    "initial_state": {"initial_state": H0},
    "segments": {"segment_ids": SEG},
    "both": {"initial_state": H0, "segment_ids": SEG},
}


def _loss(backend, mode, reverse, opts):
    def loss(a, b, h0):
        kw = dict(opts)
        if "initial_state" in kw:
            kw["initial_state"] = h0
        h, last = linear_scan(a, b, reverse=reverse, backend=backend, mode=mode, return_state=True, **kw)
        return jnp.sum(jnp.sin(h)) + jnp.sum(last**2)

    return loss


@pytest.mark.parametrize("name, reverse", [("plain", False), ("initial_state", True), ("segments", False),
                                           ("both", True)])
def test_forward_and_gradients_match_reference(name, reverse):
    opts = OPTIONS[name]
    ref, ref_last = linear_scan(A, B, reverse=reverse, backend="xla", mode="sequential", return_state=True, **opts)
    out, last = linear_scan(A, B, reverse=reverse, backend="pallas", return_state=True, **opts)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(last, ref_last, rtol=1e-5, atol=1e-5)
    g_ref = jax.grad(_loss("xla", "sequential", reverse, opts), argnums=(0, 1, 2))(A, B, H0)
    g = jax.grad(_loss("pallas", None, reverse, opts), argnums=(0, 1, 2))(A, B, H0)
    for x, y in zip(g, g_ref):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_broadcast_decay_and_bf16():
    a = A[..., :1]  # one decay per (position, group), broadcast over the last axis
    b16 = B.astype(jnp.bfloat16)
    ref32 = linear_scan(a, B, backend="xla")
    ref16 = linear_scan(a, b16, backend="xla")
    out16 = linear_scan(a, b16, backend="pallas")
    assert out16.dtype == jnp.float32  # result dtype of (float32 a, bf16 b), as the reference
    own_error = float(jnp.max(jnp.abs(ref16.astype(jnp.float32) - ref32)))
    err = float(jnp.max(jnp.abs(out16.astype(jnp.float32) - ref32)))
    assert err <= 1.01 * own_error + 1e-6  # both consume the same rounded inputs in float32


def test_tpu_kernel_interpreted():
    a, b = A.reshape(2, 37, -1), B.reshape(2, 37, -1)
    a = jnp.pad(a, [(0, 0), (0, 11), (0, 0)], constant_values=1.0)  # 48 = 3 tiles of 16
    b = jnp.pad(b, [(0, 0), (0, 11), (0, 0)])
    h0 = H0.reshape(2, 1, -1)
    for reverse in (False, True):
        ref = linear_scan(a, b, initial_state=h0[:, 0], reverse=reverse, backend="xla")
        out = pallas_tpu.scan(a, b, h0, reverse=reverse, features=128, time=16, interpret=True)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_kernels_lower_without_hardware(platform):
    a, b = jnp.ones((2, 64, 256)), jnp.ones((2, 64, 256))
    h0 = jnp.zeros((2, 1, 256))
    if platform == "cuda":
        f = lambda a, b, h0: pallas_gpu.scan(a, b, h0, reverse=False, features=128, num_warps=4, interpret=False)  # noqa: E731
    else:
        f = lambda a, b, h0: pallas_tpu.scan(a, b, h0, reverse=True, features=128, time=16, interpret=False)  # noqa: E731
    jax.jit(f).trace(a, b, h0).lower(lowering_platforms=(platform,))


def test_dispatch_refuses_what_the_kernel_cannot_do():
    complex_b = B.astype(jnp.complex64)
    with pytest.raises(ValueError, match="real inputs"):
        linear_scan(A, complex_b, backend="pallas")
    with pytest.raises(ValueError, match="mode=None"):
        linear_scan(A, B, backend="pallas", mode="chunked")
    # auto never raises: it falls back to the pure-JAX path.
    np.testing.assert_allclose(linear_scan(A, complex_b, backend="auto").real, linear_scan(A, B), atol=1e-5)
    assert LINEAR_SCAN.resolve("auto", a=A, b=complex_b, mode=None) == "xla"
