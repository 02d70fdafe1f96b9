"""cuDNN attention backend against the float32 reference and the bf16 reference, on a GPU.

    python experiments/check_cudnn_attention.py
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax
import jax.numpy as jnp

from sequax.ops.attention import attention

keys = jax.random.split(jax.random.PRNGKey(0), 3)
q = jax.random.normal(keys[0], (2, 256, 8, 64), jnp.bfloat16)
k = jax.random.normal(keys[1], (2, 256, 2, 64), jnp.bfloat16)
v = jax.random.normal(keys[2], (2, 256, 2, 64), jnp.bfloat16)
for kwargs in (dict(), dict(causal=True), dict(causal=True, window=32)):
    ref = attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32),
                    backend="xla", mode="dense", **kwargs)
    out = attention(q, k, v, backend="cudnn", **kwargs)
    ref16 = attention(q, k, v, backend="xla", mode="dense", **kwargs)
    err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)))
    err16 = float(jnp.max(jnp.abs(ref16.astype(jnp.float32) - ref)))
    print(f"cudnn {kwargs}: max|cudnn - f32 ref| = {err:.4f}; max|bf16 ref - f32 ref| = {err16:.4f}")
