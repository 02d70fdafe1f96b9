"""Hyena: gated long convolutions with implicit (MLP-generated) filters.

Order-``N`` Hyena (Poli et al., 2023) projects the input into ``N + 1``
streams ``v, x_1 .. x_N``, mixes each with a short causal depthwise conv, then
alternates long convolutions and elementwise gates:

    z = v;  for i in 1..N:  z = x_i * (h_i * z + D_i z);  y = out_proj(z)

The long filters ``h_i`` are not stored tap by tap: a small MLP with sine
activations maps positional features of the lag ``s`` to ``N * d_model``
channels, and an exponential decay window (a different rate per channel)
multiplies the result, so the parameter count does not grow with the length.

The causal form's state (``init_state``; ``__call__``'s ``initial_state`` /
``return_state``) is the short conv's input history, one ring buffer of the
last ``max_length`` inputs per long convolution, and the token count: a piece
that starts from it convolves ``[history, piece]`` (exact, no truncation
beyond what the ``max_length``-tap filters have).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sequax.mixers.common import check_input, no_segments, step_guard
from sequax.mixers.registry import register
from sequax.ops.fftconv import (
    append_history,
    causal_conv1d,
    causal_conv1d_step,
    conv_history_step,
    fft_conv,
    history_to_ring,
    ring_to_history,
)
from sequax.parallel import context as parallel_context
from sequax.parallel import sequence as parallel_sequence


def filter_positions(length: int, max_length: int, causal: bool):
    """Normalised lags ``t = s / max_length`` of a filter over ``length`` positions.

    Returns ``[length]`` (``s = 0 .. length-1``) when ``causal``, otherwise
    ``[2*length - 1]`` (``s = -(length-1) .. length-1``, lag zero in the
    middle, as :func:`sequax.ops.fftconv.fft_conv` expects for two-sided
    kernels). Negative ``s`` are future inputs.
    """
    lags = jnp.arange(length) if causal else jnp.arange(-(length - 1), length)
    return lags.astype(jnp.float32) / max_length


def positional_features(t, num_bands: int):
    """Filter-MLP inputs ``[t, sin(2 pi b t), cos(2 pi b t) for b = 1..num_bands]``.

    ``t``: ``[T]`` normalised lags. Returns ``[T, 1 + 2 * num_bands]``.
    """
    bands = jnp.arange(1, num_bands + 1, dtype=jnp.float32)
    angle = 2.0 * math.pi * t[:, None] * bands
    return jnp.concatenate([t[:, None], jnp.sin(angle), jnp.cos(angle)], axis=-1)


def decay_window(t, channels: int, fast_decay: float = 0.3, slow_decay: float = 1.5,
                 target: float = 1e-2):
    """Exponential windows ``exp(-rate_c |t|)``, ``[T, channels]``.

    Rates are spread linearly over the channels so that channel 0 falls to
    ``target`` at ``|t| = slow_decay`` and the last channel already at
    ``|t| = fast_decay`` (``t`` is the lag over ``max_length``): some filters
    stay local, others reach across the whole context.
    """
    slow, fast = -math.log(target) / slow_decay, -math.log(target) / fast_decay
    rates = jnp.linspace(slow, fast, channels, dtype=jnp.float32)
    return jnp.exp(-jnp.abs(t)[:, None] * rates)


@register("hyena")
class Hyena(nn.Module):
    """Hyena operator (``[batch, length, d_model]`` -> same), with cached decoding.

    Fields:
      order: number of long-conv + gate stages ``N`` (>= 1).
      max_length: longest sequence; the filters are defined on lags
        ``0 .. max_length-1`` (normalised by it) and the decode cache holds that
        many inputs per stage. Longer inputs raise ``ValueError``.
      short_kernel_size: taps of the short causal depthwise conv.
      filter_width: hidden width of the filter MLP.
      num_bands: sine/cosine frequency bands in the positional features.
      filter_freq: frequency ``w`` of the sine activations ``sin(w x)``.
      fast_decay, slow_decay: see :func:`decay_window`.

    ``causal=False`` uses two-sided filters (the MLP is evaluated at negative
    lags too); the short conv stays causal, and ``step`` needs ``causal=True``.
    ``segment_ids`` are not supported (convolutions cross segment boundaries).
    """

    d_model: int
    causal: bool = True
    dtype: Any = jnp.float32
    backend: str = "auto"  # fft_conv's: auto | xla | pallas
    order: int = 2
    max_length: int = 2048
    short_kernel_size: int = 3
    filter_width: int = 64
    num_bands: int = 4
    filter_freq: float = 1.0
    fast_decay: float = 0.3
    slow_decay: float = 1.5

    def setup(self):
        for name in ("order", "max_length", "short_kernel_size", "filter_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        width = (self.order + 1) * self.d_model
        self.in_proj = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32)
        self.out_proj = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=jnp.float32)
        self.short_kernel = self.param(
            "short_kernel", nn.initializers.lecun_normal(), (self.short_kernel_size, width)
        )
        self.short_bias = self.param("short_bias", nn.initializers.zeros, (width,))
        self.filter_mlp = [
            nn.Dense(self.filter_width),
            nn.Dense(self.filter_width),
            nn.Dense(self.order * self.d_model),
        ]
        self.D = self.param("D", nn.initializers.ones, (self.order, self.d_model))

    def filters(self, length: int, causal: bool = True):
        """The implicit long filters, float32 ``[order, T, d_model]``.

        ``T = length`` for causal filters (lags ``0 .. length-1``), else
        ``2*length - 1`` (centred). Causal filters for ``length`` are the first
        rows of those for ``max_length``.
        """
        t = filter_positions(length, self.max_length, causal)
        h = positional_features(t, self.num_bands)
        h = jnp.sin(self.filter_freq * self.filter_mlp[0](h))
        h = jnp.sin(self.filter_freq * self.filter_mlp[1](h))
        h = self.filter_mlp[2](h)  # [T, order * d_model]
        window = decay_window(t, self.d_model, self.fast_decay, self.slow_decay)
        h = h.reshape(len(t), self.order, self.d_model) * window[:, None, :]
        return h.transpose(1, 0, 2)

    def _streams(self, u):
        v, *gates = jnp.split(u, self.order + 1, axis=-1)
        return v, gates

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> ``[batch, length, d_model]``. With
        ``return_state`` (causal only) also the state after the last token
        (``init_state``'s layout); ``initial_state`` is the one before the first."""
        no_segments("hyena", segment_ids)
        check_input(x, self.d_model)
        length = x.shape[1]
        if length > self.max_length:
            raise ValueError(
                f"x has length {length} > max_length={self.max_length}; raise max_length"
            )
        state = self.init_state(x.shape[0]) if initial_state is None and return_state else initial_state
        if state is not None:
            step_guard("hyena", self.causal)
        elif parallel_context.sequence_parallel() is not None:
            return self._sequence_parallel(x)
        u = self.in_proj(x.astype(self.dtype))
        short = None if state is None else state["conv"]
        u, conv = causal_conv1d(u, self.short_kernel.astype(self.dtype), history=short, return_history=True)
        v, gates = self._streams(u + self.short_bias.astype(self.dtype))
        # With a state, the filters reach max_length - 1 lags back into the history.
        h = self.filters(length, self.causal) if state is None else self.filters(self.max_length)
        z, history = v, []
        for i in range(self.order):
            past = None if state is None else ring_to_history(state["history"][i], state["index"])
            if state is not None:
                history.append(history_to_ring(append_history(past, z), state["index"] + length))
            z = gates[i] * fft_conv(z, h[i], causal=self.causal, bias=self.D[i], history=past,
                                    backend=self.backend)
        y = self.out_proj(z)
        if not return_state:
            return y
        return y, dict(conv=conv, history=tuple(history), index=state["index"] + length)

    def _sequence_parallel(self, x):
        """``__call__`` with the length split over the active sequence mesh axis: the short and long
        convolutions receive their input history from the previous shards (:mod:`sequax.parallel.sequence`)."""
        if not self.causal:
            parallel_context.refuse("hyena", "causal=False: its two-sided filters read the future")
        u = parallel_sequence.causal_conv1d(self.in_proj(x.astype(self.dtype)), self.short_kernel.astype(self.dtype))
        v, gates = self._streams(u + self.short_bias.astype(self.dtype))
        h, z = self.filters(x.shape[1]), v
        for i in range(self.order):
            z = gates[i] * parallel_sequence.fft_conv(z, h[i], bias=self.D[i], backend=self.backend)
        return self.out_proj(z)

    def init_state(self, batch_size: int):
        """Zero state: ``{"conv": [batch, short_kernel_size-1, (order+1) d_model]`` (the short
        conv's last inputs), ``"history"``: ``order`` ring buffers ``[batch, max_length,
        d_model]`` (the long convs' inputs, time ``t`` in slot ``t % max_length``),
        ``"index"``: int32 scalar (tokens seen)``}``, in ``dtype``."""
        width = (self.order + 1) * self.d_model
        return dict(
            conv=jnp.zeros((batch_size, self.short_kernel_size - 1, width), self.dtype),
            history=tuple(
                jnp.zeros((batch_size, self.max_length, self.d_model), self.dtype)
                for _ in range(self.order)
            ),
            index=jnp.zeros((), jnp.int32),
        )

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``.

        Each long conv re-reads its cached inputs (O(max_length) per token).
        After ``max_length`` tokens the oldest inputs drop out of the cache.
        """
        step_guard("hyena", self.causal)
        if x_t.ndim != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t must be [batch, d_model={self.d_model}]; got {x_t.shape}")
        u = self.in_proj(x_t.astype(self.dtype))
        u, conv = causal_conv1d_step(u, state["conv"], self.short_kernel.astype(self.dtype))
        u = u + self.short_bias.astype(self.dtype)
        v, gates = self._streams(u)
        h = self.filters(self.max_length)
        z, history = v, []
        for i in range(self.order):
            y, hist = conv_history_step(
                z, state["history"][i], h[i], state["index"], bias=self.D[i]
            )
            history.append(hist)
            z = gates[i] * y
        new_state = dict(conv=conv, history=tuple(history), index=state["index"] + 1)
        return self.out_proj(z), new_state
