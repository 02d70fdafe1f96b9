"""Linear-attention mixers: ``linear_attention``, ``hedgehog``, ``retention``, ``gla``, ``deltanet``.

Each projects ``x`` ``[batch, length, d_model]`` to per-head queries, keys and
values (``num_heads`` heads of ``d_model // num_heads``), mixes them with an op
from :mod:`sequax.ops.linear_attention` and projects back. All are causal by
construction and recurrent: ``init_state(batch_size)`` and
``step(x_t, state)`` decode one token at a time and reproduce the parallel
form. ``mode`` / ``chunk_size`` pick the op's algorithm for ``__call__``.

Like flash-linear-attention's layers, ``q``, ``k`` and ``v`` pass through a
short causal depthwise convolution and SiLU (``short_conv_size``, default 4;
0 disables it). Linear attention has no notion of position, and this
convolution is what lets it see the previous token, which associative recall
needs. It respects ``segment_ids`` and is carried in the decoding state.

State (``init_state``, ``step``, and ``__call__(..., initial_state=, return_state=True)``):
``{"conv": [batch, short_conv_size - 1, 3 * d_model]`` the last projected inputs
(oldest first; rows of an earlier segment zeroed), ``"mixer":`` the op's state,
``"segment": [batch]`` int32 the segment id of the last token seen``}``. A piece
whose first token starts a new segment starts from zeros
(``sequax.ops.segments.carry_state``); without ``segment_ids`` a piece continues
the state's segment.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sequax.mixers.common import check_input, end_segment, start_state
from sequax.mixers.registry import register
from sequax.ops import linear_attention as ops
from sequax.ops.fftconv import causal_conv1d, causal_conv1d_step
from sequax.ops.segments import check_segment_ids
from sequax.parallel import context as parallel_context
from sequax.parallel import sequence as parallel_sequence


class _LinearMixer(nn.Module):
    """Shared fields, projections, short conv and state; subclasses define ``_op(x, q, k, v, **op_kwargs)
    -> (o, state)`` (the parallel op), ``_op_step(x_t, q, k, v, state) -> (o, state)`` and
    ``_init_mixer_state``."""

    d_model: int
    num_heads: int = 4
    causal: bool = True
    dtype: Any = jnp.float32
    chunk_size: int = 64
    mode: Optional[str] = None  # pure-JAX algorithm: None (chunked) | chunked | naive | recurrent
    backend: str = "auto"  # auto | xla | pallas (sequax.ops.dispatch)
    short_conv_size: int = 4  # causal depthwise conv + SiLU on q, k, v (as fla); 0 disables

    @property
    def head_dim(self):
        return self.d_model // self.num_heads

    def _dense(self, features, use_bias=False, name=None):
        return nn.Dense(features, use_bias=use_bias, dtype=jnp.dtype(self.dtype), param_dtype=jnp.float32, name=name)

    def setup(self):
        if not self.causal:
            raise ValueError(
                f"causal=False: {type(self).__name__} is causal by construction; set model.causal=True "
                "or pick a bidirectional mixer"
            )
        if self.num_heads < 1 or self.d_model % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} must divide d_model={self.d_model}; change one of them")
        if self.mode is not None and self.mode not in ops.MODES:
            raise ValueError(f"mode must be one of {', '.join(ops.MODES)} (or None); got {self.mode!r}")
        self.q_proj = self._dense(self.d_model)
        self.k_proj = self._dense(self.d_model)
        self.v_proj = self._dense(self.d_model)
        self.o_proj = self._dense(self.d_model)
        if self.short_conv_size < 0:
            raise ValueError(f"short_conv_size must be >= 0 (0 disables it); got {self.short_conv_size}")
        if self.short_conv_size:
            bound = self.short_conv_size**-0.5
            self.qkv_conv = self.param(
                "qkv_conv",
                lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound),
                (self.short_conv_size, 3 * self.d_model),
            )

    def _heads(self, y):
        """``[..., d_model]`` -> ``[..., heads, head_dim]``."""
        return y.reshape(y.shape[:-1] + (self.num_heads, self.head_dim))

    def _project(self, x):
        return jnp.concatenate([p(x) for p in (self.q_proj, self.k_proj, self.v_proj)], axis=-1)

    def _split(self, qkv):
        return tuple(self._heads(y) for y in jnp.split(qkv, 3, axis=-1))

    def _qkv_step(self, x_t, conv_state):
        """One token of the projections and short conv: ``(q, k, v)`` ``[batch, heads, head_dim]``."""
        qkv = self._project(x_t)
        if self.short_conv_size:
            qkv, conv_state = causal_conv1d_step(qkv, conv_state, self.qkv_conv.astype(qkv.dtype))
            qkv = nn.silu(qkv)
        return self._split(qkv), conv_state

    def _finish(self, o, x):
        """Per-head output ``[..., heads, head_dim]`` -> ``[..., d_model]``."""
        return self.o_proj(o.reshape(o.shape[:-2] + (self.d_model,)).astype(jnp.dtype(self.dtype)))

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> ``[batch, length, d_model]``.

        With ``initial_state`` (``init_state``'s layout) the sequence continues
        that state; with ``return_state`` the result is ``(y, state)``.
        """
        check_input(x, self.d_model)
        x = x.astype(jnp.dtype(self.dtype))
        if segment_ids is not None:
            segment_ids = check_segment_ids(segment_ids, *x.shape[:2])
        if parallel_context.sequence_parallel() is not None and initial_state is None and not return_state:
            return self._sequence_parallel(x, segment_ids)
        state = start_state(self, x.shape[0], initial_state, segment_ids)
        qkv, conv = self._project(x), state["conv"]
        if self.short_conv_size:
            qkv, conv = causal_conv1d(qkv, self.qkv_conv.astype(qkv.dtype), segment_ids=segment_ids,
                                      history=conv, return_history=True)
            qkv = nn.silu(qkv)
        q, k, v = self._split(qkv)
        o, mixer = self._op(
            x, q, k, v, initial_state=None if initial_state is None else state["mixer"], return_state=True,
            segment_ids=segment_ids, mode=self.mode, chunk_size=self.chunk_size, backend=self.backend,
        )
        y = self._finish(o, x)
        if not return_state:
            return y
        return y, {"conv": conv, "mixer": mixer, "segment": end_segment(state, segment_ids)}

    def _sequence_parallel(self, x, segment_ids):
        """``__call__`` with the length split over the active sequence mesh axis
        (:mod:`sequax.parallel.sequence`: the short conv's halo and the op's state cross shards)."""
        qkv = self._project(x)
        if self.short_conv_size:
            kernel = self.qkv_conv.astype(qkv.dtype)
            qkv = nn.silu(parallel_sequence.causal_conv1d(qkv, kernel, segment_ids=segment_ids))
        q, k, v = self._split(qkv)
        o = self._sequence_parallel_op(x, q, k, v, segment_ids=segment_ids, mode=self.mode,
                                       chunk_size=self.chunk_size, backend=self.backend)
        return self._finish(o, x)

    def _sequence_parallel_op(self, x, q, k, v, **kwargs):
        parallel_context.refuse(type(self).__name__)

    def init_state(self, batch_size):
        """``{"conv": [batch, short_conv_size - 1, 3 * d_model], "mixer": ..., "segment": [batch]}``;
        see ``_init_mixer_state`` and the module docstring."""
        conv = jnp.zeros((batch_size, max(self.short_conv_size - 1, 0), 3 * self.d_model), jnp.dtype(self.dtype))
        return {"conv": conv, "mixer": self._init_mixer_state(batch_size),
                "segment": jnp.zeros((batch_size,), jnp.int32)}

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], new_state)``."""
        if x_t.ndim != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t must be [batch, d_model={self.d_model}]; got shape {x_t.shape}")
        x_t = x_t.astype(jnp.dtype(self.dtype))
        (q, k, v), conv = self._qkv_step(x_t, state["conv"])
        o, mixer = self._op_step(x_t, q, k, v, state["mixer"])
        return self._finish(o, x_t), {"conv": conv, "mixer": mixer, "segment": state["segment"]}

    def _zeros(self, batch_size, dk):
        return jnp.zeros((batch_size, self.num_heads, dk, self.head_dim), jnp.float32)


@register("linear_attention")
class LinearAttention(_LinearMixer):
    """Kernelized linear attention (Katharopoulos et al., 2020).

    ``feature_map``: ``"elu"`` (``elu + 1``), ``"relu"`` or ``"identity"``;
    ``normalize`` divides by ``phi(q_t) . sum_s phi(k_s)``. The state is
    ``[batch, heads, head_dim, head_dim]`` (plus the key sum
    ``[batch, heads, head_dim]`` when normalising).
    """

    feature_map: str = "elu"
    normalize: bool = True

    def setup(self):
        super().setup()
        if self.feature_map not in ops.FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {', '.join(ops.FEATURE_MAPS)}; got {self.feature_map!r}")

    def _op(self, x, q, k, v, **kwargs):
        return ops.linear_attention(q, k, v, feature_map=self.feature_map, normalize=self.normalize, **kwargs)

    def _op_step(self, x_t, q, k, v, state):
        return ops.linear_attention_step(q, k, v, state, feature_map=self.feature_map, normalize=self.normalize)

    def _init_mixer_state(self, batch_size):
        """Zero state: ``S`` ``[batch, heads, head_dim, head_dim]``, or ``(S, z)`` when normalising."""
        s = self._zeros(batch_size, self.head_dim)
        return (s, s[..., 0]) if self.normalize else s


def _identity_maps(key, shape, dtype=jnp.float32):
    """``[heads, d, m]`` stacked (rectangular) identities: Hedgehog's initialisation."""
    return jnp.broadcast_to(jnp.eye(shape[1], shape[2], dtype=dtype), shape)


