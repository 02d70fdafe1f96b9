"""S4 and S4D mixers: per-channel SSMs applied as long FFT convolutions.

Both map ``[batch, length, d_model]`` to the same shape with ``H = d_model``
independent single-input SSMs (one per channel), a skip ``D``, then GELU and a
gated output projection (``Dense(2H)`` + GLU), as in the S4 code.

- ``s4d``: diagonal state matrix (:func:`sequax.ops.ssm.s4.s4d_kernel`).
- ``s4``: HiPPO-LegS in diagonal-plus-low-rank form
  (:func:`sequax.ops.ssm.s4.s4_dplr_kernel`).

``causal=False`` adds a second kernel (own ``C``, shared ``Λ``, ``B``, ``dt``)
run from the end of the sequence; both see lag 0. ``step`` (decoding) and the
state in/out of ``__call__`` are only defined for the causal form: the state
is the SSM's (complex) state, and a piece that starts from one adds its exact
contribution ``C Ā^(t+1) x_{-1}`` to the convolution's outputs
(:func:`sequax.ops.ssm.s4.diag_ssm_carry`, :func:`~sequax.ops.ssm.s4.dense_ssm_carry`).
Neither honours ``segment_ids``: a convolution crosses packed-sequence boundaries.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sequax.mixers.common import (
    GeluGLU,
    check_choice,
    check_even_state,
    check_input,
    complex_const_param,
    complex_normal_param,
    eigenvalues,
    no_segments,
    step_guard,
)
from sequax.mixers.registry import register
from sequax.ops.fftconv import fft_conv, two_sided_kernel
from sequax.ops.ssm.s4 import (
    DISCRETIZATIONS,
    S4D_INITS,
    dense_ssm_carry,
    dense_ssm_step,
    diag_ssm_carry,
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
from sequax.parallel import context as parallel_context
from sequax.parallel import sequence as parallel_sequence


def ssm_conv(x, kernels, D, causal, backend="auto"):
    """``y = K * x + D x``: causal with ``kernels[0]``; when not causal, plus the
    reverse-time convolution with ``kernels[1]``. Kernels ``[L, H]``; ``x``
    ``[batch, L, H]``; FFTs in float32; returns ``x``'s dtype. ``backend`` is
    :func:`~sequax.ops.fftconv.fft_conv`'s."""
    if causal:
        return fft_conv(x, kernels[0], causal=True, bias=D, backend=backend)
    return fft_conv(x, two_sided_kernel(kernels[0], kernels[1]), causal=False, bias=D, backend=backend)


