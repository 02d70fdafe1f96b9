"""Mamba (Gu & Dao 2023) and Mamba-2 (Dao & Gu 2024) blocks.

``mamba``: ``x, z = in_proj(u)``; ``x = silu(conv(x))`` (short causal depthwise
conv); ``dt, B, C = x_proj(x)`` (``dt`` low-rank, expanded by ``dt_proj``); the
selective scan with per-channel ``A = -exp(A_log)`` and skip ``D``, gated by
``silu(z)``; ``out_proj``. Packed sequences (``segment_ids``) are honoured:
the conv is masked at segment boundaries and the scan state restarts.

``mamba2``: one ``in_proj`` gives ``z, x, B, C, dt``; the short conv runs over
``(x, B, C)``; ``dt = softplus(dt + dt_bias)`` per head; SSD with a scalar
``A = -exp(A_log)`` per head and ``D`` per head; ``out_proj(rmsnorm(y *
silu(z)))``. No ``segment_ids``.

Both are causal only and decode token by token (``init_state``/``step``).
Parameters are float32; projections and the conv run in ``dtype``, the scans
in float32.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from sequax.mixers.registry import register
from sequax.ops.fftconv import causal_conv1d, causal_conv1d_step
from sequax.ops.scan import MODES
from sequax.ops.ssm.selective import selective_scan, selective_scan_step
from sequax.ops.ssm.ssd import ssd, ssd_step


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"mixer_kwargs.{name} must be a positive int; got {value!r}")


def _check_input(x, d_model):
    if x.ndim != 3 or x.shape[-1] != d_model or x.shape[1] < 1:
        raise ValueError(f"x must be [batch, length >= 1, d_model={d_model}]; got shape {x.shape}")


def _check_causal(name, causal):
    if not causal:
        raise ValueError(
            f"{name} is causal only (its conv and scan look back); set model.causal=True"
        )


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


@register("mamba")
class Mamba(nn.Module):
    """The Mamba block over ``x`` ``[batch, length, d_model]``.

    ``d_inner = expand * d_model``, ``dt_rank = ceil(d_model / 16)`` unless set.
    Parameters: ``in_proj`` (``d_model -> 2 d_inner``), ``conv_kernel``
    ``[d_conv, d_inner]`` and ``conv_bias``, ``x_proj`` (``d_inner -> dt_rank +
    2 d_state``), ``dt_proj`` (``dt_rank -> d_inner``, no bias) and ``dt_bias``
    ``[d_inner]``, ``A_log`` ``[d_inner, d_state]`` (S4D-real: ``A = -(1..N)``),
    ``D`` ``[d_inner]``, ``out_proj``. ``mode``/``chunk_size`` pick the
    pure-JAX selective-scan algorithm, ``backend`` the implementation.
    """

    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: Optional[int] = None
    mode: Optional[str] = None  # pure-JAX algorithm: None | sequential | associative | chunked
    backend: str = "auto"  # auto | xla | pallas (sequax.ops.dispatch)
    chunk_size: int = 64
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    causal: bool = True
    dtype: Any = jnp.float32

    @property
    def d_inner(self):
        return self.expand * self.d_model

    @property
    def _dt_rank(self):
        return math.ceil(self.d_model / 16) if self.dt_rank is None else self.dt_rank

    def setup(self):
        _check_causal("mamba", self.causal)
        for name in ("d_state", "d_conv", "expand", "chunk_size", "_dt_rank"):
            _check_positive(name.lstrip("_"), getattr(self, name))
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

    def _ssm_inputs(self, x):
        """Post-conv ``x`` ``[..., d_inner]`` -> ``delta``, ``B``, ``C``."""
        r, n = self._dt_rank, self.d_state
        dbc = self.x_proj(x)
        return self.dt_proj(dbc[..., :r]), dbc[..., r : r + n], dbc[..., r + n :]

    def __call__(self, x, *, segment_ids=None, deterministic=True):
        """``x`` ``[batch, length, d_model]`` -> same shape."""
        _check_input(x, self.d_model)
        dtype = jnp.dtype(self.dtype)
        xs, z = jnp.split(self.in_proj(x), 2, axis=-1)
        kernel = self.conv_kernel.astype(dtype)
        xs = causal_conv1d(xs, kernel, segment_ids=segment_ids)
        xs = jax.nn.silu(xs + self.conv_bias.astype(dtype))
        delta, B, C = self._ssm_inputs(xs)
        y = selective_scan(
            xs, delta, -jnp.exp(self.A_log), B, C, self.D, z, delta_bias=self.dt_bias,
            delta_softplus=True, mode=self.mode, chunk_size=self.chunk_size,
            segment_ids=segment_ids, backend=self.backend,
        )
        return self.out_proj(y)

    def init_state(self, batch_size):
        """Zero state: ``{"conv": [batch, d_conv-1, d_inner]`` in ``dtype``,
        ``"ssm": [batch, d_inner, d_state]`` float32``}``."""
        return dict(
            conv=jnp.zeros((batch_size, self.d_conv - 1, self.d_inner), jnp.dtype(self.dtype)),
            ssm=jnp.zeros((batch_size, self.d_inner, self.d_state), jnp.float32),
        )

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        dtype = jnp.dtype(self.dtype)
        xs, z = jnp.split(self.in_proj(x_t), 2, axis=-1)
        xs, conv = causal_conv1d_step(xs, state["conv"], self.conv_kernel.astype(dtype))
        xs = jax.nn.silu(xs + self.conv_bias.astype(dtype))
        delta, B, C = self._ssm_inputs(xs)
        y, ssm = selective_scan_step(
            xs, delta, -jnp.exp(self.A_log), B, C, state["ssm"], self.D, z,
            delta_bias=self.dt_bias, delta_softplus=True,
        )
        return self.out_proj(y), dict(conv=conv, ssm=ssm)


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
class Mamba2(nn.Module):
    """The Mamba-2 block over ``x`` ``[batch, length, d_model]``.

    ``d_inner = expand * d_model`` split into ``d_inner / head_dim`` heads;
    ``B``, ``C`` ``[d_state]`` per group (``ngroups`` divides the heads).
    Parameters: ``in_proj`` (``d_model -> 2 d_inner + 2 ngroups d_state +
    heads``, giving ``z, x, B, C, dt``), ``conv_kernel``/``conv_bias`` over
    ``(x, B, C)``, ``dt_bias``, ``A_log``, ``D`` ``[heads]`` (``A = -exp(A_log)``
    with ``-A`` uniform in [1, 16] at init), ``norm`` ``[d_inner]``,
    ``out_proj``. SSD runs in chunks of ``chunk_size``.
    """

    d_model: int
    head_dim: int = 16
    d_state: int = 16
    ngroups: int = 1
    d_conv: int = 4
    expand: int = 2
    chunk_size: int = 64
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    mode: Optional[str] = None  # pure-JAX SSD algorithm: None (chunked) | chunked | naive
    backend: str = "auto"  # auto | xla | pallas (sequax.ops.dispatch)
    causal: bool = True
    dtype: Any = jnp.float32

    @property
    def d_inner(self):
        return self.expand * self.d_model

    @property
    def heads(self):
        return self.d_inner // self.head_dim

    @property
    def conv_dim(self):
        return self.d_inner + 2 * self.ngroups * self.d_state

    def setup(self):
        _check_causal("mamba2", self.causal)
        for name in ("head_dim", "d_state", "ngroups", "d_conv", "expand", "chunk_size"):
            _check_positive(name, getattr(self, name))
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

    def __call__(self, x, *, segment_ids=None, deterministic=True):
        """``x`` ``[batch, length, d_model]`` -> same shape."""
        if segment_ids is not None:
            raise NotImplementedError(
                "mamba2 cannot honour segment_ids (its SSD state and short conv would cross "
                "packed sequences); pass segment_ids=None or use the mamba mixer"
            )
        _check_input(x, self.d_model)
        dtype = jnp.dtype(self.dtype)
        z, xbc, dt = self._split(self.in_proj(x))
        xbc = causal_conv1d(xbc, self.conv_kernel.astype(dtype))
        xbc = jax.nn.silu(xbc + self.conv_bias.astype(dtype))
        xh, B, C, dt = self._heads(xbc, dt)
        y = ssd(xh, dt, -jnp.exp(self.A_log), B, C, chunk_size=self.chunk_size, D=self.D, mode=self.mode,
                backend=self.backend)
        return self._out(y, z)

    def init_state(self, batch_size):
        """Zero state: ``{"conv": [batch, d_conv-1, conv_dim]`` in ``dtype``,
        ``"ssm": [batch, heads, head_dim, d_state]`` float32``}``, with
        ``conv_dim = d_inner + 2 ngroups d_state``."""
        return dict(
            conv=jnp.zeros((batch_size, self.d_conv - 1, self.conv_dim), jnp.dtype(self.dtype)),
            ssm=jnp.zeros((batch_size, self.heads, self.head_dim, self.d_state), jnp.float32),
        )

    def step(self, x_t, state):
        """One token: ``x_t`` ``[batch, d_model]`` -> ``(y_t [batch, d_model], state)``."""
        dtype = jnp.dtype(self.dtype)
        z, xbc, dt = self._split(self.in_proj(x_t))
        xbc, conv = causal_conv1d_step(xbc, state["conv"], self.conv_kernel.astype(dtype))
        xbc = jax.nn.silu(xbc + self.conv_bias.astype(dtype))
        xh, B, C, dt = self._heads(xbc, dt)
        y, ssm = ssd_step(xh, dt, -jnp.exp(self.A_log), B, C, state["ssm"], D=self.D)
        return self._out(y, z), dict(conv=conv, ssm=ssm)