@register("hedgehog")
class Hedgehog(_LinearMixer):
    """Hedgehog (Zhang et al., 2024): normalised linear attention with learned feature maps.

    Queries and keys each get a per-head map ``phi(x) = [softmax(x W + b),
    softmax(-x W - b)]`` (``W`` ``[heads, head_dim, feature_dim]``, identity at
    init), learned end to end. With ``sow_distillation_loss`` the softmax-mimicry
    loss against the layer's own softmax attention is sown to
    ``intermediates/distillation_loss`` for a distillation objective.
    """

    feature_dim: int = 0  # 0: head_dim
    sow_distillation_loss: bool = False

    @property
    def _m(self):
        return self.feature_dim or self.head_dim

    def setup(self):
        super().setup()
        if self.feature_dim < 0:
            raise ValueError(f"feature_dim must be >= 0 (0 means head_dim); got {self.feature_dim}")
        shape = (self.num_heads, self.head_dim, self._m)
        self.q_map_w = self.param("q_map_w", _identity_maps, shape)
        self.q_map_b = self.param("q_map_b", nn.initializers.zeros, shape[::2])
        self.k_map_w = self.param("k_map_w", _identity_maps, shape)
        self.k_map_b = self.param("k_map_b", nn.initializers.zeros, shape[::2])

    def _features(self, q, k):
        return (
            ops.hedgehog_feature_map(q, self.q_map_w.astype(q.dtype), self.q_map_b.astype(q.dtype)),
            ops.hedgehog_feature_map(k, self.k_map_w.astype(k.dtype), self.k_map_b.astype(k.dtype)),
        )

    def _op(self, x, q, k, v, **kwargs):
        fq, fk = self._features(q, k)
        if self.sow_distillation_loss:
            self.sow("intermediates", "distillation_loss", ops.hedgehog_distillation_loss(q, k, fq, fk))
        return ops.linear_attention(fq, fk, v, normalize=True, **kwargs)

    def _op_step(self, x_t, q, k, v, state):
        fq, fk = self._features(q, k)
        return ops.linear_attention_step(fq, fk, v, state, normalize=True)

    def _init_mixer_state(self, batch_size):
        """Zero ``(S [batch, heads, 2 m, head_dim], z [batch, heads, 2 m])``, ``m = feature_dim``."""
        s = self._zeros(batch_size, 2 * self._m)
        return s, s[..., 0]