class _ConvSSM(nn.Module):
    """The S4/S4D block ``GeluGLU(K * x + D x)``: parallel form, state in/out and ``step``.

    Subclasses set ``kind`` (the mixer's name) and the recurrent form's
    ``step_fn``/``carry_fn`` (diagonal or dense), set up ``D`` and ``out``, and
    define ``kernels(L)`` (one ``[L, H]`` kernel per direction),
    ``recurrence()`` (the discretised ``(state matrix, B̄, C)`` of the causal
    direction) and ``init_state``.
    """

    d_model: int
    d_state: int = 64
    causal: bool = True
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    backend: str = "auto"  # fft_conv's: auto | xla | pallas
    dtype: Any = jnp.float32

    def _ssm_params(self, C_scale=None):
        """The parameters after ``Lambda`` (and ``P``, ``B``): ``log_dt``, ``C``, ``D``, the output."""
        H, N2 = self.d_model, self.d_state // 2
        self.log_dt = self.param("log_dt", log_dt_init, (H,), self.dt_min, self.dt_max)
        self.C = complex_normal_param(self, "C", (1 if self.causal else 2, H, N2), scale=C_scale)
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.out = GeluGLU(H, dtype=self.dtype)

    def _check_length(self, length):
        pass

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> same shape (FFT convolution). With
        ``return_state`` also the state after the last token (``init_state``'s layout);
        ``initial_state`` is the one before the first (None: zeros)."""
        no_segments(self.kind, segment_ids)
        check_input(x, self.d_model)
        self._check_length(x.shape[1])
        stateful = initial_state is not None or return_state
        if stateful:
            step_guard(self.kind, self.causal)
        elif parallel_context.sequence_parallel() is not None:  # the length is split: pass input history
            if not self.causal:
                parallel_context.refuse(self.kind, "causal=False: its reverse kernel reads the future")
            kernel = self.kernels(x.shape[1])[0]
            return self.out(parallel_sequence.fft_conv(x, kernel, bias=self.D, backend=self.backend))
        y = ssm_conv(x, self.kernels(x.shape[1]), self.D, self.causal, self.backend)
        if not stateful:
            return self.out(y)
        state = self.init_state(x.shape[0]) if initial_state is None else initial_state
        y_state, state = self.carry_fn(*self.recurrence(), x, state)
        return self.out((y.astype(jnp.float32) + y_state).astype(x.dtype)), state

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        step_guard(self.kind, self.causal)
        y, state = self.step_fn(*self.recurrence(), x_t, state)
        y = y + self.D * x_t.astype(jnp.float32)
        return self.out(y.astype(x_t.dtype)), state


@register("s4d")
class S4D(_ConvSSM):
    """S4D (Gu et al. 2022): ``H = d_model`` diagonal SSMs with ``d_state/2`` complex states each.

    Parameters: ``Lambda_re``, ``Lambda_im`` ``[H, d_state/2]`` (from
    :func:`~sequax.ops.ssm.s4.s4d_init` with ``ssm_init``), ``log_dt`` ``[H]``
    (uniform in ``[log dt_min, log dt_max]``), ``C`` ``[directions, H,
    d_state/2, 2]`` complex normal, ``D`` ``[H]``. ``B`` is fixed to the
    initialiser's (ones except for ``"legs"``) and folded into ``C`` at
    initialisation, since only the product ``C B`` matters.
    """

    ssm_init: str = "lin"
    discretization: str = "zoh"

    kind = "s4d"
    step_fn = staticmethod(diag_ssm_step)
    carry_fn = staticmethod(diag_ssm_carry)

    def setup(self):
        check_even_state("d_state", self.d_state)
        check_choice("ssm_init", self.ssm_init, S4D_INITS)
        check_choice("discretization", self.discretization, DISCRETIZATIONS)
        H, N2 = self.d_model, self.d_state // 2
        Lambda0, B0 = s4d_init(self.d_state, self.ssm_init)
        self.Lambda = eigenvalues(self, Lambda0, (H, N2))
        self._ssm_params(C_scale=B0)

    def kernels(self, L):
        return [s4d_kernel(self.Lambda, 1.0, C, self.log_dt, L, self.discretization) for C in self.C]

    def recurrence(self):
        discretize = discretize_zoh if self.discretization == "zoh" else discretize_bilinear
        Lambda_bar, B_bar = discretize(self.Lambda, 1.0, jnp.exp(self.log_dt)[:, None])
        return Lambda_bar, B_bar, self.C[0]

    def init_state(self, batch_size):
        """Zero state ``[batch_size, d_model, d_state/2]`` complex64."""
        step_guard("s4d", self.causal)
        return jnp.zeros((batch_size, self.d_model, self.d_state // 2), jnp.complex64)


@register("s4")
class S4(_ConvSSM):
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

    l_max: int = 1024

    kind = "s4"
    step_fn = staticmethod(dense_ssm_step)
    carry_fn = staticmethod(dense_ssm_carry)

    def setup(self):
        check_even_state("d_state", self.d_state)
        if isinstance(self.l_max, bool) or not isinstance(self.l_max, int) or self.l_max < 1:
            raise ValueError(f"mixer_kwargs.l_max must be a positive int; got {self.l_max!r}")
        H, N2 = self.d_model, self.d_state // 2
        Lambda0, P0, B0, _ = (v[:N2] for v in nplr_legs(self.d_state))
        self.Lambda = eigenvalues(self, Lambda0, (H, N2))
        self.P = complex_const_param(self, "P", jnp.broadcast_to(P0, (H, N2)))
        self.B = complex_const_param(self, "B", jnp.broadcast_to(B0, (H, N2)))
        self._ssm_params()

    def _check_length(self, length):
        if length > self.l_max:
            raise ValueError(
                f"s4: input length {length} exceeds mixer_kwargs.l_max={self.l_max}; raise l_max to "
                "at least the longest sequence (or piece)"
            )

    def kernels(self, L):
        return [s4_dplr_kernel(self.Lambda, self.P, self.B, C, self.log_dt, self.l_max)[:L] for C in self.C]

    def recurrence(self):
        return s4_dplr_recurrence(self.Lambda, self.P, self.B, self.C[0], self.log_dt, self.l_max)

    def init_state(self, batch_size):
        """Zero state ``[batch_size, d_model, d_state]`` complex64 (all ``N`` states:
        the low-rank term couples each state with its conjugate partner)."""
        step_guard("s4", self.causal)
        return jnp.zeros((batch_size, self.d_model, self.d_state), jnp.complex64)
