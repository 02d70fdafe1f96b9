"""S5 mixer (Smith et al. 2023): one MIMO diagonal SSM over all channels, via a parallel scan.

``y = 2 Re(C̃ x) + D u`` with ``x_k = Λ̄ x_{k-1} + B̄ u_k`` (see
:mod:`sequax.ops.ssm.s5`), then GELU and a gated output projection
(``Dense(2 d_model)`` + GLU). ``causal=False`` adds a reverse-time scan read out
by a second ``C̃`` (outputs summed). Packed sequences (``segment_ids``) are
honoured: the state restarts at every segment boundary. The causal form's state
(``init_state``, and ``__call__``'s ``initial_state``/``return_state``) is the
complex scan state and the segment id of the last token.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sequax.mixers.common import (
    GeluGLU, check_choice, check_input, eigenvalues, end_segment, start_state, step_guard,
)
from sequax.mixers.registry import register
from sequax.ops.ssm.s4 import DISCRETIZATIONS, log_dt_init
from sequax.ops.ssm.s5 import s5_apply, s5_discretize, s5_init, s5_step
from sequax.parallel import context as parallel_context
from sequax.parallel import sequence as parallel_sequence

# Leaf names of the state-space parameters of the s4, s4d, s5 and h3 mixers:
# eigenvalues, step sizes and the input/low-rank matrices. They are usually
# trained with a smaller learning rate and no weight decay
# (config.optimizer.ssm_learning_rate). C and D are ordinary weights.
SSM_PARAM_NAMES = ("Lambda_re", "Lambda_im", "log_dt", "B", "P")


@register("s5")
class S5(nn.Module):
    """S5 over ``x`` ``[batch, length, d_model]``: ``state_size`` P states in ``blocks`` J blocks.

    Parameters: ``Lambda_re``, ``Lambda_im``, ``log_dt`` ``[P/2]``; ``B``
    ``[P/2, d_model, 2]`` (``B̃ = V^* B``, ``B`` normal with std
    ``1/sqrt(d_model)``); ``C`` ``[directions, d_model, P/2, 2]`` (``C̃ = C V``,
    ``C`` normal with std ``1/sqrt(P)``); ``D`` ``[d_model]``. Complex matrices
    carry a trailing (re, im) axis.
    """

    d_model: int
    state_size: int = 32
    blocks: int = 4
    causal: bool = True
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: Optional[str] = None  # linear_scan's pure-JAX algorithm: None | sequential | associative | chunked
    backend: str = "auto"  # linear_scan's (the complex scan runs on its pure-JAX path)
    dtype: Any = jnp.float32

    def setup(self):
        check_choice("discretization", self.discretization, DISCRETIZATIONS)
        for name in ("state_size", "blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"mixer_kwargs.{name} must be a positive int; got {value!r}")
        if self.state_size % self.blocks or (self.state_size // self.blocks) % 2:
            raise ValueError(
                f"mixer_kwargs.state_size ({self.state_size}) / blocks ({self.blocks}) must be an "
                "even int; change state_size or blocks"
            )
        H, P = self.d_model, self.state_size
        Lambda0, V = s5_init(P, self.blocks)
        self.Lambda = eigenvalues(self, Lambda0, (P // 2,))
        self.log_dt = self.param("log_dt", log_dt_init, (P // 2,), self.dt_min, self.dt_max)

        def b_init(key):  # real B [P, H] mapped to the eigenbasis: V^* B
            Bt = jnp.conj(V).T @ (jax.random.normal(key, (P, H)) * H**-0.5)
            return jnp.stack([Bt.real, Bt.imag], -1)

        def c_init(key):  # real C [dirs, H, P] mapped to the eigenbasis: C V
            Ct = (jax.random.normal(key, (1 if self.causal else 2, H, P)) * P**-0.5) @ V
            return jnp.stack([Ct.real, Ct.imag], -1)

        B = self.param("B", b_init)
        C = self.param("C", c_init)
        self.B_tilde = B[..., 0] + 1j * B[..., 1]
        self.C_tilde = C[..., 0] + 1j * C[..., 1]
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.out = GeluGLU(H, dtype=self.dtype)

    def _discrete(self):
        return s5_discretize(self.Lambda, self.B_tilde, self.log_dt, self.discretization)

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> same shape (one scan over the states). With
        ``return_state`` (causal only) also the state after the last token
        (``init_state``'s layout); ``initial_state`` is the one before the first."""
        check_input(x, self.d_model)
        Lambda_bar, B_bar = self._discrete()
        scan = dict(segment_ids=segment_ids, mode=self.mode, backend=self.backend)
        split = parallel_context.sequence_parallel() is not None and initial_state is None and not return_state
        if split and not self.causal:
            parallel_context.refuse("s5", "causal=False: its reverse scan")
        if split:  # the length is split over the sequence mesh axis; the scan's state crosses shards
            return self.out(parallel_sequence.s5_apply(Lambda_bar, B_bar, self.C_tilde[0], self.D, x, **scan))
        if not self.causal:
            if initial_state is not None or return_state:
                step_guard("s5", self.causal)
            return self.out(s5_apply(Lambda_bar, B_bar, self.C_tilde, self.D, x, bidirectional=True, **scan))
        state = None if initial_state is None else start_state(self, x.shape[0], initial_state, segment_ids)
        out = s5_apply(
            Lambda_bar, B_bar, self.C_tilde[0], self.D, x, **scan,
            initial_state=None if state is None else state["ssm"], return_state=return_state,
        )
        if not return_state:
            return self.out(out)
        y, ssm = out
        previous = self.init_state(x.shape[0]) if state is None else state
        return self.out(y), dict(ssm=ssm, segment=end_segment(previous, segment_ids))

    def init_state(self, batch_size):
        """Zero state ``{"ssm": [batch, state_size/2]`` complex64, ``"segment": [batch]`` int32``}``."""
        step_guard("s5", self.causal)
        return dict(
            ssm=jnp.zeros((batch_size, self.state_size // 2), jnp.complex64),
            segment=jnp.zeros((batch_size,), jnp.int32),
        )

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        step_guard("s5", self.causal)
        Lambda_bar, B_bar = self._discrete()
        y, ssm = s5_step(Lambda_bar, B_bar, self.C_tilde[0], self.D, x_t, state["ssm"])
        return self.out(y), dict(state, ssm=ssm)