class _GatedOutput(_LinearMixer):
    """Adds the per-head RMSNorm and swish output gate used by RetNet, GLA and DeltaNet."""

    use_norm: bool = True
    use_output_gate: bool = True

    def setup(self):
        super().setup()
        if self.use_norm:
            self.o_norm = nn.RMSNorm(epsilon=1e-5, dtype=jnp.dtype(self.dtype), param_dtype=jnp.float32)
        if self.use_output_gate:
            self.g_proj = self._dense(self.d_model)

    def _finish(self, o, x):
        if self.use_norm:
            o = self.o_norm(o)  # over head_dim, separately per head (never across time)
        o = o.reshape(o.shape[:-2] + (self.d_model,)).astype(jnp.dtype(self.dtype))
        if self.use_output_gate:
            o = o * nn.swish(self.g_proj(x))
        return self.o_proj(o)


@register("retention")
class Retention(_GatedOutput):
    """Multi-scale retention (RetNet, Sun et al., 2023) without xPos.

    Fixed per-head decays ``1 - 2 ** (-5 - h)``, per-head RMSNorm and a swish
    output gate. State ``[batch, heads, head_dim, head_dim]``.
    """

    def _log_decay(self):
        return ops.retnet_log_decays(self.num_heads)

    def _op(self, x, q, k, v, **kwargs):
        return ops.retention(q, k, v, self._log_decay(), **kwargs)

    def _op_step(self, x_t, q, k, v, state):
        return ops.retention_step(q, k, v, self._log_decay(), state)

    def _sequence_parallel_op(self, x, q, k, v, **kwargs):
        return parallel_sequence.retention(q, k, v, self._log_decay(), **kwargs)

    def _init_mixer_state(self, batch_size):
        """Zero state ``[batch, heads, head_dim, head_dim]``."""
        return self._zeros(batch_size, self.head_dim)


