"""Sampling from a trained language model, token by token with the mixers' recurrent forms.

Every block's mixer runs its ``init_state`` / ``step`` (attention: the KV cache;
SSMs, linear attention, convolutions: their recurrent states), so a prompt is
read once and each new token costs one step. :func:`step_logits` over a whole
sequence equals the parallel forward pass (tested), which is what makes the
samples the model's own.

- :func:`generate`: prompt ``[batch, P]`` -> ``[batch, P + num_tokens]``, sampling
  with ``temperature`` (0: greedy) from the ``top_k`` most likely tokens (0: all).
- :func:`load_params`: the newest checkpoint's parameters of a run's workdir.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, List, Tuple

import jax
import jax.numpy as jnp
import ml_collections


def _init_states(model, batch_size: int) -> List[Any]:
    states = []
    for block in model.blocks:
        mixer = block.token_mixer
        if not hasattr(mixer, "step"):
            raise ValueError(f"mixer {model.spec.mixer!r} has no step(): it cannot decode token by token")
        states.append(mixer.init_state(batch_size))
    return states


def _check_length(model, length: int) -> None:
    for block in model.blocks:
        check = getattr(block.token_mixer, "check_decode_length", None)
        if check is not None:
            check(length)


def _step(model, token, position, states):
    """Token ids ``[batch]`` at ``position`` -> logits ``[batch, vocab]`` and the new states."""
    s = model.spec
    x = model.embed(token).astype(jnp.dtype(s.dtype))
    if s.position_embedding == "learned":
        x = x + model.pos_embed(position).astype(x.dtype)
    new_states = []
    for block, state in zip(model.blocks, states):
        h, state = block.token_mixer.step(block.mixer_norm(x), state)
        x = x + h
        if block.mlp_hidden:
            x = x + block.mlp(block.mlp_norm(x))
        new_states.append(state)
    x = model.final_norm(x)
    logits = model.embed.attend(x) if s.tie_embeddings else model.lm_head(x)
    return logits.astype(jnp.float32), new_states


def _check_lm(model):
    if model.spec.head != "lm":
        raise ValueError(f"sampling needs model.head='lm', got {model.spec.head!r}")
    if not model.spec.causal:
        raise ValueError("sampling needs a causal model (model.causal=True)")


def step_logits(model, params, tokens) -> jnp.ndarray:
    """Logits ``[batch, length, vocab]`` of ``tokens`` ``[batch, length]``, one step per position."""
    _check_lm(model)
    tokens = jnp.asarray(tokens, jnp.int32)
    model.apply({"params": params}, tokens.shape[1], method=_check_length)
    return _step_logits(model, params, tokens)


@functools.partial(jax.jit, static_argnames=("model",))
def _step_logits(model, params, tokens):
    variables = {"params": params}
    states = model.apply(variables, tokens.shape[0], method=_init_states)

    def body(states, inputs):
        token, position = inputs
        logits, states = model.apply(variables, token, position, states, method=_step)
        return states, logits

    _, logits = jax.lax.scan(body, states, (tokens.T, jnp.arange(tokens.shape[1])))
    return jnp.swapaxes(logits, 0, 1)


def _pick(logits, rng, temperature: float, top_k: int):
    if temperature == 0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(rng, logits).astype(jnp.int32)


def generate(model, params, prompt, num_tokens: int, rng, temperature: float = 1.0, top_k: int = 0):
    """``prompt`` int ``[batch, P]`` (P >= 1) -> ``[batch, P + num_tokens]``: the prompt and the sampled tokens."""
    _check_lm(model)
    prompt = jnp.asarray(prompt, jnp.int32)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be token ids [batch, length >= 1], got shape {prompt.shape}")
    if num_tokens < 0 or temperature < 0 or top_k < 0:
        raise ValueError("num_tokens, temperature and top_k must be >= 0 "
                         f"(got {num_tokens}, {temperature}, {top_k})")
    if top_k > model.spec.vocab_size:
        raise ValueError(f"top_k ({top_k}) exceeds the vocabulary ({model.spec.vocab_size})")
    model.apply({"params": params}, prompt.shape[1] + num_tokens, method=_check_length)
    return _sample(model, params, prompt, rng, int(num_tokens), float(temperature), int(top_k))


@functools.partial(jax.jit, static_argnames=("model", "num_tokens", "temperature", "top_k"))
def _sample(model, params, prompt, rng, num_tokens, temperature, top_k):
    variables = {"params": params}
    batch, length = prompt.shape
    states = model.apply(variables, batch, method=_init_states)

    def read(states, inputs):
        token, position = inputs
        logits, states = model.apply(variables, token, position, states, method=_step)
        return states, logits

    states, logits = jax.lax.scan(read, states, (prompt.T, jnp.arange(length)))

    def write(carry, inputs):
        states, last = carry
        position, key = inputs
        token = _pick(last, key, temperature, top_k)
        logits, states = model.apply(variables, token, position, states, method=_step)
        return (states, logits), token

    keys = jax.random.split(rng, max(num_tokens, 1))[:num_tokens]
    _, tokens = jax.lax.scan(write, (states, logits[-1]), (length + jnp.arange(num_tokens), keys))
    return jnp.concatenate([prompt, tokens.T.reshape(batch, num_tokens)], axis=1)


def load_params(workdir: str) -> Tuple[Any, ml_collections.ConfigDict, int]:
    """``(params, config, step)`` of the newest checkpoint in ``workdir`` (a run's directory)."""
    from sequax.train import trainer

    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{workdir} holds no config.json: pass the workdir of a run (or WORKDIR/<run>)")
    with open(path) as f:
        config = ml_collections.ConfigDict(json.load(f))
    state = trainer.restore_state(config, workdir)  # the trainer's own restore: shapes checked alike
    if state is None:
        raise ValueError(f"{workdir} has no checkpoint yet; train it first")
    return state.params, config, int(state.step)
