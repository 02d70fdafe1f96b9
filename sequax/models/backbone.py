"""The backbone: embedding -> pre-norm residual blocks (mixer, gated MLP) -> norm -> head.

Activations are annotated with logical axis names (``batch``, ``length``,
``embed``, ``mlp``) so a mesh's rules can shard them; without rules the
annotations do nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from sequax import mixers
from sequax.models import heads as heads_lib
from sequax.ops.dispatch import BACKENDS

# config.model fields every mixer receives when it declares a field of that name
# (mixer_kwargs override them): heads, causality, compute dtype, op backend.
SHARED_MIXER_FIELDS = ("num_heads", "causal", "dtype", "backend")
NORMS = {"rmsnorm": nn.RMSNorm, "layernorm": nn.LayerNorm}


def _constrain(x, axes):
    return nn.with_logical_constraint(x, axes)


def mixer_fields(name: str):
    """Names of the dataclass fields of mixer ``name`` (its options)."""
    cls = mixers.get(name)
    return [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]


def make_mixer(name: str, d_model: int, shared: dict, kwargs: dict, module_name: str = "mixer"):
    """Instantiate mixer ``name``; options it does not have raise ``ValueError``."""
    cls = mixers.get(name)
    fields = mixer_fields(name)
    unknown = sorted(set(kwargs) - set(fields))
    if unknown:
        raise ValueError(
            f"mixer {name!r} has no option(s) {', '.join(unknown)} (in model.mixer_kwargs); "
            f"its options are: {', '.join(f for f in fields if f != 'd_model')}"
        )
    args = {k: v for k, v in shared.items() if k in fields}
    args.update(kwargs)
    return cls(d_model=d_model, **args, name=module_name)


class GatedMLP(nn.Module):
    """SwiGLU: ``W_out (silu(W_gate x) * W_up x)``."""

    d_model: int
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        gate_up = nn.Dense(2 * self.hidden, use_bias=False, dtype=self.dtype, name="gate_up")(x)
        gate, up = jnp.split(gate_up, 2, axis=-1)
        h = _constrain(nn.silu(gate) * up, ("batch", "length", "mlp"))
        return nn.Dense(self.d_model, use_bias=False, dtype=self.dtype, name="down")(h)


class Block(nn.Module):
    """``x + mixer(norm(x))`` then ``x + mlp(norm(x))``."""

    d_model: int
    mixer: str
    mixer_kwargs: Tuple[Tuple[str, Any], ...]
    shared: Tuple[Tuple[str, Any], ...]
    mlp_hidden: int
    norm: str
    dropout: float
    dtype: Any

    def setup(self):
        norm = NORMS[self.norm]
        self.mixer_norm = norm(dtype=self.dtype)
        self.token_mixer = make_mixer(
            self.mixer, self.d_model, dict(self.shared), dict(self.mixer_kwargs), "mixer"
        )
        if self.mlp_hidden:
            self.mlp_norm = norm(dtype=self.dtype)
            self.mlp = GatedMLP(self.d_model, self.mlp_hidden, dtype=self.dtype)
        self.drop = nn.Dropout(self.dropout)

    def __call__(self, x, *, segment_ids=None, deterministic=True):
        h = self.token_mixer(self.mixer_norm(x), segment_ids=segment_ids, deterministic=deterministic)
        x = _constrain(x + self.drop(h, deterministic=deterministic), ("batch", "length", "embed"))
        if self.mlp_hidden:
            h = self.mlp(self.mlp_norm(x))
            x = _constrain(x + self.drop(h, deterministic=deterministic), ("batch", "length", "embed"))
        return x


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The hashable, validated form of ``config.model``."""

    mixer: str
    mixer_kwargs: Tuple[Tuple[str, Any], ...]
    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    mlp_ratio: float
    causal: bool
    head: str
    num_classes: int
    pooling: str
    position_embedding: str
    max_length: int
    norm: str
    dropout: float
    dtype: str
    tie_embeddings: bool
    backend: str