@register("gla")
class GLA(_GatedOutput):
    """Gated linear attention (Yang et al., 2024).

    Forget gate ``g = log_sigmoid(x W_down W_up + b) / gate_logit_normalizer``
    per key feature (a low-rank projection of rank ``gate_low_rank_dim``), then
    per-head RMSNorm and a swish output gate. State ``[batch, heads, head_dim, head_dim]``.
    """

    gate_low_rank_dim: int = 16
    gate_logit_normalizer: float = 16.0

    def setup(self):
        super().setup()
        if self.gate_low_rank_dim < 1 or self.gate_logit_normalizer <= 0:
            raise ValueError(
                "gate_low_rank_dim must be >= 1 and gate_logit_normalizer > 0; got "
                f"{self.gate_low_rank_dim} and {self.gate_logit_normalizer}"
            )
        self.gk_down = self._dense(self.gate_low_rank_dim)
        self.gk_up = self._dense(self.d_model, use_bias=True)

    def _gate(self, x):
        return self._heads(jax.nn.log_sigmoid(self.gk_up(self.gk_down(x))) / self.gate_logit_normalizer)

    def _op(self, x, q, k, v, **kwargs):
        return ops.gla(q, k, v, self._gate(x), **kwargs)

    def _op_step(self, x_t, q, k, v, state):
        return ops.gla_step(q, k, v, self._gate(x_t), state)

    def _sequence_parallel_op(self, x, q, k, v, **kwargs):
        return parallel_sequence.gla(q, k, v, self._gate(x), **kwargs)

    def _init_mixer_state(self, batch_size):
        """Zero state ``[batch, heads, head_dim, head_dim]``."""
        return self._zeros(batch_size, self.head_dim)


def _l2_normalize(x, eps=1e-6):
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


@register("deltanet")
class DeltaNet(_GatedOutput):
    """DeltaNet (Schlag et al., 2021; Yang et al., 2024): delta-rule fast weights.

    ``q``, ``k`` go through ``qk_activation`` (``"silu"`` or ``"identity"``; the
    short conv already ends in SiLU) and L2 normalisation, ``beta = sigmoid(x W_beta)`` per head; per-head
    RMSNorm on the output, no output gate by default. State
    ``[batch, heads, head_dim, head_dim]``.
    """

    qk_activation: str = "identity"  # the short conv already applies SiLU; "silu" without it
    use_output_gate: bool = False

    def setup(self):
        super().setup()
        if self.qk_activation not in ("silu", "identity"):
            raise ValueError(f"qk_activation must be 'silu' or 'identity'; got {self.qk_activation!r}")
        self.b_proj = self._dense(self.num_heads, use_bias=True)

    def _qkb(self, x, q, k):
        if self.qk_activation == "silu":
            q, k = nn.silu(q), nn.silu(k)
        return _l2_normalize(q), _l2_normalize(k), nn.sigmoid(self.b_proj(x))

    def _op(self, x, q, k, v, **kwargs):
        q, k, beta = self._qkb(x, q, k)
        return ops.delta_rule(q, k, v, beta, **kwargs)

    def _op_step(self, x_t, q, k, v, state):
        q, k, beta = self._qkb(x_t, q, k)
        return ops.delta_rule_step(q, k, v, beta, state)

    def _sequence_parallel_op(self, x, q, k, v, **kwargs):
        q, k, beta = self._qkb(x, q, k)
        return parallel_sequence.delta_rule(q, k, v, beta, **kwargs)

    def _init_mixer_state(self, batch_size):
        """Zero state ``[batch, heads, head_dim, head_dim]``."""
        return self._zeros(batch_size, self.head_dim)
