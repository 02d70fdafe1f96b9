"""Explicit long-convolution mixers: SGConv and the regularised long convolution.

Both follow the S4-style block with the SSM kernel swapped for an explicit
per-channel kernel of up to ``max_length`` taps:

    y = GELU(k * x + D x);   out = GLU(Linear(y))   (GLU: a * sigmoid(b))

- ``sgconv`` (Li et al., 2022, "What Makes Convolutional Models Great on Long
  Sequence Modeling?"): the kernel is built from ``num_scales`` sub-kernels of
  ``kernel_dim`` taps, sub-kernel ``i`` interpolated up by ``2**i`` and scaled
  by ``alpha**i`` (:func:`sequax.ops.fftconv.multiscale_kernel`).
- ``long_conv`` (Fu et al., 2023, "Simple Hardware-Efficient Long
  Convolutions for Sequence Modeling"): the kernel is learned tap by tap and
  kept smooth in the forward pass by squashing (soft-thresholding) and/or
  average pooling.

Taps beyond ``max_length`` are zero, so any input length works and the
cached decode step (a ring buffer of the last ``max_length`` inputs) matches
the parallel form at every position; ``__call__`` takes and returns the same
state (``initial_state``, ``return_state``) and then convolves ``[history,
piece]``. ``causal=False`` learns a second kernel for the future direction
(``kernel_reverse``) and convolves with the centred two-sided kernel.
``segment_ids`` are not supported (convolutions cross segment boundaries).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sequax.mixers.common import GeluGLU, check_input, no_segments, step_guard
from sequax.mixers.registry import register
from sequax.ops.fftconv import (
    append_history,
    conv_history_step,
    fft_conv,
    history_to_ring,
    multiscale_kernel,
    ring_to_history,
    smooth_kernel,
    soft_threshold,
    two_sided_kernel,
)
from sequax.parallel import context as parallel_context
from sequax.parallel import sequence as parallel_sequence


class _ExplicitLongConv(nn.Module):
    """Shared block; subclasses set ``kind`` (the mixer's name) and define ``_setup_kernel``
    and ``kernels``."""

    d_model: int
    causal: bool = True
    dtype: Any = jnp.float32
    backend: str = "auto"  # fft_conv's: auto | xla | pallas
    max_length: int = 2048

    def setup(self):
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1; got {self.max_length}")
        self._setup_kernel()
        self.D = self.param("D", nn.initializers.ones, (self.d_model,))
        self.out = GeluGLU(self.d_model, dtype=self.dtype)

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> ``[batch, length, d_model]``. With
        ``return_state`` (causal only) also the state after the last token
        (``init_state``'s layout); ``initial_state`` is the one before the first."""
        no_segments(self.kind, segment_ids)
        check_input(x, self.d_model)
        x = x.astype(self.dtype)
        state = self.init_state(x.shape[0]) if initial_state is None and return_state else initial_state
        if state is not None:
            step_guard(self.kind, self.causal)
        k_fwd, k_bwd = self.kernels()
        if state is None:
            taps = min(x.shape[1], self.max_length)  # longer lags never meet an input
            k = k_fwd[:taps] if self.causal else two_sided_kernel(k_fwd[:taps], k_bwd[:taps])
            if parallel_context.sequence_parallel() is not None:  # the length is split: pass input history
                if not self.causal:
                    parallel_context.refuse(self.kind, "causal=False: its two-sided kernel reads the future")
                return self.out(parallel_sequence.fft_conv(x, k, bias=self.D, backend=self.backend))
            return self.out(fft_conv(x, k, causal=self.causal, bias=self.D, backend=self.backend))
        past = ring_to_history(state["history"], state["index"])
        y = self.out(fft_conv(x, k_fwd, bias=self.D, history=past, backend=self.backend))
        if not return_state:
            return y
        index = state["index"] + x.shape[1]
        return y, dict(history=history_to_ring(append_history(past, x), index), index=index)

    def init_state(self, batch_size: int):
        """Zero state: ``{"history": [batch, max_length, d_model]`` ring buffer of the last
        inputs (time ``t`` in slot ``t % max_length``) in ``dtype``, ``"index"``: int32
        scalar (tokens seen)``}``."""
        return dict(
            history=jnp.zeros((batch_size, self.max_length, self.d_model), self.dtype),
            index=jnp.zeros((), jnp.int32),
        )

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        step_guard(self.kind, self.causal)
        if x_t.ndim != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(f"x_t must be [batch, d_model={self.d_model}]; got {x_t.shape}")
        k_fwd, _ = self.kernels()
        y, history = conv_history_step(
            x_t.astype(self.dtype), state["history"], k_fwd, state["index"], bias=self.D
        )
        return self.out(y), dict(history=history, index=state["index"] + 1)


def _auto_num_scales(kernel_dim: int, max_length: int) -> int:
    """Fewest scales with ``kernel_dim * (2**n - 1) >= max_length``."""
    n = 1
    while kernel_dim * (2**n - 1) < max_length:
        n += 1
    return n


@register("sgconv")
class SGConv(_ExplicitLongConv):
    """SGConv (``[batch, length, d_model]`` -> same), with cached decoding.

    Fields:
      max_length: the kernel is cut to this many taps (and the decode cache
        holds this many inputs).
      kernel_dim: learned taps per sub-kernel and channel.
      num_scales: sub-kernels; 0 picks the fewest whose concatenation covers
        ``max_length`` taps.
      alpha: decay per scale, in ``(0, 1]``.
    """

    kernel_dim: int = 32
    num_scales: int = 0
    alpha: float = 0.5
    kind = "sgconv"

    def _setup_kernel(self):
        if self.kernel_dim < 1:
            raise ValueError(f"kernel_dim must be >= 1; got {self.kernel_dim}")
        if self.num_scales < 0:
            raise ValueError(f"num_scales must be >= 0 (0 picks it); got {self.num_scales}")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1]; got {self.alpha}")
        scales = self.num_scales or _auto_num_scales(self.kernel_dim, self.max_length)
        shape = (scales, self.kernel_dim, self.d_model)
        self.kernel = self.param("kernel", nn.initializers.normal(1.0), shape)
        if not self.causal:
            self.kernel_reverse = self.param("kernel_reverse", nn.initializers.normal(1.0), shape)

    def kernels(self):
        """``(k_fwd, k_bwd)`` float32 ``[K, d_model]`` (``K <= max_length``); ``k_bwd`` is
        ``None`` when causal. Each is the normalised multi-scale kernel, cut to
        ``max_length`` taps."""
        k_fwd = multiscale_kernel(self.kernel, self.alpha)[: self.max_length]
        if self.causal:
            return k_fwd, None
        return k_fwd, multiscale_kernel(self.kernel_reverse, self.alpha)[: self.max_length]


