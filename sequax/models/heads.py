"""Sequence-level heads: classification (pooled) and two-tower retrieval."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

POOLINGS = ("mean", "last")


def pool(x, lengths, pooling: str):
    """Pool ``x`` ``[batch, length, d]`` over the first ``lengths`` ``[batch]`` positions.

    ``lengths=None`` means every position counts. ``mean`` averages them;
    ``last`` takes position ``lengths - 1``.
    """
    batch, length, _ = x.shape
    if lengths is None:
        lengths = jnp.full((batch,), length, jnp.int32)
    if pooling == "mean":
        mask = (jnp.arange(length)[None, :] < lengths[:, None]).astype(x.dtype)
        total = jnp.einsum("bld,bl->bd", x, mask)
        return total / jnp.maximum(lengths, 1)[:, None].astype(x.dtype)
    if pooling == "last":
        return x[jnp.arange(batch), jnp.clip(lengths - 1, 0, length - 1)]
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")


class ClassificationHead(nn.Module):
    """Pooled features -> logits ``[batch, num_classes]``."""

    num_classes: int
    pooling: str = "mean"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, lengths=None):
        pooled = pool(x, lengths, self.pooling)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(pooled).astype(jnp.float32)


class RetrievalHead(nn.Module):
    """Two-tower matching (LRA Retrieval): features of both documents, combined.

    ``x`` ``[2 * batch, length, d]`` holds the two documents of each pair
    interleaved (pair i at rows 2i, 2i+1). The pair is scored from
    ``[u, v, u * v, u - v]`` by an MLP.
    """

    num_classes: int
    pooling: str = "mean"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, lengths=None):
        pooled = pool(x, lengths, self.pooling)
        pooled = pooled.reshape(-1, 2, pooled.shape[-1])
        u, v = pooled[:, 0], pooled[:, 1]
        feats = jnp.concatenate([u, v, u * v, u - v], axis=-1)
        h = nn.gelu(nn.Dense(x.shape[-1], dtype=self.dtype, name="hidden")(feats))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(h).astype(jnp.float32)
