"""Mamba-2's state-space duality (SSD) as pure functions.

The SSM has a scalar decay per head, so for head ``h`` (state ``[head_dim,
state]``)::

    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T        (x_t [head_dim], B_t [state])
    y_t = h_t C_t + D x_t

Unrolled, ``y_i = sum_{j<=i} (C_i . B_j) exp(sum_{j<k<=i} dt_k A) dt_j x_j``: a
masked "attention" ``(C B^T o L) (dt x)`` with the 1-semiseparable decay
matrix ``L``. :func:`ssd` with ``mode="chunked"`` evaluates it blockwise (the
SSD paper's chunked algorithm): quadratic attention-like matmuls inside chunks
of ``chunk_size``, and a linear recurrence over one ``[head_dim, state]`` state
per chunk between them; ``mode="naive"`` runs the recurrence step by step (the
reference). :func:`ssd_step` is one step of it (decoding).

Heads are split evenly into ``groups`` sharing ``B`` and ``C`` (head ``h``
uses group ``h // (heads // groups)``). Math is float32; outputs come back in
``x``'s dtype, states in float32.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from sequax.ops.dispatch import BackendTable, check_mode
from sequax.ops.scan import linear_scan

MODES = ("chunked", "naive")
DEFAULT_CHUNK_SIZE = 64

# Backends (sequax.ops.dispatch): "xla" (the modes above) and "pallas"
# (pallas_kernels.ssd: the chunked algorithm with tensor-core matmuls).
SSD = BackendTable("ssd", {"gpu": ("pallas", "xla"), "tpu": ("pallas", "xla")})


def _check(x, dt, A, B, C, D, state, lead, state_name):
    """Validate shapes; return float32 arrays (B, C as given, D/state possibly None)."""
    x = jnp.asarray(x)
    if x.ndim != len(lead) + 2:
        names = ", ".join(lead)
        raise ValueError(f"x must be [{names}, heads, head_dim], got shape {x.shape}")
    heads, head_dim = x.shape[-2:]
    if jnp.shape(dt) != x.shape[:-1]:
        raise ValueError(
            f"dt must be x's shape without head_dim {x.shape[:-1]}, got {jnp.shape(dt)}"
        )
    if jnp.shape(A) != (heads,):
        raise ValueError(
            f"A must be [heads] = ({heads},) (one scalar per head), got {jnp.shape(A)}"
        )
    B, C = jnp.asarray(B), jnp.asarray(C)
    for name, v in (("B", B), ("C", C)):
        if v.ndim != x.ndim or v.shape[:-2] != x.shape[:-2]:
            raise ValueError(
                f"{name} must be [{', '.join(lead)}, groups, state] with leading dims "
                f"{x.shape[:-2]}, got {v.shape}"
            )
    if B.shape != C.shape:
        raise ValueError(f"B and C must have the same shape, got {B.shape} and {C.shape}")
    groups, n = B.shape[-2:]
    if heads % groups:
        raise ValueError(f"B/C have {groups} groups, which must divide the {heads} heads")
    if D is not None:
        if jnp.shape(D) != (heads,):
            raise ValueError(f"D must be [heads] = ({heads},), got {jnp.shape(D)}")
        D = jnp.asarray(D, jnp.float32)
    want = x.shape[:1] + (heads, head_dim, n)
    if state is not None:
        if jnp.shape(state) != want:
            raise ValueError(
                f"{state_name} must be [batch, heads, head_dim, state] = {want}, "
                f"got {jnp.shape(state)}"
            )
        state = jnp.asarray(state, jnp.float32)
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return f32(x), f32(dt), f32(A), f32(B), f32(C), D, state


def _recur(h, x, dt, A, B, C):
    """One float32 step: ``h`` ``[b, H, P, N]``, ``x`` ``[b, H, P]``, ``dt`` ``[b, H]``,
    ``B``/``C`` ``[b, G, N]``. Returns the new ``h`` and ``y`` ``[b, H, P]``."""
    r = x.shape[1] // B.shape[1]
    B, C = jnp.repeat(B, r, axis=1), jnp.repeat(C, r, axis=1)  # [b, H, N]
    decay = jnp.exp(dt * A)[..., None, None]
    h = decay * h + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    return h, jnp.einsum("bhpn,bhn->bhp", h, C)


def _segsum(a):
    """``a`` ``[..., T]`` -> ``[..., T, T]`` with ``[i, j] = sum_{j < k <= i} a_k`` (0 for i <= j).

    Summing masked copies (rather than differencing a cumulative sum) keeps
    the small within-chunk sums accurate however large the totals get.
    """
    T = a.shape[-1]
    x = jnp.broadcast_to(a[..., :, None], a.shape + (T,))  # x[..., i, j] = a_i
    x = jnp.where(jnp.tril(jnp.ones((T, T), bool), k=-1), x, 0.0)  # keep k > j
    return jnp.cumsum(x, axis=-2)  # sum over k <= i


def ssd(x, dt, A, B, C, *, chunk_size=DEFAULT_CHUNK_SIZE, D=None, initial_state=None,
        return_state=False, mode=None, backend="auto"):
    """SSD (Mamba-2), any length.

    Args:
      x: ``[batch, length, heads, head_dim]``.
      dt: ``[batch, length, heads]`` positive step sizes (softplus/bias
        already applied by the caller).
      A: ``[heads]`` negative scalar per head.
      B, C: ``[batch, length, groups, state]``; ``groups`` divides ``heads``.
      chunk_size: chunk length for ``mode="chunked"`` (the tail is padded).
      D: optional ``[heads]`` skip connection.
      initial_state: optional ``[batch, heads, head_dim, state]``.
      return_state: also return the final state.
      mode: ``"chunked"`` or ``"naive"`` (the pure-JAX algorithm); None lets
        the backend choose (chunked for ``"xla"``).
      backend: ``"auto"``, ``"xla"`` or ``"pallas"`` (see
        :mod:`sequax.ops.dispatch`).

    Returns:
      ``y`` ``[batch, length, heads, head_dim]`` in ``x``'s dtype, and with
      ``return_state`` the final float32 state ``[batch, heads, head_dim, state]``.
    """
    check_mode("ssd", mode, MODES)
    if (chunk_size is None or isinstance(chunk_size, bool) or not float(chunk_size).is_integer()
            or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    chunk_size = int(chunk_size)
    _check(x, dt, A, B, C, D, initial_state, ("batch", "length"), "initial_state")
    x, dt, A, B, C = (jnp.asarray(v) for v in (x, dt, A, B, C))
    if x.shape[1] == 0:
        raise ValueError("x must have length >= 1")
    args = dict(chunk_size=chunk_size, D=D, initial_state=initial_state, return_state=return_state, mode=mode)
    return SSD(backend, dict(x=x, dt=dt, A=A, B=B, C=C, **args), x, dt, A, B, C, **args)


def _ssd_xla(x, dt, A, B, C, *, chunk_size, D, initial_state, return_state, mode):
    """The pure-JAX backend on validated inputs (float32 math)."""
    out_dtype = x.dtype
    x, dt, A, B, C, D, h0 = _check(x, dt, A, B, C, D, initial_state, ("batch", "length"), "initial_state")
    if mode == "naive":
        y, last = _ssd_naive(x, dt, A, B, C, D, h0, out_dtype)
        return (y, last) if return_state else y
    batch, length, heads, head_dim = x.shape
    groups, n = B.shape[-2:]
    r = heads // groups
    T = int(chunk_size)
    nc = math.ceil(length / T)
    pad = nc * T - length
    if h0 is None:
        h0 = jnp.zeros((batch, heads, head_dim, n), jnp.float32)

    # Padding has dt = 0: no decay and no input, so the final state is unchanged.
    def chunks(v, *inner):  # [b, l, ...] -> [b, c, T, *inner]
        v = jnp.pad(v, [(0, 0), (0, pad)] + [(0, 0)] * (v.ndim - 2))
        return v.reshape((batch, nc, T) + inner)

    x = chunks(x, groups, r, head_dim)
    dt = chunks(dt, groups, r)
    B, C = chunks(B, groups, n), chunks(C, groups, n)
    xdt = x * dt[..., None]  # [b, c, T, g, r, p]
    a = dt * A.reshape(groups, r)  # log decay per step, [b, c, T, g, r]
    a_cum = jnp.cumsum(a, axis=2)

    # 1. Within each chunk: y_i = sum_{j<=i} (C_i . B_j) L_ij dt_j x_j.
    seg = _segsum(jnp.moveaxis(a, 2, -1))  # [b, c, g, r, T, T]
    L = jnp.where(jnp.tril(jnp.ones((T, T), bool)), jnp.exp(seg), 0.0)
    CB = jnp.einsum("bcign,bcjgn->bcgij", C, B)
    y = jnp.einsum("bcgij,bcgrij,bcjgrp->bcigrp", CB, L, xdt)

    # 2. Each chunk's own contribution to the state at its end (zero start).
    to_end = jnp.exp(a_cum[:, :, -1:] - a_cum)  # decay from j to the chunk end
    states = jnp.einsum("bcjgn,bcjgr,bcjgrp->bcgrpn", B, to_end, xdt)

    # 3. Pass the state across chunks: H_c = exp(sum of chunk c's a) H_{c-1} + states_c.
    decay = jnp.exp(a_cum[:, :, -1])[..., None, None]  # [b, c, g, r, 1, 1]
    H, last = linear_scan(
        decay, states, initial_state=h0.reshape(batch, groups, r, head_dim, n),
        mode="sequential", return_state=True,
    )
    H_in = jnp.concatenate([h0.reshape(batch, 1, groups, r, head_dim, n), H[:, :-1]], axis=1)

    # 4. The entering state's contribution: y_i += exp(a_cum_i) H_in C_i.
    y = y + jnp.einsum("bcign,bcgrpn,bcigr->bcigrp", C, H_in, jnp.exp(a_cum))

    y = y.reshape(batch, nc * T, heads, head_dim)[:, :length]
    if D is not None:
        y = y + D[:, None] * x.reshape(batch, nc * T, heads, head_dim)[:, :length]
    y = y.astype(out_dtype)
    return (y, last.reshape(batch, heads, head_dim, n)) if return_state else y


def _ssd_naive(x, dt, A, B, C, D, h0, out_dtype):
    """The SSD recurrence one step at a time (``lax.scan``): ``mode="naive"``, the reference."""
    if h0 is None:
        h0 = jnp.zeros(x.shape[:1] + x.shape[2:] + B.shape[-1:], jnp.float32)

    def step(h, xs):
        x_t, dt_t, B_t, C_t = xs
        return _recur(h, x_t, dt_t, A, B_t, C_t)

    last, y = lax.scan(step, h0, [jnp.moveaxis(v, 1, 0) for v in (x, dt, B, C)])
    y = jnp.moveaxis(y, 0, 1)
    if D is not None:
        y = y + D[:, None] * x
    return y.astype(out_dtype), last


SSD.register("xla", _ssd_xla)
SSD.register("pallas", "pallas_kernels.ssd:ssd", "pallas_kernels.ssd:why_not")


def ssd_step(x_t, dt_t, A, B_t, C_t, state, D=None):
    """One recurrent step of SSD (decoding).

    Args:
      x_t: ``[batch, heads, head_dim]``; ``dt_t`` ``[batch, heads]``.
      A: ``[heads]``; ``B_t``, ``C_t`` ``[batch, groups, state]``.
      state: ``[batch, heads, head_dim, state]``; ``D`` optional ``[heads]``.

    Returns:
      ``(y_t, state)``: ``y_t`` ``[batch, heads, head_dim]`` in ``x_t``'s dtype
      and the new float32 state.
    """
    if state is None:
        raise ValueError("state must be an array [batch, heads, head_dim, state], not None")
    out_dtype = jnp.asarray(x_t).dtype
    x_t, dt_t, A, B_t, C_t, D, state = _check(x_t, dt_t, A, B_t, C_t, D, state, ("batch",), "state")
    state, y = _recur(state, x_t, dt_t, A, B_t, C_t)
    if D is not None:
        y = y + D[:, None] * x_t
    return y.astype(out_dtype), state


__all__ = ["MODES", "SSD", "ssd", "ssd_step"]
