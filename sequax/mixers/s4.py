"""S4 and S4D mixers: per-channel SSMs applied as long FFT convolutions.

Both map ``[batch, length, d_model]`` to the same shape with ``H = d_model``
independent single-input SSMs (one per channel), a skip ``D``, then GELU and a
gated output projection (``Dense(2H)`` + GLU), as in the S4 code.

- ``s4d``: diagonal state matrix (:func:`sequax.ops.ssm.s4.s4d_kernel`).
- ``s4``: HiPPO-LegS in diagonal-plus-low-rank form
  (:func:`sequax.ops.ssm.s4.s4_dplr_kernel`).

``causal=False`` adds a second kernel (own ``C``, shared ``Λ``, ``B``, ``dt``)
run from the end of the sequence; both see lag 0. ``step`` (decoding) is only
defined for the causal form. Neither honours ``segment_ids``: a convolution
crosses packed-sequence boundaries.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sequax.mixers.registry import register
from sequax.ops.fftconv import fft_conv, two_sided_kernel
from sequax.ops.ssm.s4 import (
    DISCRETIZATIONS,
    S4D_INITS,
    dense_ssm_step,
    diag_ssm_step,
    discretize_bilinear,
    discretize_zoh,
    log_dt_init,
    nplr_legs,
    s4_dplr_kernel,
    s4_dplr_recurrence,
    s4d_init,
    s4d_kernel,
)

# Real parts of the eigenvalues are clipped to at most this, keeping every SSM stable.
MAX_REAL_PART = -1e-4


def check_even_state(name, value):
    """``ValueError`` unless ``value`` is an even int >= 2 (used for ``d_state``-like fields)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 2 or value % 2:
        raise ValueError(
            f"mixer_kwargs.{name} must be an even int >= 2 (states come in conjugate pairs); "
            f"got {value!r}"
        )


def check_choice(name, value, choices):
    """``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"mixer_kwargs.{name} must be one of {choices}; got {value!r}")


def no_segments(mixer, segment_ids):
    """Raise ``NotImplementedError`` when a convolution mixer is given ``segment_ids``."""
    if segment_ids is not None:
        raise NotImplementedError(
            f"{mixer} cannot honour segment_ids: its long convolution mixes packed sequences; "
            "pass segment_ids=None (unpacked batches) or use a scan-based mixer such as s5"
        )


def check_input(x, d_model):
    """``ValueError`` unless ``x`` is ``[batch, length >= 1, d_model]``."""
    if x.ndim != 3 or x.shape[-1] != d_model or x.shape[1] < 1:
        raise ValueError(f"x must be [batch, length >= 1, d_model={d_model}]; got shape {x.shape}")


def complex_normal_param(module, name, shape, scale=None):
    """A complex parameter stored as float32 ``shape + (2,)`` (real, imag).

    Initialised complex normal with ``E|c|^2 = 1``, times ``scale`` (broadcast
    to ``shape``) if given. Returns the complex64 value.
    """

    def init(key, full_shape):
        c = jax.random.normal(key, full_shape, jnp.float32) * jnp.sqrt(0.5)
        if scale is not None:
            z = (c[..., 0] + 1j * c[..., 1]) * scale
            c = jnp.stack([z.real, z.imag], -1).astype(jnp.float32)
        return c

    p = module.param(name, init, tuple(shape) + (2,))
    return p[..., 0] + 1j * p[..., 1]


def complex_const_param(module, name, value):
    """A complex parameter stored as float32 ``value.shape + (2,)``, initialised to ``value``."""
    value = jnp.asarray(value)
    p = module.param(name, lambda _: jnp.stack([value.real, value.imag], -1).astype(jnp.float32))
    return p[..., 0] + 1j * p[..., 1]


def eigenvalues(module, Lambda0, shape):
    """Parameters ``Lambda_re``/``Lambda_im`` initialised to ``Lambda0`` broadcast to
    ``shape``; returns the complex eigenvalues with the real part clipped to
    ``MAX_REAL_PART``."""
    f32 = jnp.float32
    re = module.param("Lambda_re", lambda _: jnp.broadcast_to(Lambda0.real, shape).astype(f32))
    im = module.param("Lambda_im", lambda _: jnp.broadcast_to(Lambda0.imag, shape).astype(f32))
    return jnp.minimum(re, MAX_REAL_PART) + 1j * im


def ssm_conv(x, kernels, D, causal, backend="auto"):
    """``y = K * x + D x``: causal with ``kernels[0]``; when not causal, plus the
    reverse-time convolution with ``kernels[1]``. Kernels ``[L, H]``; ``x``
    ``[batch, L, H]``; FFTs in float32; returns ``x``'s dtype. ``backend`` is
    :func:`~sequax.ops.fftconv.fft_conv`'s."""
    if causal:
        return fft_conv(x, kernels[0], causal=True, bias=D, backend=backend)
    return fft_conv(x, two_sided_kernel(kernels[0], kernels[1]), causal=False, bias=D, backend=backend)