REGULARIZERS = ("squash", "smooth", "both", "none")


@register("long_conv")
class LongConv(_ExplicitLongConv):
    """Directly learned long convolution with forward-pass regularisers.

    Fields:
      max_length: kernel taps (the kernel parameter is ``[max_length, d_model]``).
      regularizer: ``"squash"`` (soft-threshold by ``squash_lambda``),
        ``"smooth"`` (centred moving average of ``smooth_width`` taps),
        ``"both"`` (squash, then smooth) or ``"none"``.
      squash_lambda: soft-threshold level.
      smooth_width: odd averaging window.
      init_scale: standard deviation of the initial kernel taps.
    """

    regularizer: str = "both"
    squash_lambda: float = 0.003
    smooth_width: int = 3
    init_scale: float = 0.02
    kind = "long_conv"

    def _setup_kernel(self):
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}; got {self.regularizer!r}")
        if self.squash_lambda < 0:
            raise ValueError(f"squash_lambda must be >= 0; got {self.squash_lambda}")
        if self.smooth_width < 1 or self.smooth_width % 2 == 0:
            raise ValueError(f"smooth_width must be an odd integer >= 1; got {self.smooth_width}")
        shape = (self.max_length, self.d_model)
        init = nn.initializers.normal(self.init_scale)
        self.kernel = self.param("kernel", init, shape)
        if not self.causal:
            self.kernel_reverse = self.param("kernel_reverse", init, shape)

    def regularize(self, k):
        """Apply the chosen regulariser to a raw ``[max_length, d_model]`` kernel."""
        if self.regularizer in ("squash", "both"):
            k = soft_threshold(k, self.squash_lambda)
        if self.regularizer in ("smooth", "both"):
            k = smooth_kernel(k, self.smooth_width)
        return k

    def kernels(self):
        """``(k_fwd, k_bwd)`` float32 ``[max_length, d_model]`` after the regulariser;
        ``k_bwd`` is ``None`` when causal."""
        k_fwd = self.regularize(self.kernel)
        return k_fwd, (None if self.causal else self.regularize(self.kernel_reverse))
