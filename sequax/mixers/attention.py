"""Multi-head attention mixer (MHA / GQA / MQA) over ``sequax.ops.attention``, with KV-cache decoding."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from sequax.mixers.common import check_input
from sequax.mixers.registry import register
from sequax.ops import positional
from sequax.ops.attention import (
    SCORES,
    attention,
    block_sparse_layout,
    combine_attention,
    normalize_window,
)
from sequax.ops.segments import check_segment_ids
from sequax.parallel import context as parallel_context
from sequax.parallel.attention import sequence_parallel_attention

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

    State (the KV cache): ``init_state(batch_size)``, ``step(x_t, state)``,
    and ``__call__(x, initial_state=state, return_state=True)``, which attends
    over the cache and the piece together and returns the updated cache
    (chunked prefill). With a window the cache is a ring buffer of
    ``num_sinks + left + 1`` slots (sink slots kept, the rest overwritten
    cyclically), so decoding never runs out; otherwise it holds
    ``decode_cache_size`` positions. The cache stores unrotated keys, their
    absolute positions and per-slot segment ids, so masks, RoPE, ALiBi and T5
    see the same positions as the parallel form and packed segments never see
    each other across pieces.

    Past ``decode_cache_size`` (full cache only): ``sequax.mixers.decode``
    raises ``ValueError`` before running; ``__call__`` with ``return_state``
    and no ``initial_state`` raises too; otherwise (a piece or step from a
    given state, the position being traced) the outputs at positions
    ``>= decode_cache_size`` are NaN, the documented sentinel, and under
    ``jax.experimental.checkify.checkify`` the same case is a checkify error
    naming ``decode_cache_size``.
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

        if slopes is not None:  # lets a fused kernel compute ALiBi in-kernel instead of calling bias
            bias.alibi_slopes = slopes
            bias.alibi_max_distance = cap
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

    def _attend(self, q, k, v, q_pos, k_pos, *, segment_ids, explicit, num_positions, dropout_rng, sinks):
        """Attention of projected ``q`` ``[b, Q, H, D]`` over ``k``, ``v`` ``[b, K, KH, D]`` (unrotated).

        ``segment_ids``: None, ``[b, Q]`` (Q == K) or ``(q_seg [b, Q], k_seg [b, K])``;
        ``sinks``: the (static) indices of the keys that may hold sink positions ``< num_sinks``.
        """
        window = normalize_window(self.window)
        common = dict(
            causal=self.causal, bias=self._bias_fn(), softcap=self.softcap, score=self.score,
            softplus_train_len=self.softplus_train_len, backend=self.backend, mode=self.mode,
            block_mask=self._block_mask(num_positions),
            dropout_rate=self.dropout_rate if dropout_rng is not None else 0.0,
        )
        positions = (q_pos, k_pos) if explicit else None
        split = parallel_context.sequence_parallel()
        if split is not None and not explicit and split.attention != "none":
            if self.positional == "rope":
                q, k = self._rope(q, q_pos), self._rope(k, k_pos)
            return self._sequence_parallel(q, k, v, segment_ids, window, common, split)
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
        far_seg = segment_ids if segment_ids is None or isinstance(segment_ids, tuple) else (segment_ids,) * 2
        far_k, far_v, far_pos = k, v, k_pos
        if window is not None:  # only the sinks are far keys (a slot listed in `sinks` may hold another)
            far_k, far_v = k[:, sinks], v[:, sinks]
            far_pos = jnp.where(k_pos[..., sinks] < self.num_sinks, k_pos[..., sinks], -1)
            far_seg = None if far_seg is None else (far_seg[0], far_seg[1][:, sinks])
        # Far keys are those with key_pos <= q_pos - cap - 1: causal on shifted query positions.
        far, far_lse = attention(
            self._rope(q, jnp.full(jnp.shape(q_pos), cap)), far_k, far_v, segment_ids=far_seg,
            positions=(q_pos - cap - 1, far_pos), dropout_rng=rngs[1], return_lse=True, **common,
        )
        out, _ = combine_attention(near, near_lse, far, far_lse)
        return out.astype(near.dtype)

    def _sequence_parallel(self, q, k, v, segment_ids, window, common, split):
        """Attention with the length split over the sequence mesh axis (positions already applied):
        ring or all-to-all, as ``config.model.sequence_parallel`` says (:mod:`sequax.parallel.attention`)."""
        unsupported = [name for name, bad in (
            ("max_distance", self.max_distance is not None), ("sparse_block_size", self.sparse_block_size > 0),
            ("dropout_rate", common["dropout_rate"] > 0), ("score='softplus'", self.score != "softmax"),
            ("positional='t5'", self.positional == "t5"),
        ) if bad]
        if unsupported:
            parallel_context.refuse("attention", f"{unsupported[0]} with sequence_parallel={split.attention!r}")
        return sequence_parallel_attention(
            q, k, v, mesh=split.mesh, strategy=split.attention, segment_ids=segment_ids, causal=self.causal,
            window=window, num_sinks=self.num_sinks, softcap=self.softcap, bias=common["bias"],
            backend=self.backend,
        )

    # -- parallel form (with the KV cache as state) ------------------------------------

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> ``[batch, length, d_model]``.

        With ``initial_state`` (a KV cache in ``init_state``'s layout) the piece
        attends over the cache and itself; with ``return_state`` the result is
        ``(y, cache)``, the cache updated with the piece. Without
        ``segment_ids`` a piece continues the cache's last segment.
        """
        check_input(x, self.d_model)
        batch, length = x.shape[:2]
        if segment_ids is not None:
            segment_ids = check_segment_ids(segment_ids, batch, length).astype(jnp.int32)
        if initial_state is not None or return_state:
            self._check_cacheable()
        rng = None
        if self.dropout_rate and not deterministic:
            rng = self.make_rng("dropout")
        q, k, v = self.query(x), self.key(x), self.value(x)
        if initial_state is None:
            positions = jnp.arange(length, dtype=jnp.int32)
            y = self._attend(
                q, k, v, positions, positions, segment_ids=segment_ids, explicit=False, num_positions=length,
                dropout_rng=rng, sinks=np.arange(min(self.num_sinks, length)),
            )
            if not return_state:
                return self.out(y)
            self.check_decode_length(length)
            state = self.init_state(batch)
        else:
            state = initial_state
            y = self._attend_cached(q, k, v, state, segment_ids, rng)
        seg = jnp.broadcast_to(state["segment"][:, None], (batch, length)) if segment_ids is None else segment_ids
        new_state = self._write(state, k, v, seg)
        y = self.out(y)
        return (y, new_state) if return_state else y

    def _attend_cached(self, q, k, v, cache, segment_ids, rng):
        """The piece's queries over ``cache`` + the piece's own keys (explicit positions)."""
        batch, length = q.shape[:2]
        size = cache["pos"].shape[0]
        t0 = cache["t"]
        q_pos = t0 + jnp.arange(length, dtype=jnp.int32)
        q_seg = jnp.broadcast_to(cache["segment"][:, None], (batch, length)) if segment_ids is None else segment_ids
        keys = jnp.concatenate([cache["k"], k.astype(cache["k"].dtype)], axis=1)
        values = jnp.concatenate([cache["v"], v.astype(cache["v"].dtype)], axis=1)
        k_pos = jnp.concatenate([cache["pos"], q_pos])
        k_seg = jnp.concatenate([cache["seg"], q_seg], axis=1)
        ns = self.num_sinks
        sinks = np.concatenate([np.arange(min(ns, size)), size + np.arange(min(ns, length))])
        y = self._attend(
            q, keys, values, q_pos, k_pos, segment_ids=(q_seg, k_seg), explicit=True,
            num_positions=size + length, dropout_rng=rng, sinks=sinks,
        )
        limit = self.max_decode_length()
        if limit is None:
            return y
        checkify.debug_check(
            t0 + length <= limit,
            f"the KV cache holds decode_cache_size={limit} positions; this piece reaches position {{end}}: "
            "raise decode_cache_size (or set a window)", end=t0 + length - 1,
        )
        # Past the cache: the documented sentinel (the cache cannot hold these positions).
        return jnp.where((q_pos < limit)[None, :, None, None], y, jnp.nan)

    # -- the KV cache -----------------------------------------------------------------

    def _check_cacheable(self):
        window = normalize_window(self.window)
        if not self.causal or (window is not None and window[1] != 0):
            raise ValueError(
                "a KV cache (initial_state, return_state, step) needs causal=True and a window with no "
                "right part (window=(left, 0))"
            )
        if window is not None and self.sparse_block_size:
            raise ValueError("a KV cache with sparse_block_size needs the full cache (window=None)")

    def max_decode_length(self):
        """The most positions the cache can hold: ``decode_cache_size``, or None with a window (ring buffer)."""
        if normalize_window(self.window) is not None:
            return None
        if self.decode_cache_size < 1:
            raise ValueError(f"decode_cache_size must be >= 1, got {self.decode_cache_size}")
        return self.decode_cache_size

    def check_decode_length(self, length):
        """``ValueError`` if ``length`` tokens from an empty cache would overrun it (decode, prefill)."""
        limit = self.max_decode_length()
        if limit is not None and length > limit:
            raise ValueError(
                f"{length} tokens overrun the KV cache of decode_cache_size={limit} positions; "
                "raise decode_cache_size (or set a window: its ring buffer never fills)"
            )

    def _cache_size(self):
        window = normalize_window(self.window)
        if window is None:
            return self.max_decode_length()
        return self.num_sinks + window[0] + 1

    def _slot_positions(self, end, size):
        """The position each of the ``size`` slots holds once positions ``< end`` are written (-1: none).

        Full cache: slot ``s`` holds position ``s``. Ring buffer: the sinks sit in
        slots ``[0, num_sinks)``; later position ``p`` goes to slot
        ``num_sinks + (p - num_sinks) % (size - num_sinks)``, so a slot holds the
        latest such position.
        """
        slots = jnp.arange(size, dtype=jnp.int32)
        direct = jnp.where(slots < end, slots, -1)
        if normalize_window(self.window) is None:
            return direct
        sinks, ring = self.num_sinks, size - self.num_sinks
        last = end - sinks - 1  # the latest non-sink index written
        index = last - jnp.mod(last - (slots - sinks), ring)
        return jnp.where(slots < sinks, direct, jnp.where(index >= 0, sinks + index, -1))

    def _write(self, cache, k, v, seg):
        """The cache after writing the piece's ``k``, ``v`` ``[b, L, KH, D]`` and ``seg`` ``[b, L]`` at ``t``."""
        t0, length, size = cache["t"], k.shape[1], cache["pos"].shape[0]
        held = self._slot_positions(t0 + length, size)
        new = held >= t0  # slots that now hold a position of this piece
        index = jnp.clip(held - t0, 0, length - 1)

        def put(old, piece):
            taken = jnp.take(piece.astype(old.dtype), index, axis=1)
            return jnp.where(new.reshape((1, size) + (1,) * (old.ndim - 2)), taken, old)

        return dict(
            k=put(cache["k"], k), v=put(cache["v"], v), pos=jnp.where(new, held, cache["pos"]),
            seg=put(cache["seg"], seg), segment=seg[:, -1], t=t0 + length,
        )

    def init_state(self, batch_size):
        """Empty KV cache: ``k``, ``v`` ``[batch, cache, kv_heads, head_dim]`` (unrotated keys),
        ``pos`` ``[cache]`` int32 absolute positions (-1: empty), ``seg`` ``[batch, cache]`` int32
        segment ids, ``segment`` ``[batch]`` int32 the last token's segment id, ``t`` the next position."""
        kv_heads, head_dim = self._dims()
        size = self._cache_size()
        kv = jnp.zeros((batch_size, size, kv_heads, head_dim), self.dtype)
        return dict(
            k=kv, v=kv, pos=jnp.full((size,), -1, jnp.int32), seg=jnp.zeros((batch_size, size), jnp.int32),
            segment=jnp.zeros((batch_size,), jnp.int32), t=jnp.zeros((), jnp.int32),
        )

    def step(self, x_t, state):
        """One decode step: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``
        (a piece of one token; see :meth:`__call__`)."""
        y, state = self(x_t[:, None], initial_state=state, return_state=True)
        return y[:, 0], state
