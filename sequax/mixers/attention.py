"""Multi-head attention mixer (MHA / GQA / MQA) over ``sequax.ops.attention``, with KV-cache decoding."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sequax.mixers.registry import register
from sequax.ops import positional
from sequax.ops.attention import (
    SCORES,
    attention,
    block_sparse_layout,
    combine_attention,
    normalize_window,
)

POSITIONAL = ("rope", "alibi", "t5", "none")


@register("attention")
class Attention(nn.Module):
    """Attention over ``x`` ``[batch, length, d_model]`` -> ``[batch, length, d_model]``.

    Heads: ``num_kv_heads`` < ``num_heads`` gives GQA (1 gives MQA).

    Positions (``positional``): ``"rope"`` (``rope_base``; ``rope_scaling``
    ``"linear"`` / ``"ntk"`` with ``rope_scale_factor`` for context extension),
    ``"alibi"``, ``"t5"`` (a learned bias table ``[t5_num_buckets, num_heads]``
    named ``t5_bias``; ``t5_max_distance``) or ``"none"`` (NoPE).

    Masks: ``causal``; ``window`` (``w`` or ``(left, right)``) with
    ``num_sinks`` always-visible first tokens; block-sparse when
    ``sparse_block_size > 0`` (layout from ``sparse_local_blocks``,
    ``sparse_global_blocks``, ``sparse_stride``; see
    ``sequax.ops.attention.block_sparse_layout``).

    ``max_distance`` (LM-Infinite, Han et al. 2023): the distance a position
    scheme sees is capped at ``max_distance``. ALiBi and T5 clip the relative
    position. RoPE needs two passes merged by their log-sum-exp: keys within
    the cap with ordinary rotations, and keys beyond it (the sinks, when a
    window is set) with the query rotated to position ``max_distance`` and the
    key left unrotated (position 0), so their relative rotation is exactly
    ``max_distance``. With RoPE it needs ``causal``, ``score="softmax"``, no
    block-sparsity, and ``window`` either unset (every far key is capped, as
    ReRoPE) or equal to ``(max_distance, 0)`` (the Λ-shape: sinks + window).

    ``score="softmax"`` or ``"softplus"`` (``softplus_train_len``),
    ``softcap``, ``dropout_rate`` on attention weights (active only with
    ``deterministic=False``, using the ``"dropout"`` rng).

    Decoding: ``init_state(batch_size)`` and ``step(x_t, state)``. With a
    window the KV cache is a ring buffer of ``num_sinks + left + 1`` slots
    (sink slots kept, the rest overwritten cyclically); otherwise it holds
    ``decode_cache_size`` positions, and a step past that returns NaN. The
    cache stores unrotated keys and their absolute positions, so masks, RoPE,
    ALiBi and T5 see the same positions as the parallel form.
    """

    d_model: int
    num_heads: int = 4
    num_kv_heads: Optional[int] = None  # None: same as num_heads
    head_dim: Optional[int] = None  # None: d_model // num_heads
    causal: bool = True
    positional: str = "rope"  # rope | alibi | t5 | none
    rope_base: float = 10000.0
    rope_scaling: Optional[str] = None  # None | linear | ntk
    rope_scale_factor: float = 1.0
    t5_num_buckets: int = 32
    t5_max_distance: int = 128
    window: Any = None  # None | int | (left, right)
    num_sinks: int = 0
    max_distance: Optional[int] = None  # LM-Infinite distance cap
    sparse_block_size: int = 0  # > 0: block-sparse attention with these blocks
    sparse_local_blocks: int = 1
    sparse_global_blocks: int = 0
    sparse_stride: int = 0
    score: str = "softmax"  # softmax | softplus
    softplus_train_len: Optional[int] = 512
    softcap: Optional[float] = None
    dropout_rate: float = 0.0
    use_bias: bool = False
    backend: str = "auto"  # auto | xla | cudnn | pallas (sequax.ops.dispatch)
    mode: Optional[str] = None  # pure-JAX algorithm: None | dense | blockwise
    decode_cache_size: int = 2048  # KV cache length without a window
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
        if self.rope_scaling not in positional.ROPE_SCALINGS:
            raise ValueError(
                f"unknown rope_scaling {self.rope_scaling!r}; choose one of {positional.ROPE_SCALINGS}"
            )
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; choose one of {SCORES}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.sparse_block_size < 0:
            raise ValueError(f"sparse_block_size must be >= 0 (0 disables), got {self.sparse_block_size}")
        window = normalize_window(self.window)
        if self.max_distance is not None:
            self._check_max_distance(window)
        head_dim = self.head_dim or self.d_model // self.num_heads
        return kv_heads, head_dim

    def _check_max_distance(self, window):
        cap = self.max_distance
        if cap < 1:
            raise ValueError(f"max_distance must be >= 1 (or None), got {cap}")
        if not self.causal:
            raise ValueError("max_distance needs causal=True (it caps distances to past keys)")
        if self.positional != "rope":
            return
        if self.score != "softmax":
            raise ValueError("max_distance with positional='rope' needs score='softmax' (it merges two passes)")
        if self.sparse_block_size:
            raise ValueError("max_distance with positional='rope' does not combine with sparse_block_size")
        if window is not None and window != (cap, 0):
            raise ValueError(
                f"max_distance={cap} with positional='rope' and a window needs window=({cap}, 0) "
                f"(LM-Infinite's Λ-shape), got window={window}; set them equal or drop the window"
            )

    def setup(self):
        kv_heads, head_dim = self._dims()
        dense = lambda features, name: nn.DenseGeneral(  # noqa: E731
            features, use_bias=self.use_bias, dtype=self.dtype, name=name
        )
        self.query = dense((self.num_heads, head_dim), "query")
        self.key = dense((kv_heads, head_dim), "key")
        self.value = dense((kv_heads, head_dim), "value")
        self.out = nn.DenseGeneral(
            self.d_model, axis=(-2, -1), use_bias=self.use_bias, dtype=self.dtype, name="out"
        )
        if self.positional == "t5":
            self.t5_table = self.param(
                "t5_bias", nn.initializers.normal(0.02), (self.t5_num_buckets, self.num_heads)
            )

    # -- pieces -----------------------------------------------------------------

    def _rope(self, x, positions):
        return positional.apply_rope(
            x, positions, base=self.rope_base, scaling=self.rope_scaling, scale_factor=self.rope_scale_factor
        )

    def _bias_fn(self):
        """ALiBi / T5 bias as a function of positions (evaluated per tile by the blockwise backend)."""
        if self.positional not in ("alibi", "t5"):
            return None
        cap = self.max_distance
        slopes = positional.alibi_slopes(self.num_heads) if self.positional == "alibi" else None

        def bias(q_pos, k_pos):
            relative = k_pos - q_pos
            if cap is not None:
                relative = jnp.clip(relative, -cap, cap)
            if slopes is not None:
                return positional.alibi_bias_from_relative(slopes, relative)
            return positional.t5_bias(
                self.t5_table, relative, bidirectional=not self.causal, max_distance=self.t5_max_distance
            )

        return bias

    def _block_mask(self, num_positions):
        size = self.sparse_block_size
        if not size:
            return None
        layout = block_sparse_layout(
            -(-num_positions // size), local_blocks=self.sparse_local_blocks,
            global_blocks=self.sparse_global_blocks, stride=self.sparse_stride,
        )
        return layout, size

    def _attend(self, q, k, v, q_pos, k_pos, *, segment_ids, explicit, num_positions, dropout_rng):
        """Attention of projected ``q`` ``[b, Q, H, D]`` over ``k``, ``v`` ``[b, K, KH, D]`` (unrotated)."""
        window = normalize_window(self.window)
        common = dict(
            causal=self.causal, bias=self._bias_fn(), softcap=self.softcap, score=self.score,
            softplus_train_len=self.softplus_train_len, backend=self.backend, mode=self.mode,
            block_mask=self._block_mask(num_positions),
            dropout_rate=self.dropout_rate if dropout_rng is not None else 0.0,
        )
        positions = (q_pos, k_pos) if explicit else None
        if self.positional != "rope":
            return attention(
                q, k, v, window=window, num_sinks=self.num_sinks, segment_ids=segment_ids,
                positions=positions, dropout_rng=dropout_rng, **common,
            )
        qr, kr = self._rope(q, q_pos), self._rope(k, k_pos)
        if self.max_distance is None:
            return attention(
                qr, kr, v, window=window, num_sinks=self.num_sinks, segment_ids=segment_ids,
                positions=positions, dropout_rng=dropout_rng, **common,
            )
        # LM-Infinite with RoPE: near keys (distance <= cap) see true rotations;
        # far keys (distance > cap: the sinks outside the window) are seen at
        # distance exactly cap: rotate q to position cap, leave k at position 0.
        cap = self.max_distance
        rngs = (None, None) if dropout_rng is None else tuple(jax.random.split(dropout_rng))
        near, near_lse = attention(
            qr, kr, v, window=(cap, 0), segment_ids=segment_ids, positions=positions,
            dropout_rng=rngs[0], return_lse=True, **common,
        )
        if window is not None and not self.num_sinks:
            return near
        keys = slice(0, self.num_sinks) if window is not None else slice(None)
        # Far keys are those with key_pos <= q_pos - cap - 1: causal on shifted query positions.
        far, far_lse = attention(
            self._rope(q, jnp.full(jnp.shape(q_pos), cap)), k[:, keys], v[:, keys],
            segment_ids=None if segment_ids is None else (segment_ids, segment_ids[:, keys]),
            positions=(q_pos - cap - 1, k_pos[..., keys]), dropout_rng=rngs[1], return_lse=True,
            **common,
        )
        out, _ = combine_attention(near, near_lse, far, far_lse)
        return out.astype(near.dtype)

    # -- parallel form ------------------------------------------------------------

    def __call__(self, x, *, segment_ids=None, deterministic=True):
        """``x`` ``[batch, length, d_model]`` -> ``[batch, length, d_model]``."""
        length = x.shape[1]
        positions = jnp.arange(length, dtype=jnp.int32)
        rng = None
        if self.dropout_rate and not deterministic:
            rng = self.make_rng("dropout")
        y = self._attend(
            self.query(x), self.key(x), self.value(x), positions, positions,
            segment_ids=segment_ids, explicit=False, num_positions=length, dropout_rng=rng,
        )
        return self.out(y)

    # -- decoding -------------------------------------------------------------------

    def _cache_size(self):
        window = normalize_window(self.window)
        if window is None:
            if self.decode_cache_size < 1:
                raise ValueError(f"decode_cache_size must be >= 1, got {self.decode_cache_size}")
            return self.decode_cache_size
        return self.num_sinks + window[0] + 1

    def init_state(self, batch_size):
        """Empty KV cache: ``k``, ``v`` ``[batch, cache, kv_heads, head_dim]`` (unrotated keys),
        ``pos`` ``[cache]`` int32 absolute positions (-1: empty), ``t`` the next position."""
        kv_heads, head_dim = self._dims()
        size = self._cache_size()
        kv = jnp.zeros((batch_size, size, kv_heads, head_dim), self.dtype)
        return dict(k=kv, v=kv, pos=jnp.full((size,), -1, jnp.int32), t=jnp.zeros((), jnp.int32))

    def step(self, x_t, state):
        """One decode step: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        window = normalize_window(self.window)
        if not self.causal or (window is not None and window[1] != 0):
            raise ValueError("step() needs causal=True and a window with no right part (window=(left, 0))")
        if window is not None and self.sparse_block_size:
            raise ValueError("step() with sparse_block_size needs the full cache (window=None)")
        t = state["t"]
        size = state["pos"].shape[0]
        x = x_t[:, None]
        q, k, v = self.query(x), self.key(x), self.value(x)
        if window is None:
            slot = jnp.minimum(t, size - 1)
        else:
            # Ring buffer: sinks in slots [0, num_sinks), the window cycles through the rest.
            sinks = self.num_sinks
            slot = jnp.where(t < sinks, t, sinks + (t - sinks) % (window[0] + 1))
        keys = jax.lax.dynamic_update_slice_in_dim(state["k"], k.astype(state["k"].dtype), slot, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(state["v"], v.astype(state["v"].dtype), slot, axis=1)
        pos = jax.lax.dynamic_update_slice_in_dim(state["pos"], t[None].astype(jnp.int32), slot, axis=0)
        y = self._attend(
            q, keys, values, t[None].astype(jnp.int32), pos, segment_ids=None, explicit=True,
            num_positions=size, dropout_rng=None,
        )
        if window is None:
            y = jnp.where(t < size, y, jnp.nan)  # past the cache: fail loudly
        return self.out(y)[:, 0], dict(k=keys, v=values, pos=pos, t=t + 1)
