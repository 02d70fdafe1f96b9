"""Softmax attention as a pure function, with masks and backend dispatch.

Layout (as ``jax.nn.dot_product_attention``): ``q`` ``[batch, q_len, heads,
head_dim]``, ``k`` and ``v`` ``[batch, kv_len, kv_heads, head_dim]``;
``heads`` must be a multiple of ``kv_heads`` (MHA, GQA, MQA).

Positions: key ``j`` sits at position ``j``; query ``i`` at position
``i + kv_len - q_len`` (queries are the *last* ``q_len`` positions), so a
decode step or a chunk of prefill against a longer cache needs no offsets.

Which keys a query sees (all conditions combined with AND):

- ``causal``: key position <= query position;
- ``window=(left, right)``: ``q - left <= k <= q + right`` (an int ``w`` means
  ``(w, 0)``); the first ``num_sinks`` keys stay visible regardless of the
  window (attention sinks, StreamingLLM), still subject to causality;
- ``segment_ids``: query and key in the same packed segment.

Logits are ``scale * q.k + bias``, then ``softcap * tanh(logits / softcap)``.
Rows with no visible key return zeros. Math is done in float32; the output
has ``q``'s dtype.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import jax
import jax.numpy as jnp

BACKENDS = ("auto", "reference", "xla", "cudnn")

Window = Union[None, int, Tuple[int, int]]


def normalize_window(window: Window) -> Optional[Tuple[int, int]]:
    """``None`` | ``w`` | ``(left, right)`` -> ``None`` | ``(left, right)``."""
    if window is None:
        return None
    if isinstance(window, int):
        window = (window, 0)
    if len(window) != 2 or any(int(w) < 0 for w in window):
        raise ValueError(
            f"window must be a non-negative int or a (left, right) pair of them, got {window!r}"
        )
    return int(window[0]), int(window[1])


def _split_segment_ids(segment_ids, q_len, kv_len):
    if segment_ids is None:
        return None, None
    if isinstance(segment_ids, (tuple, list)):
        q_seg, kv_seg = segment_ids
    else:
        if q_len != kv_len:
            raise ValueError(
                "segment_ids as one [batch, length] array needs q_len == kv_len; "
                "pass a (q_segment_ids, kv_segment_ids) pair instead"
            )
        q_seg = kv_seg = segment_ids
    return jnp.asarray(q_seg), jnp.asarray(kv_seg)


def attention_mask(
    q_len: int,
    kv_len: int,
    *,
    causal: bool = False,
    window: Window = None,
    num_sinks: int = 0,
    segment_ids=None,
) -> Optional[jnp.ndarray]:
    """Boolean visibility mask ``[batch or 1, 1, q_len, kv_len]`` (True = visible).

    Returns ``None`` when every key is visible to every query.
    """
    window = normalize_window(window)
    q_seg, kv_seg = _split_segment_ids(segment_ids, q_len, kv_len)
    q_pos = jnp.arange(q_len)[:, None] + (kv_len - q_len)
    k_pos = jnp.arange(kv_len)[None, :]
    mask = None

    def both(a, b):
        return b if a is None else a & b

    if window is not None:
        left, right = window
        in_window = (k_pos >= q_pos - left) & (k_pos <= q_pos + right)
        if num_sinks:
            in_window = in_window | (k_pos < num_sinks)
        mask = both(mask, in_window)
    if causal:
        mask = both(mask, k_pos <= q_pos)
    if mask is not None:
        mask = mask[None, None]
    if q_seg is not None:
        same = q_seg[:, None, :, None] == kv_seg[:, None, None, :]
        mask = both(mask, same)
    return mask


def _check_inputs(q, k, v, bias, num_sinks, softcap):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            "q, k, v must be 4-D [batch, length, heads, head_dim]; got shapes "
            f"q{q.shape} k{k.shape} v{v.shape}"
        )
    if k.shape != v.shape[:3] + (k.shape[3],) or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k and v must agree in batch, kv_len and kv_heads; got k{k.shape} v{v.shape}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must have the same batch size; got {q.shape[0]} and {k.shape[0]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must have the same head_dim; got {q.shape[3]} and {k.shape[3]}")
    if q.shape[2] % k.shape[2]:
        raise ValueError(
            f"q heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]}); "
            "change num_heads or num_kv_heads"
        )
    if bias is not None and jnp.ndim(bias) != 4:
        raise ValueError(
            f"bias must be 4-D, broadcastable to [batch, heads, q_len, kv_len]; got shape {jnp.shape(bias)}"
        )
    if num_sinks < 0:
        raise ValueError(f"num_sinks must be >= 0, got {num_sinks}")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"softcap must be positive (or None), got {softcap}")


def attention_reference(q, k, v, *, mask=None, bias=None, softcap=None, scale=None):
    """Materialised-scores attention in float32 (the readable reference).

    ``mask`` ``[batch|1, heads|1, q_len, kv_len]`` bool, ``bias`` broadcastable to
    ``[batch, heads, q_len, kv_len]``. Returns ``[batch, q_len, heads, head_dim]``.
    """
    batch, q_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    groups = heads // kv_heads
    scale = head_dim**-0.5 if scale is None else scale
    qg = q.astype(jnp.float32).reshape(batch, q_len, kv_heads, groups, head_dim)
    logits = jnp.einsum("bqhgd,bkhd->bhgqk", qg, k.astype(jnp.float32)) * scale
    logits = logits.reshape(batch, heads, q_len, -1)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if softcap is not None:
        logits = softcap * jnp.tanh(logits / softcap)
    if mask is None:
        mask = jnp.ones((1, 1, 1, 1), bool)
    masked = jnp.where(mask, logits, -jnp.inf)
    row_max = jnp.max(masked, axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    weights = jnp.where(mask, jnp.exp(logits - row_max), 0.0)
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    probs = weights / jnp.where(denom == 0, 1.0, denom)
    probs = probs.reshape(batch, kv_heads, groups, q_len, -1)
    out = jnp.einsum("bhgqk,bkhd->bqhgd", probs, v.astype(jnp.float32))
    return out.reshape(batch, q_len, heads, v.shape[-1]).astype(q.dtype)


def _cudnn_unsupported(q, segment_ids, num_sinks, softcap, window, causal) -> Optional[str]:
    if jax.default_backend() != "gpu":
        return "cuDNN attention needs a GPU"
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        return f"cuDNN attention needs bfloat16 or float16 inputs, got {q.dtype}"
    if q.shape[-1] > 128 or q.shape[-1] % 8:
        return f"cuDNN attention needs head_dim <= 128 and a multiple of 8, got {q.shape[-1]}"
    if segment_ids is not None:
        return "cuDNN attention here does not take segment_ids"
    if num_sinks:
        return "cuDNN attention does not take attention sinks"
    if softcap is not None:
        return "cuDNN attention does not take softcap"
    if window is not None and window[1] != 0 and not causal:
        return "cuDNN attention supports only left windows"
    return None


def attention(
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    *,
    causal: bool = False,
    window: Window = None,
    segment_ids=None,
    bias: Optional[jnp.ndarray] = None,
    softcap: Optional[float] = None,
    num_sinks: int = 0,
    scale: Optional[float] = None,
    backend: str = "auto",
) -> jnp.ndarray:
    """Softmax attention ``softmax(scale * q k^T + bias) v`` with masks.

    Args:
      q: ``[batch, q_len, heads, head_dim]``.
      k, v: ``[batch, kv_len, kv_heads, head_dim]``; ``heads % kv_heads == 0``.
      causal: mask keys after the query's position.
      window: sliding window ``(left, right)`` or ``w`` for ``(w, 0)``.
      segment_ids: ``[batch, length]`` ints (self-attention) or a
        ``(q_segment_ids [batch, q_len], kv_segment_ids [batch, kv_len])`` pair;
        attention stays within equal ids.
      bias: additive logits bias broadcastable to ``[batch, heads, q_len, kv_len]``.
      softcap: if set, logits become ``softcap * tanh(logits / softcap)``.
      num_sinks: the first ``num_sinks`` keys stay visible through any window.
      scale: logits scale, default ``head_dim ** -0.5``.
      backend: ``"reference"`` (pure JAX), ``"xla"`` / ``"cudnn"`` (through
        ``jax.nn.dot_product_attention``) or ``"auto"`` (cuDNN where it can
        serve the inputs, else XLA, else the reference). A backend named
        explicitly that cannot serve the inputs raises ``ValueError``.

    Returns:
      ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    _check_inputs(q, k, v, bias, num_sinks, softcap)
    window = normalize_window(window)
    q_len, kv_len = q.shape[1], k.shape[1]

    if backend in ("auto", "cudnn"):
        reason = _cudnn_unsupported(q, segment_ids, num_sinks, softcap, window, causal)
        if reason is None:
            return _via_jax_nn(q, k, v, "cudnn", causal, window, None, bias, scale)
        if backend == "cudnn":
            raise ValueError(f"backend='cudnn' cannot serve these inputs: {reason}; use backend='auto'")

    mask = attention_mask(
        q_len, kv_len, causal=causal, window=window, num_sinks=num_sinks, segment_ids=segment_ids
    )
    if backend == "xla" or (backend == "auto" and softcap is None):
        if softcap is not None:
            raise ValueError("backend='xla' does not take softcap; use backend='reference' or 'auto'")
        return _via_jax_nn(q, k, v, "xla", False, None, mask, bias, scale)
    return attention_reference(q, k, v, mask=mask, bias=bias, softcap=softcap, scale=scale)


def _via_jax_nn(q, k, v, implementation, causal, window, mask, bias, scale):
    """``jax.nn.dot_product_attention``; the XLA path receives a full mask."""
    if implementation == "cudnn":
        is_causal = causal and q.shape[1] == k.shape[1]
        if causal and not is_causal:
            mask = attention_mask(q.shape[1], k.shape[1], causal=True, window=window)
            window = None
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias, mask=mask, scale=scale, is_causal=is_causal,
            local_window_size=window, implementation="cudnn",
        )
    out = jax.nn.dot_product_attention(
        q, k.astype(q.dtype), v.astype(q.dtype), bias=bias, mask=mask, scale=scale,
        implementation="xla",
    )
    if mask is not None:
        # XLA spreads a row with no visible key uniformly; the contract says zeros.
        out = out * jnp.any(mask, axis=-1)[:, 0, :, None, None].astype(out.dtype)
    return out