class GatedOutput(nn.Module):
    """GELU, then ``Dense(2 * features)`` and a GLU ``a * sigmoid(b)``.

    ``[..., features_in]`` -> ``[..., features]`` in ``dtype``.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, y):
        dense = nn.Dense(2 * self.features, dtype=self.dtype, name="dense")
        y = dense(nn.gelu(y.astype(self.dtype)))
        a, b = jnp.split(y, 2, axis=-1)
        return a * nn.sigmoid(b)


def _step_guard(mixer, causal):
    if not causal:
        raise ValueError(
            f"{mixer}: init_state/step need the causal form (causal=False mixes in the future); "
            "set model.causal=True to decode"
        )


@register("s4d")
class S4D(nn.Module):
    """S4D (Gu et al. 2022): ``H = d_model`` diagonal SSMs with ``d_state/2`` complex states each.

    Parameters: ``Lambda_re``, ``Lambda_im`` ``[H, d_state/2]`` (from
    :func:`~sequax.ops.ssm.s4.s4d_init` with ``ssm_init``), ``log_dt`` ``[H]``
    (uniform in ``[log dt_min, log dt_max]``), ``C`` ``[directions, H,
    d_state/2, 2]`` complex normal, ``D`` ``[H]``. ``B`` is fixed to the
    initialiser's (ones except for ``"legs"``) and folded into ``C`` at
    initialisation, since only the product ``C B`` matters.
    """

    d_model: int
    d_state: int = 64
    causal: bool = True
    ssm_init: str = "lin"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    backend: str = "auto"  # fft_conv's: auto | xla | pallas
    dtype: Any = jnp.float32

    def setup(self):
        check_even_state("d_state", self.d_state)
        check_choice("ssm_init", self.ssm_init, S4D_INITS)
        check_choice("discretization", self.discretization, DISCRETIZATIONS)
        H, N2 = self.d_model, self.d_state // 2
        Lambda0, B0 = s4d_init(self.d_state, self.ssm_init)
        self.Lambda = eigenvalues(self, Lambda0, (H, N2))
        self.log_dt = self.param("log_dt", log_dt_init, (H,), self.dt_min, self.dt_max)
        self.C = complex_normal_param(self, "C", (1 if self.causal else 2, H, N2), scale=B0)
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.out = GatedOutput(H, dtype=self.dtype)

    def __call__(self, x, *, segment_ids=None, deterministic=True):
        """``x`` ``[batch, length, d_model]`` -> same shape (FFT convolution)."""
        no_segments("s4d", segment_ids)
        check_input(x, self.d_model)
        L = x.shape[1]
        kernels = [
            s4d_kernel(self.Lambda, 1.0, C, self.log_dt, L, self.discretization) for C in self.C
        ]
        return self.out(ssm_conv(x, kernels, self.D, self.causal, self.backend))

    def init_state(self, batch_size):
        """Zero state ``[batch_size, d_model, d_state/2]`` complex64."""
        _step_guard("s4d", self.causal)
        return jnp.zeros((batch_size, self.d_model, self.d_state // 2), jnp.complex64)

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        _step_guard("s4d", self.causal)
        discretize = discretize_zoh if self.discretization == "zoh" else discretize_bilinear
        Lambda_bar, B_bar = discretize(self.Lambda, 1.0, jnp.exp(self.log_dt)[:, None])
        y, state = diag_ssm_step(Lambda_bar, B_bar, self.C[0], x_t, state)
        y = y + self.D * x_t.astype(jnp.float32)
        return self.out(y.astype(x_t.dtype)), state


@register("s4")
class S4(nn.Module):
    """S4 (Gu et al. 2022): ``H = d_model`` DPLR SSMs initialised from HiPPO-LegS.

    Parameters: ``Lambda_re``, ``Lambda_im``, ``P``, ``B`` (``[H, d_state/2]``,
    complex ones stored with a trailing (re, im) axis; from
    :func:`~sequax.ops.ssm.s4.nplr_legs`), ``log_dt`` ``[H]``, ``C``
    ``[directions, H, d_state/2, 2]`` and ``D`` ``[H]``.

    As in the S4 code, ``C`` is the transformed ``C̃ = C (I - Ā^l_max)`` of a
    kernel of length ``l_max``: the kernel is always built ``l_max`` long and
    cut to the input length, so outputs do not depend on how long the input
    is, and ``step`` recovers the true ``C`` from ``C̃`` (a dense ``N x N``
    solve per channel, redone at every ``step`` call: decoding costs
    ``O(H N^3 log l_max)`` per token, fine as a reference, slow for serving).
    Inputs longer than ``l_max`` raise ``ValueError``.
    """

    d_model: int
    d_state: int = 64
    causal: bool = True
    l_max: int = 1024
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    backend: str = "auto"  # fft_conv's: auto | xla | pallas
    dtype: Any = jnp.float32

    def setup(self):
        check_even_state("d_state", self.d_state)
        if isinstance(self.l_max, bool) or not isinstance(self.l_max, int) or self.l_max < 1:
            raise ValueError(f"mixer_kwargs.l_max must be a positive int; got {self.l_max!r}")
        H, N2 = self.d_model, self.d_state // 2
        Lambda0, P0, B0, _ = (v[:N2] for v in nplr_legs(self.d_state))
        self.Lambda = eigenvalues(self, Lambda0, (H, N2))
        self.P = complex_const_param(self, "P", jnp.broadcast_to(P0, (H, N2)))
        self.B = complex_const_param(self, "B", jnp.broadcast_to(B0, (H, N2)))
        self.log_dt = self.param("log_dt", log_dt_init, (H,), self.dt_min, self.dt_max)
        self.C = complex_normal_param(self, "C", (1 if self.causal else 2, H, N2))
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.out = GatedOutput(H, dtype=self.dtype)

    def __call__(self, x, *, segment_ids=None, deterministic=True):
        """``x`` ``[batch, length <= l_max, d_model]`` -> same shape (FFT convolution)."""
        no_segments("s4", segment_ids)
        check_input(x, self.d_model)
        L = x.shape[1]
        if L > self.l_max:
            raise ValueError(
                f"s4: input length {L} exceeds mixer_kwargs.l_max={self.l_max}; raise l_max to "
                "at least the longest sequence"
            )
        kernels = [
            s4_dplr_kernel(self.Lambda, self.P, self.B, C, self.log_dt, self.l_max)[:L]
            for C in self.C
        ]
        return self.out(ssm_conv(x, kernels, self.D, self.causal, self.backend))

    def init_state(self, batch_size):
        """Zero state ``[batch_size, d_model, d_state]`` complex64 (all ``N`` states:
        the low-rank term couples each state with its conjugate partner)."""
        _step_guard("s4", self.causal)
        return jnp.zeros((batch_size, self.d_model, self.d_state), jnp.complex64)

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        _step_guard("s4", self.causal)
        A_bar, B_bar, C = s4_dplr_recurrence(
            self.Lambda, self.P, self.B, self.C[0], self.log_dt, self.l_max
        )
        y, state = dense_ssm_step(A_bar, B_bar, C, x_t, state)
        y = y + self.D * x_t.astype(jnp.float32)
        return self.out(y.astype(x_t.dtype)), state
