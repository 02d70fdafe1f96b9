"""Mamba (Gu & Dao 2023) and Mamba-2 (Dao & Gu 2024) blocks.

``mamba``: ``x, z = in_proj(u)``; ``x = silu(conv(x))`` (short causal depthwise
conv); ``dt, B, C = x_proj(x)`` (``dt`` low-rank, expanded by ``dt_proj``); the
selective scan with per-channel ``A = -exp(A_log)`` and skip ``D``, gated by
``silu(z)``; ``out_proj``. Packed sequences (``segment_ids``) are honoured:
the conv is masked at segment boundaries and the scan state restarts.

``mamba2``: one ``in_proj`` gives ``z, x, B, C, dt``; the short conv runs over
``(x, B, C)``; ``dt = softplus(dt + dt_bias)`` per head; SSD with a scalar
``A = -exp(A_log)`` per head and ``D`` per head; ``out_proj(rmsnorm(y *
silu(z)))``. Packed sequences are honoured as in ``mamba``.

Both are causal only. The state (``init_state``) is the short conv's input
history, the scan state and the segment id of the last token; ``__call__``
takes and returns it (``initial_state``, ``return_state``) and ``step`` is
``__call__`` on one token, so decoding, chunked prefill and whole sequences
share one code path. Parameters are float32; projections and the conv run in
``dtype``, the scans in float32.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sequax.mixers.common import check_input, check_positive, end_segment, require_causal, start_state
from sequax.mixers.registry import register
from sequax.ops.fftconv import causal_conv1d
from sequax.ops.scan import MODES
from sequax.ops.ssm.selective import selective_scan
from sequax.ops.ssm.ssd import ssd
from sequax.parallel import context as parallel_context
from sequax.parallel import sequence as parallel_sequence


def uniform_init(bound):
    """Initializer: uniform in ``[-bound, bound]``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dt_bias_init(dt_min=1e-3, dt_max=1e-1, floor=1e-4):
    """Initializer for the ``dt`` bias: ``softplus^-1(dt)``.

    ``dt`` is log-uniform in ``[dt_min, dt_max]``, floored at ``floor``;
    ``softplus^-1(y) = y + log(1 - exp(-y))``.
    """

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, jnp.float32)
        dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = jnp.maximum(dt, floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    return init


def _short_conv(module, name, channels):
    """Depthwise conv kernel ``[d_conv, channels]`` and bias, PyTorch-style uniform init."""
    bound = module.d_conv**-0.5
    kernel = module.param(f"{name}_kernel", uniform_init(bound), (module.d_conv, channels))
    bias = module.param(f"{name}_bias", uniform_init(bound), (channels,))
    return kernel, bias


class _MambaBlock(nn.Module):
    """What Mamba and Mamba-2 share: fields, the short conv with its history, the state, ``step``.

    Subclasses define ``conv_dim`` (the conv's channels), ``_ssm_state_shape``
    and ``_mix(x, state, segment_ids, return_state) -> (y, conv_history, ssm_state)``
    (``state`` None: start from zeros; ``ssm_state`` None unless ``return_state``).
    ``mode`` is the scan's pure-JAX algorithm (mamba: ``sequential``,
    ``associative``, ``chunked``; mamba2: ``chunked``, ``naive``; None: the
    backend's default), ``backend`` its implementation (sequax.ops.dispatch).
    """

    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    chunk_size: int = 64
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: Optional[str] = None
    backend: str = "auto"  # auto | xla | pallas
    causal: bool = True
    dtype: Any = jnp.float32

    @property
    def d_inner(self):
        return self.expand * self.d_model

    def _sequence_split(self, state, return_state):
        """Whether this call runs with the length split over the active sequence mesh axis
        (:mod:`sequax.parallel.sequence`): a split is active and no state goes in or out."""
        return state is None and not return_state and parallel_context.sequence_parallel() is not None

    def _conv(self, xs, state, segment_ids, split=False):
        """``silu(conv(xs) + bias)`` continuing ``state["conv"]``; returns it and the new history
        (None when ``split``: the halo comes from the previous sequence shard)."""
        dtype = jnp.dtype(self.dtype)
        if split:
            xs = parallel_sequence.causal_conv1d(xs, self.conv_kernel.astype(dtype), segment_ids=segment_ids)
            return jax.nn.silu(xs + self.conv_bias.astype(dtype)), None
        xs, history = causal_conv1d(
            xs, self.conv_kernel.astype(dtype), segment_ids=segment_ids,
            history=None if state is None else state["conv"], return_history=True,
        )
        return jax.nn.silu(xs + self.conv_bias.astype(dtype)), history

    def __call__(self, x, *, segment_ids=None, deterministic=True, initial_state=None, return_state=False):
        """``x`` ``[batch, length, d_model]`` -> same shape; with ``return_state`` also the
        state after the last token (``init_state``'s layout). ``initial_state``: the
        state before the first token (None: zeros)."""
        check_input(x, self.d_model)
        state = None if initial_state is None else start_state(self, x.shape[0], initial_state, segment_ids)
        y, conv, ssm = self._mix(x, state, segment_ids, return_state)
        if not return_state:
            return y
        previous = self.init_state(x.shape[0]) if state is None else state
        return y, dict(conv=conv, ssm=ssm, segment=end_segment(previous, segment_ids))

    def init_state(self, batch_size):
        """Zero state: ``{"conv": [batch, d_conv-1, conv_dim]`` in ``dtype`` (the last
        conv inputs, oldest first), ``"ssm"``: the float32 scan state,
        ``"segment": [batch]`` int32 (the last token's segment id)``}``."""
        return dict(
            conv=jnp.zeros((batch_size, self.d_conv - 1, self.conv_dim), jnp.dtype(self.dtype)),
            ssm=jnp.zeros((batch_size,) + self._ssm_state_shape, jnp.float32),
            segment=jnp.zeros((batch_size,), jnp.int32),
        )

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        y, state = self(x_t[:, None], initial_state=state, return_state=True)
        return y[:, 0], state


@register("mamba")
class Mamba(_MambaBlock):
    """The Mamba block over ``x`` ``[batch, length, d_model]``.

    ``d_inner = expand * d_model``, ``dt_rank = ceil(d_model / 16)`` unless set.
    Parameters: ``in_proj`` (``d_model -> 2 d_inner``), ``conv_kernel``
    ``[d_conv, d_inner]`` and ``conv_bias``, ``x_proj`` (``d_inner -> dt_rank +
    2 d_state``), ``dt_proj`` (``dt_rank -> d_inner``, no bias) and ``dt_bias``
    ``[d_inner]``, ``A_log`` ``[d_inner, d_state]`` (S4D-real: ``A = -(1..N)``),
    ``D`` ``[d_inner]``, ``out_proj``. ``mode``/``chunk_size`` pick the
    pure-JAX selective-scan algorithm, ``backend`` the implementation.
    """

    dt_rank: Optional[int] = None

    @property
    def conv_dim(self):
        return self.d_inner

    @property
    def _ssm_state_shape(self):
        return (self.d_inner, self.d_state)

    @property
    def _dt_rank(self):
        return math.ceil(self.d_model / 16) if self.dt_rank is None else self.dt_rank

    def setup(self):
        require_causal("mamba", self.causal)
        for name in ("d_state", "d_conv", "expand", "chunk_size", "_dt_rank"):
            check_positive(name.lstrip("_"), getattr(self, name))
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mixer_kwargs.mode must be one of {MODES} (or None); got {self.mode!r}")
        d, r, n = self.d_inner, self._dt_rank, self.d_state

        def dense(features, name, **kw):
            return nn.Dense(features, use_bias=False, dtype=self.dtype, name=name, **kw)

        self.in_proj = dense(2 * d, "in_proj")
        self.conv_kernel, self.conv_bias = _short_conv(self, "conv", d)
        self.x_proj = dense(r + 2 * n, "x_proj")
        self.dt_proj = dense(d, "dt_proj", kernel_init=uniform_init(r**-0.5))
        self.dt_bias = self.param("dt_bias", dt_bias_init(self.dt_min, self.dt_max), (d,))

        def s4d_real(key, shape):  # A[:, k] = -(k + 1) for every channel
            return jnp.log(jnp.broadcast_to(jnp.arange(1.0, n + 1), shape))

        self.A_log = self.param("A_log", s4d_real, (d, n))
        self.D = self.param("D", nn.initializers.ones, (d,))
        self.out_proj = nn.Dense(self.d_model, use_bias=False, dtype=self.dtype, name="out_proj")

    def _mix(self, x, state, segment_ids, return_state):
        split = self._sequence_split(state, return_state)
        xs, z = jnp.split(self.in_proj(x), 2, axis=-1)
        xs, conv = self._conv(xs, state, segment_ids, split)
        r, n = self._dt_rank, self.d_state
        dbc = self.x_proj(xs)
        args = (xs, self.dt_proj(dbc[..., :r]), -jnp.exp(self.A_log), dbc[..., r : r + n], dbc[..., r + n :],
                self.D, z)
        opts = dict(delta_bias=self.dt_bias, delta_softplus=True, mode=self.mode, chunk_size=self.chunk_size,
                    segment_ids=segment_ids, backend=self.backend)
        if split:
            return self.out_proj(parallel_sequence.selective_scan(*args, **opts)), None, None
        out = selective_scan(
            *args, **opts, initial_state=None if state is None else state["ssm"], return_state=return_state,
        )
        y, ssm = out if return_state else (out, None)
        return self.out_proj(y), conv, ssm


def gated_rmsnorm(y, z, weight, groups=1, eps=1e-5):
    """``rmsnorm(y * silu(z)) * weight``, normalising each of ``groups`` equal channel groups.

    ``y``, ``z`` ``[..., channels]``, ``weight`` ``[channels]`` -> ``[..., channels]``
    in ``y``'s dtype (float32 math).
    """
    h = y.astype(jnp.float32) * jax.nn.silu(z.astype(jnp.float32))
    shape = h.shape
    h = h.reshape(shape[:-1] + (groups, shape[-1] // groups))
    h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + eps)
    return (h.reshape(shape) * weight).astype(y.dtype)


@register("mamba2")
class Mamba2(_MambaBlock):
    """The Mamba-2 block over ``x`` ``[batch, length, d_model]``.

    ``d_inner = expand * d_model`` split into ``d_inner / head_dim`` heads;
    ``B``, ``C`` ``[d_state]`` per group (``ngroups`` divides the heads).
    Parameters: ``in_proj`` (``d_model -> 2 d_inner + 2 ngroups d_state +
    heads``, giving ``z, x, B, C, dt``), ``conv_kernel``/``conv_bias`` over
    ``(x, B, C)``, ``dt_bias``, ``A_log``, ``D`` ``[heads]`` (``A = -exp(A_log)``
    with ``-A`` uniform in [1, 16] at init), ``norm`` ``[d_inner]``,
    ``out_proj``. SSD runs in chunks of ``chunk_size``; ``segment_ids`` reset the
    conv and the SSD state.
    """

    head_dim: int = 16
    ngroups: int = 1

    @property
    def heads(self):
        return self.d_inner // self.head_dim

    @property
    def conv_dim(self):
        return self.d_inner + 2 * self.ngroups * self.d_state

    @property
    def _ssm_state_shape(self):
        return (self.heads, self.head_dim, self.d_state)

    def setup(self):
        require_causal("mamba2", self.causal)
        for name in ("head_dim", "d_state", "ngroups", "d_conv", "expand", "chunk_size"):
            check_positive(name, getattr(self, name))
        if self.d_inner % self.head_dim:
            raise ValueError(
                f"mixer_kwargs.head_dim ({self.head_dim}) must divide expand * d_model "
                f"({self.d_inner}); change head_dim or expand"
            )
        if self.heads % self.ngroups:
            raise ValueError(
                f"mixer_kwargs.ngroups ({self.ngroups}) must divide the number of heads "
                f"({self.heads} = expand * d_model / head_dim); change ngroups or head_dim"
            )
        h = self.heads
        self.in_proj = nn.Dense(
            self.d_inner + self.conv_dim + h, use_bias=False, dtype=self.dtype, name="in_proj"
        )
        self.conv_kernel, self.conv_bias = _short_conv(self, "conv", self.conv_dim)
        self.dt_bias = self.param("dt_bias", dt_bias_init(self.dt_min, self.dt_max), (h,))

        def a_init(key, shape):  # -A uniform in [1, 16]
            return jnp.log(jax.random.uniform(key, shape, minval=1.0, maxval=16.0))

        self.A_log = self.param("A_log", a_init, (h,))
        self.D = self.param("D", nn.initializers.ones, (h,))
        self.norm = self.param("norm", nn.initializers.ones, (self.d_inner,))
        self.out_proj = nn.Dense(self.d_model, use_bias=False, dtype=self.dtype, name="out_proj")

    def _split(self, zxbcdt):
        d = self.d_inner
        return zxbcdt[..., :d], zxbcdt[..., d : d + self.conv_dim], zxbcdt[..., d + self.conv_dim :]

    def _heads(self, xbc, dt):
        """Post-conv ``(x, B, C)`` and raw ``dt`` -> per-head ``x``, grouped ``B``, ``C``,
        and float32 ``dt = softplus(dt + dt_bias)``."""
        lead, d, gn = xbc.shape[:-1], self.d_inner, self.ngroups * self.d_state
        x = xbc[..., :d].reshape(lead + (self.heads, self.head_dim))
        B = xbc[..., d : d + gn].reshape(lead + (self.ngroups, self.d_state))
        C = xbc[..., d + gn :].reshape(lead + (self.ngroups, self.d_state))
        dt = jax.nn.softplus(dt.astype(jnp.float32) + self.dt_bias)
        return x, B, C, dt

    def _out(self, y, z):
        y = y.reshape(y.shape[:-2] + (self.d_inner,))
        return self.out_proj(gated_rmsnorm(y, z, self.norm, self.ngroups))

    def _mix(self, x, state, segment_ids, return_state):
        split = self._sequence_split(state, return_state)
        z, xbc, dt = self._split(self.in_proj(x))
        xbc, conv = self._conv(xbc, state, segment_ids, split)
        xh, B, C, dt = self._heads(xbc, dt)
        if split:
            y = parallel_sequence.ssd(xh, dt, -jnp.exp(self.A_log), B, C, chunk_size=self.chunk_size, D=self.D,
                                      mode=self.mode, segment_ids=segment_ids, backend=self.backend)
            return self._out(y, z), None, None
        out = ssd(
            xh, dt, -jnp.exp(self.A_log), B, C, chunk_size=self.chunk_size, D=self.D, mode=self.mode,
            segment_ids=segment_ids, backend=self.backend,
            initial_state=None if state is None else state["ssm"], return_state=return_state,
        )
        y, ssm = out if return_state else (out, None)
        return self._out(y, z), conv, ssm
