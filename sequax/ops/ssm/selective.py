"""Mamba's selective scan (S6) as a pure function.

Per channel ``d`` and state index ``n``, with input-dependent step ``delta``
and input-dependent ``B_t``, ``C_t``::

    delta_t = softplus(delta_t + delta_bias)        (if requested)
    h_t[d, n] = exp(delta_t[d] A[d, n]) h_{t-1}[d, n] + delta_t[d] B_t[n] u_t[d]
    y_t[d] = sum_n h_t[d, n] C_t[n] + D[d] u_t[d]
    y_t[d] *= silu(z_t[d])                          (if z is given)

(zero-order hold for A, the simplified Euler rule for B, as in the paper's
reference implementation). ``B`` and ``C`` are either shared by all channels
(``[batch, length, state]``) or given per group of consecutive channels
(``[batch, length, groups, state]``). All math is float32; ``y`` comes back in
``u``'s dtype and the state stays float32.

Modes (algorithms of the pure-JAX ``"xla"`` backend): ``"sequential"``
(``lax.scan`` over time, the reference),
``"associative"`` (builds all ``[batch, length, channels, state]`` states with
:func:`sequax.ops.scan.linear_scan`), ``"chunked"`` (a ``lax.scan`` over chunks
that only ever holds one chunk's states, in the forward and — by
rematerialising each chunk — the backward pass).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sequax.ops.dispatch import BackendTable
from sequax.ops.scan import check_mode, chunk_states, linear_scan, scan_chunks
from sequax.ops.segments import check_segment_ids, check_sequence, segment_starts

DEFAULT_CHUNK_SIZE = 64
DEFAULT_MODE = "associative"

# Backends (sequax.ops.dispatch): "xla" (the modes below) and "pallas"
# (pallas_kernels.selective_scan: one fused pass, states never leave the chip).
# auto: the kernel on GPUs (3-4x the associative scan on an H200, BENCHMARKS.md); the TPU kernel
# has not run on a TPU yet, so TPUs get it only with backend="pallas".
SELECTIVE_SCAN = BackendTable("selective_scan", {"gpu": ("pallas", "xla"), "tpu": ("xla",)})


def _per_channel(bc, channels):
    """``[..., groups, state]`` -> ``[..., channels, state]`` (each group repeated)."""
    return jnp.repeat(bc, channels // bc.shape[-2], axis=-2)


def _check_float(name, x):
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a float array (cast it to float32); got dtype {x.dtype}")
    return x


def _check_bc(name, x, lead, channels, state):
    x = _check_float(name, x)
    if x.ndim not in (len(lead) + 1, len(lead) + 2) or x.shape[: len(lead)] != lead:
        raise ValueError(
            f"{name} must be {list(lead) + ['state']} or {list(lead) + ['groups', 'state']} "
            f"with leading dims {lead}, got shape {x.shape}"
        )
    if x.shape[-1] != state:
        raise ValueError(f"{name}'s last axis must be the state size {state} (A's), got {x.shape}")
    if x.ndim == len(lead) + 1:
        x = x[..., None, :]
    if channels % x.shape[-2]:
        raise ValueError(
            f"{name} has {x.shape[-2]} groups, which must divide the {channels} channels"
        )
    return x.astype(jnp.float32)


def _check_vec(name, x, channels):
    if x is None:
        return None
    x = jnp.asarray(x)
    if x.shape != (channels,):
        raise ValueError(f"{name} must be [channels] = ({channels},), got shape {x.shape}")
    return x.astype(jnp.float32)


def _check_A(A, channels):
    A = jnp.asarray(A)
    if A.ndim != 2 or A.shape[0] != channels or jnp.iscomplexobj(A):
        raise ValueError(
            f"A must be real [channels, state] with channels={channels}, got {A.shape}"
        )
    return A.astype(jnp.float32)


def _delta(delta, delta_bias, delta_softplus):
    delta = delta.astype(jnp.float32)
    if delta_bias is not None:
        delta = delta + delta_bias
    return jax.nn.softplus(delta) if delta_softplus else delta


def _output(y, u, D, z):
    """``y + D u``, gated by ``silu(z)``; all float32."""
    if D is not None:
        y = y + D * u
    if z is not None:
        y = y * jax.nn.silu(z.astype(jnp.float32))
    return y


def _recur(h, u, delta, A, B, C):
    """One float32 step: ``u``, ``delta`` ``[b, d]``; ``B``, ``C`` ``[b, g, n]``;
    ``h`` ``[b, d, n]``.

    Returns the new ``h`` and ``y`` ``[b, d]``.
    """
    channels = u.shape[-1]
    h = jnp.exp(delta[..., None] * A) * h + (delta * u)[..., None] * _per_channel(B, channels)
    return h, jnp.sum(h * _per_channel(C, channels), axis=-1)


def selective_scan(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus: bool = False,
    initial_state=None,
    return_state: bool = False,
    mode=None,
    chunk_size=None,
    segment_ids=None,
    backend: str = "auto",
):
    """The selective scan of Mamba (S6).

    Args:
      u: ``[batch, length, channels]`` input.
      delta: ``[batch, length, channels]`` step sizes (before bias/softplus).
      A: ``[channels, state]`` real (negative for a stable scan).
      B, C: ``[batch, length, state]`` (shared by all channels) or
        ``[batch, length, groups, state]`` (channel ``d`` uses group
        ``d // (channels // groups)``).
      D: optional ``[channels]`` skip connection.
      z: optional ``[batch, length, channels]`` gate; the output is multiplied
        by ``silu(z)``.
      delta_bias: optional ``[channels]`` added to ``delta``.
      delta_softplus: apply softplus to ``delta`` (after the bias).
      initial_state: optional ``[batch, channels, state]``; zeros if None.
      return_state: also return the final state.
      mode: ``"sequential"``, ``"associative"`` or ``"chunked"``: the pure-JAX
        algorithm; None lets the backend choose (associative for ``"xla"``).
      chunk_size: chunk length for ``"chunked"`` (default 64).
      segment_ids: optional ``[batch, length]`` ints; the state resets to zero
        where the id changes (``initial_state`` feeds position 0).
      backend: ``"auto"``, ``"xla"`` or ``"pallas"`` (see
        :mod:`sequax.ops.dispatch`).

    Returns:
      ``y`` ``[batch, length, channels]`` in ``u``'s dtype, and with
      ``return_state`` the final state ``[batch, channels, state]`` (float32).
    """
    chunk_size = check_mode(mode, chunk_size, "selective_scan", DEFAULT_CHUNK_SIZE)
    u = check_sequence("u", u, 3, layout="[batch, length, channels]")
    batch, length, channels = u.shape
    delta = _check_float("delta", delta)
    if delta.shape != u.shape:
        raise ValueError(f"delta must have u's shape {u.shape}, got {delta.shape}")
    if z is not None and jnp.shape(z) != u.shape:
        raise ValueError(f"z must have u's shape {u.shape}, got {jnp.shape(z)}")
    A = _check_A(A, channels)
    state = A.shape[1]
    B = _check_bc("B", B, (batch, length), channels, state)
    C = _check_bc("C", C, (batch, length), channels, state)
    D = _check_vec("D", D, channels)
    delta_bias = _check_vec("delta_bias", delta_bias, channels)
    if initial_state is not None:
        if jnp.shape(initial_state) != (batch, channels, state):
            raise ValueError(
                f"initial_state must be [batch, channels, state] = {(batch, channels, state)}, "
                f"got {jnp.shape(initial_state)}"
            )
        initial_state = jnp.asarray(initial_state, jnp.float32)
    if segment_ids is not None:
        segment_ids = check_segment_ids(segment_ids, batch, length)

    args = dict(
        D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, initial_state=initial_state,
        return_state=return_state, mode=mode, chunk_size=chunk_size, segment_ids=segment_ids,
    )
    return SELECTIVE_SCAN(backend, dict(u=u, delta=delta, A=A, B=B, C=C, **args), u, delta, A, B, C, **args)


def _selective_scan_xla(u, delta, A, B, C, *, D, z, delta_bias, delta_softplus, initial_state,
                        return_state, mode, chunk_size, segment_ids):
    """The pure-JAX backend on validated inputs (``B``, ``C`` ``[b, l, groups, n]`` float32)."""
    batch, length, channels = u.shape
    mode = mode or DEFAULT_MODE
    h0 = jnp.zeros((batch, channels, A.shape[1]), jnp.float32)
    if initial_state is not None:
        h0 = jnp.asarray(initial_state, jnp.float32)
    u32 = u.astype(jnp.float32)
    delta = _delta(delta, delta_bias, delta_softplus)
    if mode == "associative":
        dA = jnp.exp(delta[..., None] * A)
        dBu = (delta * u32)[..., None] * _per_channel(B, channels)
        h, last = linear_scan(
            dA, dBu, initial_state=h0, segment_ids=segment_ids, mode="associative",
            return_state=True,
        )
        y = jnp.einsum("bldn,bldn->bld", h, _per_channel(C, channels))
    else:
        # A reset is delta * A = -inf, i.e. exp(.) = 0; carried as a mask.
        if segment_ids is None:
            keep = jnp.ones((batch, length), jnp.float32)
        else:
            keep = 1.0 - segment_starts(segment_ids).astype(jnp.float32)
        if mode == "sequential":
            last, y = _sequential(h0, u32, delta, A, B, C, keep)
        else:
            last, y = _chunked(h0, u32, delta, A, B, C, keep, chunk_size)
    y = _output(y, u32, D, z).astype(u.dtype)
    return (y, last) if return_state else y


SELECTIVE_SCAN.register("xla", _selective_scan_xla)
SELECTIVE_SCAN.register(
    "pallas", "pallas_kernels.selective_scan:selective_scan", "pallas_kernels.selective_scan:why_not"
)


def _sequential(h0, u, delta, A, B, C, keep):
    def step(h, xs):
        u_t, delta_t, B_t, C_t, keep_t = xs
        return _recur(h * keep_t[:, None, None], u_t, delta_t, A, B_t, C_t)

    xs = [jnp.moveaxis(x, 1, 0) for x in (u, delta, B, C, keep)]
    last, y = lax.scan(step, h0, xs)
    return last, jnp.moveaxis(y, 0, 1)


def _chunked(h0, u, delta, A, B, C, keep, chunk_size):
    channels = u.shape[-1]

    def body(h, xs):
        # Only this chunk's [b, T, d, n] states exist; they are contracted with
        # C at once and dropped (and recomputed in the backward pass).
        u_c, delta_c, B_c, C_c, keep_c = xs
        dA = jnp.exp(delta_c[..., None] * A) * keep_c[..., None, None]
        dBu = (delta_c * u_c)[..., None] * _per_channel(B_c, channels)
        h_all = chunk_states(h, dA, dBu)
        return h_all[:, -1], jnp.einsum("btdn,btdn->btd", h_all, _per_channel(C_c, channels))

    # Padding: delta = 0 and keep = 1 leave the state unchanged.
    return scan_chunks(body, h0, (u, delta, B, C, keep), chunk_size, pad_values=(0, 0, 0, 0, 1))


def selective_scan_step(
    u_t,
    delta_t,
    A,
    B_t,
    C_t,
    state,
    D=None,
    z_t=None,
    delta_bias=None,
    delta_softplus: bool = False,
):
    """One recurrent step of :func:`selective_scan` (decoding).

    Args:
      u_t, delta_t: ``[batch, channels]``; ``z_t`` optional, same shape.
      A: ``[channels, state]``.
      B_t, C_t: ``[batch, state]`` or ``[batch, groups, state]``.
      state: ``[batch, channels, state]``.
      D, delta_bias: optional ``[channels]``; ``delta_softplus`` as in
        :func:`selective_scan`.

    Returns:
      ``(y_t, state)``: ``y_t`` ``[batch, channels]`` in ``u_t``'s dtype and
      the new float32 state ``[batch, channels, state]``.
    """
    u_t = _check_float("u_t", u_t)
    if u_t.ndim != 2:
        raise ValueError(f"u_t must be [batch, channels], got shape {u_t.shape}")
    batch, channels = u_t.shape
    if jnp.shape(delta_t) != u_t.shape:
        raise ValueError(f"delta_t must have u_t's shape {u_t.shape}, got {jnp.shape(delta_t)}")
    if z_t is not None and jnp.shape(z_t) != u_t.shape:
        raise ValueError(f"z_t must have u_t's shape {u_t.shape}, got {jnp.shape(z_t)}")
    A = _check_A(A, channels)
    B_t = _check_bc("B_t", jnp.asarray(B_t), (batch,), channels, A.shape[1])
    C_t = _check_bc("C_t", jnp.asarray(C_t), (batch,), channels, A.shape[1])
    if jnp.shape(state) != (batch, channels, A.shape[1]):
        raise ValueError(
            f"state must be [batch, channels, state] = {(batch, channels, A.shape[1])}, "
            f"got {jnp.shape(state)}"
        )
    D = _check_vec("D", D, channels)
    delta_bias = _check_vec("delta_bias", delta_bias, channels)
    u32 = u_t.astype(jnp.float32)
    delta = _delta(jnp.asarray(delta_t), delta_bias, delta_softplus)
    state, y = _recur(jnp.asarray(state, jnp.float32), u32, delta, A, B_t, C_t)
    return _output(y, u32, D, z_t).astype(u_t.dtype), state


__all__ = ["selective_scan", "selective_scan_step"]
