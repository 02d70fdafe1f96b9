"""The cuDNN attention backend (``auto``'s first choice on a GPU) against the float32 reference.

Runs on a GPU only (``JAX_PLATFORMS=cuda python -m pytest -m gpu tests/ops/test_attention_cudnn.py``).
cuDNN takes bf16 inputs, so it is held to the bf16 bar: its error against the float32 reference
may be at most 1.5x (plus a bf16 ulp near 1) the error of the pure-JAX reference computed in bf16
on the same inputs, forward and for every gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.ops.attention import attention
from tests.conftest import requires_gpu

pytestmark = [pytest.mark.gpu, requires_gpu]

B, L, H, KH, D = 2, 256, 8, 2, 64  # GQA: 4 query heads per key/value head
ULP = 2.0 ** -8
MASKS = {"none": dict(), "causal": dict(causal=True), "causal_window": dict(causal=True, window=32)}


def _inputs():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q = jax.random.normal(keys[0], (B, L, H, D), jnp.bfloat16)
    k = jax.random.normal(keys[1], (B, L, KH, D), jnp.bfloat16)
    v = jax.random.normal(keys[2], (B, L, KH, D), jnp.bfloat16)
    cotangent = jax.random.normal(keys[3], (B, L, H, D), jnp.float32)
    return q, k, v, cotangent


def _value_and_grads(backend, dtype, cotangent, mask, q, k, v):
    def f(q, k, v):
        cast = [x.astype(dtype) for x in (q, k, v)]
        kwargs = dict(mode="dense") if backend == "xla" else {}
        return attention(*cast, backend=backend, **kwargs, **mask).astype(jnp.float32)

    out, vjp = jax.vjp(f, q, k, v)
    return (out, *vjp(cotangent))


@pytest.mark.parametrize("mask", sorted(MASKS))
def test_cudnn_is_as_accurate_as_the_bf16_reference(mask):
    q, k, v, cotangent = _inputs()
    run = lambda backend, dtype: jax.jit(
        lambda *a: _value_and_grads(backend, dtype, cotangent, MASKS[mask], *a))(q, k, v)
    want = run("xla", jnp.float32)
    bf16_reference = run("xla", jnp.bfloat16)
    cudnn = run("cudnn", jnp.bfloat16)
    for name, got, ref16, ref in zip(("out", "dq", "dk", "dv"), cudnn, bf16_reference, want):
        ref = np.asarray(ref, np.float32)
        own_error = float(np.max(np.abs(np.asarray(ref16, np.float32) - ref)))
        error = float(np.max(np.abs(np.asarray(got, np.float32) - ref)))
        scale = float(np.max(np.abs(ref)))
        assert error <= 1.5 * own_error + ULP * scale, (name, error, own_error)
