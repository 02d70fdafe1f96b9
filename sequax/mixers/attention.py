"""Multi-head softmax attention mixer (MHA / GQA / MQA) over ``sequax.ops.attention``."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from sequax.mixers.registry import register
from sequax.ops import positional
from sequax.ops.attention import attention, normalize_window

POSITIONAL = ("rope", "none")


@register("attention")
class Attention(nn.Module):
    """Softmax attention over ``x`` ``[batch, length, d_model]``.

    ``num_kv_heads`` < ``num_heads`` gives GQA (1 gives MQA). ``positional``
    selects RoPE or NoPE (``"none"``).
    """

    d_model: int
    num_heads: int = 4
    num_kv_heads: Optional[int] = None  # None: same as num_heads
    head_dim: Optional[int] = None  # None: d_model // num_heads
    causal: bool = True
    positional: str = "rope"
    rope_base: float = 10000.0
    window: Any = None  # None | int | (left, right)
    num_sinks: int = 0
    softcap: Optional[float] = None
    use_bias: bool = False
    backend: str = "auto"
    dtype: Any = jnp.float32

    def _dims(self):
        if self.d_model % self.num_heads and self.head_dim is None:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide d_model ({self.d_model}); "
                "change model.num_heads or model.d_model"
            )
        kv_heads = self.num_heads if self.num_kv_heads is None else self.num_kv_heads
        if kv_heads <= 0 or self.num_heads % kv_heads:
            raise ValueError(
                f"num_kv_heads ({kv_heads}) must divide num_heads ({self.num_heads}); "
                "change mixer_kwargs.num_kv_heads"
            )
        if self.positional not in POSITIONAL:
            raise ValueError(f"unknown positional scheme {self.positional!r}; choose one of {POSITIONAL}")
        head_dim = self.head_dim or self.d_model // self.num_heads
        return kv_heads, head_dim

    def setup(self):
        kv_heads, head_dim = self._dims()
        normalize_window(self.window)
        dense = lambda features, name: nn.DenseGeneral(  # noqa: E731
            features, use_bias=self.use_bias, dtype=self.dtype, name=name
        )
        self.query = dense((self.num_heads, head_dim), "query")
        self.key = dense((kv_heads, head_dim), "key")
        self.value = dense((kv_heads, head_dim), "value")
        self.out = nn.DenseGeneral(
            self.d_model, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype, name="out"
        )

    def _rope(self, x, positions):
        if self.positional == "rope":
            return positional.apply_rope(x, positions, base=self.rope_base)
        return x

    def __call__(self, x, *, segment_ids=None, deterministic=True):
        positions = jnp.arange(x.shape[1])
        q = self._rope(self.query(x), positions)
        k = self._rope(self.key(x), positions)
        v = self.value(x)
        y = attention(
            q, k, v,
            causal=self.causal,
            window=self.window,
            segment_ids=segment_ids,
            softcap=self.softcap,
            num_sinks=self.num_sinks,
            backend=self.backend,
        )
        return self.out(y)
