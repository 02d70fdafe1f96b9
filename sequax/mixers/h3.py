"""H3 mixer (Fu, Dao et al. 2023): ``q * SSM_diag(SSM_shift(k) * v)`` with heads.

Per token, ``q, k, v = W_q x, W_k x, W_v x`` (``d_model`` each, split into
``num_heads`` heads of ``head_dim = d_model / num_heads``), then:

1. Shift SSM on ``k``: an SSM whose state matrix is a shift register holds the
   last ``d_state`` inputs, so its output is a causal convolution with a learned
   kernel of ``d_state`` taps per channel (lag 0 included): ``k̃ = w * k``.
2. Per head, the outer product ``k̃_t v_t^T`` (``head_dim x head_dim``) goes
   through a diagonal SSM (an S4D kernel plus skip ``D``). The SSM of entry
   ``(i, j)`` belongs to key channel ``i`` of the head (``d_model`` SSMs in
   all, shared over ``j``), so the state is a decayed sum of ``k̃ v^T`` as in
   linear attention with per-key-channel decay.
3. ``y_t[j] = sum_i q_t[i] S_t[i, j]`` per head, then an output projection.

``num_heads = d_model`` (``head_dim = 1``) is the paper's default per-channel
form ``q ∘ SSM_diag(k̃ ∘ v)``. Causal only; no ``segment_ids``. The state (for
``step`` and ``__call__``'s ``initial_state``/``return_state``) is the shift
SSM's input history and the diagonal SSM's complex state.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sequax.mixers.common import (
    check_choice,
    check_even_state,
    check_input,
    complex_normal_param,
    eigenvalues,
    no_segments,
    require_causal,
)
from sequax.mixers.registry import register
from sequax.ops.fftconv import append_history, causal_conv1d_step, fft_conv
from sequax.ops.ssm.s4 import (
    DISCRETIZATIONS,
    S4D_INITS,
    diag_ssm_carry,
    diag_ssm_step,
    discretize_bilinear,
    discretize_zoh,
    log_dt_init,
    s4d_init,
    s4d_kernel,
)
from sequax.parallel import context as parallel_context
from sequax.parallel import sequence as parallel_sequence


@register("h3")
class H3(nn.Module):
    """H3 over ``x`` ``[batch, length, d_model]``.

    ``d_state`` is both the shift-SSM length (conv taps) and the diagonal SSM's
    state size (``d_state/2`` complex states per key channel). SSM parameters:
    ``Lambda_re``, ``Lambda_im`` ``[d_model, d_state/2]``, ``log_dt``
    ``[d_model]``, ``C`` ``[d_model, d_state/2, 2]``, ``D`` ``[d_model]``; the
    shift kernel is ``shift_kernel`` ``[d_state, d_model]``.
    """

    d_model: int
    num_heads: int = 8
    d_state: int = 64
    causal: bool = True
    ssm_init: str = "lin"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    backend: str = "auto"  # fft_conv's: auto | xla | pallas
    dtype: Any = jnp.float32

    def setup(self):
        require_causal("h3", self.causal)
        if self.num_heads < 1 or self.d_model % self.num_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must divide d_model ({self.d_model}); "
                "change model.num_heads"
            )
        check_even_state("d_state", self.d_state)
        check_choice("ssm_init", self.ssm_init, S4D_INITS)
        check_choice("discretization", self.discretization, DISCRETIZATIONS)
        d, N2 = self.d_model, self.d_state // 2
        dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)  # noqa: E731
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = map(dense, ("q", "k", "v", "out"))
        self.shift_kernel = self.param(
            "shift_kernel", nn.initializers.normal(self.d_state**-0.5), (self.d_state, d)
        )
        Lambda0, B0 = s4d_init(self.d_state, self.ssm_init)
        self.Lambda = eigenvalues(self, Lambda0, (d, N2))
        self.log_dt = self.param("log_dt", log_dt_init, (d,), self.dt_min, self.dt_max)
        self.C = complex_normal_param(self, "C", (d, N2), scale=B0)
        self.D = self.param("D", nn.initializers.normal(1.0), (d,))

    @property
    def _head_dim(self):
        return self.d_model // self.num_heads

    def _expand(self, a, axis):
        """Repeat per-key-channel values ``head_dim`` times along ``axis`` so they
        index the flattened ``(head, i, j)`` outer-product channels."""
        return jnp.repeat(a, self._head_dim, axis=axis)

    def _outer(self, k, v):
        """``[..., d_model]`` x2 -> per-head outer products ``[..., d_model * head_dim]``."""
        lead, h, e = k.shape[:-1], self.num_heads, self._head_dim
        kv = k.reshape(lead + (h, e, 1)) * v.reshape(lead + (h, 1, e))
        return kv.reshape(lead + (h * e * e,))

    def _readout(self, q, s):
        """``q`` ``[..., d_model]``, ``s`` ``[..., d_model * head_dim]`` -> ``[..., d_model]``."""
        lead, h, e = q.shape[:-1], self.num_heads, self._head_dim
        y = jnp.einsum("...hi,...hij->...hj", q.reshape(lead + (h, e)), s.reshape(lead + (h, e, e)))
        return y.reshape(lead + (h * e,))

    def _diag_ssm(self):
        """The discretised diagonal SSM ``(Λ̄, B̄, C)``, ``[d_model * head_dim, d_state/2]`` each."""
        discretize = discretize_zoh if self.discretization == "zoh" else discretize_bilinear
        Lambda_bar, B_bar = discretize(self.Lambda, 1.0, jnp.exp(self.log_dt)[:, None])
        return tuple(self._expand(a, 0) for a in (Lambda_bar, B_bar, self.C))

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> same shape (two FFT convolutions). With
        ``return_state`` also the state after the last token (``init_state``'s layout);
        ``initial_state`` is the one before the first (None: zeros)."""
        no_segments("h3", segment_ids)
        check_input(x, self.d_model)
        state = self.init_state(x.shape[0]) if initial_state is None and return_state else initial_state
        L = x.shape[1]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        history = None if state is None else state["shift"]
        kernel = s4d_kernel(self.Lambda, 1.0, self.C, self.log_dt, L, self.discretization)
        if state is None and parallel_context.sequence_parallel() is not None:  # the length is split
            kv = self._outer(parallel_sequence.fft_conv(k, self.shift_kernel, backend=self.backend), v)
            s = parallel_sequence.fft_conv(kv, self._expand(kernel, 1), bias=self._expand(self.D, 0),
                                           backend=self.backend)
            return self.out_proj(self._readout(q, s))
        kv = self._outer(fft_conv(k, self.shift_kernel, history=history, backend=self.backend), v)
        s = fft_conv(kv, self._expand(kernel, 1), bias=self._expand(self.D, 0), backend=self.backend)
        if state is not None:
            s_state, ssm = diag_ssm_carry(*self._diag_ssm(), kv, state["ssm"])
            s = (s.astype(jnp.float32) + s_state).astype(s.dtype)
        y = self.out_proj(self._readout(q, s))
        if not return_state:
            return y
        return y, {"shift": append_history(state["shift"], k), "ssm": ssm}

    def init_state(self, batch_size):
        """``{"shift": [batch, d_state-1, d_model], "ssm": [batch, d_model*head_dim, d_state/2]}``
        (the last ``d_state-1`` keys, oldest first; the complex diagonal-SSM state)."""
        return {
            "shift": jnp.zeros((batch_size, self.d_state - 1, self.d_model), self.dtype),
            "ssm": jnp.zeros(
                (batch_size, self.d_model * self._head_dim, self.d_state // 2), jnp.complex64
            ),
        }

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        q, k, v = self.q_proj(x_t), self.k_proj(x_t), self.v_proj(x_t)
        k, shift = causal_conv1d_step(k, state["shift"], self.shift_kernel)
        kv = self._outer(k, v)
        s, ssm = diag_ssm_step(*self._diag_ssm(), kv, state["ssm"])
        s = s + self._expand(self.D, 0) * kv.astype(jnp.float32)
        y = self.out_proj(self._readout(q, s.astype(q.dtype)))
        return y, {"shift": shift, "ssm": ssm}