class SequenceModel(nn.Module):
    """Token ids ``[batch, length]`` (``[batch, 2, length]`` for retrieval) -> head outputs.

    Heads: ``lm`` gives logits ``[batch, length, vocab]``; ``classification``
    and ``retrieval`` give ``[batch, num_classes]``.
    """

    spec: ModelSpec

    def setup(self):
        s = self.spec
        dtype = jnp.dtype(s.dtype)
        self.embed = nn.Embed(s.vocab_size, s.d_model, name="embed")
        if s.position_embedding == "learned":
            self.pos_embed = nn.Embed(s.max_length, s.d_model, name="pos_embed")
        shared = (("num_heads", s.num_heads), ("causal", s.causal), ("dtype", dtype), ("backend", s.backend))
        self.blocks = [
            Block(
                d_model=s.d_model, mixer=s.mixer, mixer_kwargs=s.mixer_kwargs, shared=shared,
                mlp_hidden=int(s.mlp_ratio * s.d_model), norm=s.norm, dropout=s.dropout,
                dtype=dtype, name=f"block_{i}",
            )
            for i in range(s.num_layers)
        ]
        self.final_norm = NORMS[s.norm](dtype=dtype)
        if s.head == "lm":
            if not s.tie_embeddings:
                self.lm_head = nn.Dense(s.vocab_size, use_bias=False, dtype=dtype, name="lm_head")
        elif s.head == "classification":
            self.classifier = heads_lib.ClassificationHead(s.num_classes, s.pooling, dtype=dtype)
        else:
            self.classifier = heads_lib.RetrievalHead(s.num_classes, s.pooling, dtype=dtype)

    def encode(self, tokens, *, segment_ids=None, deterministic=True):
        """Token ids ``[batch, length]`` -> features ``[batch, length, d_model]``."""
        s = self.spec
        x = self.embed(tokens).astype(jnp.dtype(s.dtype))
        if s.position_embedding == "learned":
            if tokens.shape[1] > s.max_length:
                raise ValueError(
                    f"sequence length {tokens.shape[1]} exceeds model.max_length {s.max_length}"
                )
            x = x + self.pos_embed(jnp.arange(tokens.shape[1]))[None].astype(x.dtype)
        x = _constrain(x, ("batch", "length", "embed"))
        for block in self.blocks:
            x = block(x, segment_ids=segment_ids, deterministic=deterministic)
        return self.final_norm(x)

    def __call__(self, tokens, *, lengths=None, segment_ids=None, deterministic=True):
        s = self.spec
        if s.head == "retrieval":
            batch = tokens.shape[0]
            pair = tokens.reshape((2 * batch,) + tokens.shape[2:])
            pair_lengths = None if lengths is None else lengths.reshape(2 * batch)
            feats = self.encode(pair, deterministic=deterministic)
            return self.classifier(feats, pair_lengths)
        x = self.encode(tokens, segment_ids=segment_ids, deterministic=deterministic)
        if s.head == "lm":
            logits = self.embed.attend(x) if s.tie_embeddings else self.lm_head(x)
            return logits.astype(jnp.float32)
        return self.classifier(x, lengths)


HEADS = ("lm", "classification", "retrieval")
POSITION_EMBEDDINGS = ("none", "learned")


def build_model(model_config) -> SequenceModel:
    """A :class:`SequenceModel` from ``config.model``; bad values raise ``ValueError``."""
    c = model_config
    if c.mixer not in mixers.available():
        mixers.get(c.mixer)  # raises the ValueError listing the choices
    for name in ("vocab_size", "d_model", "num_layers"):
        if int(c[name]) <= 0:
            raise ValueError(f"model.{name} must be positive, got {c[name]}")
    if c.head not in HEADS:
        raise ValueError(f"unknown model.head {c.head!r}; choose one of {HEADS}")
    if c.head != "lm" and c.num_classes <= 1:
        raise ValueError(f"model.head={c.head!r} needs model.num_classes >= 2, got {c.num_classes}")
    if c.pooling not in heads_lib.POOLINGS:
        raise ValueError(f"unknown model.pooling {c.pooling!r}; choose one of {heads_lib.POOLINGS}")
    if c.norm not in NORMS:
        raise ValueError(f"unknown model.norm {c.norm!r}; choose one of {sorted(NORMS)}")
    if c.position_embedding not in POSITION_EMBEDDINGS:
        raise ValueError(
            f"unknown model.position_embedding {c.position_embedding!r}; choose one of {POSITION_EMBEDDINGS}"
        )
    if c.position_embedding == "learned" and c.max_length <= 0:
        raise ValueError("model.position_embedding='learned' needs model.max_length > 0")
    if "num_heads" in mixer_fields(c.mixer) and (c.num_heads <= 0 or c.d_model % c.num_heads):
        raise ValueError(
            f"model.num_heads ({c.num_heads}) must divide model.d_model ({c.d_model}); "
            "change one of them"
        )
    if c.backend not in BACKENDS:
        raise ValueError(f"unknown model.backend {c.backend!r}; choose one of {BACKENDS}")
    try:
        jnp.dtype(c.dtype)
    except TypeError:
        raise ValueError(f"unknown model.dtype {c.dtype!r}; use float32 or bfloat16") from None
    kwargs = dict(c.mixer_kwargs)
    spec = ModelSpec(
        mixer=c.mixer,
        mixer_kwargs=tuple(sorted((k, _freeze(v)) for k, v in kwargs.items())),
        vocab_size=int(c.vocab_size), d_model=int(c.d_model), num_layers=int(c.num_layers),
        num_heads=int(c.num_heads), mlp_ratio=float(c.mlp_ratio), causal=bool(c.causal),
        head=c.head, num_classes=int(c.num_classes), pooling=c.pooling,
        position_embedding=c.position_embedding, max_length=int(c.max_length), norm=c.norm,
        dropout=float(c.dropout), dtype=str(c.dtype), tie_embeddings=bool(c.tie_embeddings),
        backend=str(c.backend),
    )
    # Reject unknown mixer options now, before any parameters exist.
    make_mixer(c.mixer, spec.d_model, {}, kwargs)
    return SequenceModel(spec)


def _freeze(value):
    """Lists (as configs give them) become tuples so the spec stays hashable."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


