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

Packed sequences (``segment_ids``): the state restarts at zero where the id
changes, i.e. ``dt_t A = -inf`` there, inside chunks as well as at their edges.

Stability: every decay is the exponential of a *sum* of the ``dt A`` it spans
(segment sums, as in the paper's ``segsum``), never of a difference of two
cumulative sums, so strong decays (``dt A`` of -1e4 within a chunk) and long
chunks (1024) lose no accuracy.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from sequax.ops.dispatch import BackendTable, check_mode
from sequax.ops.scan import check_chunk_size, linear_scan
from sequax.ops.segments import check_segment_ids, merge_chunks, segment_starts, split_chunks

MODES = ("chunked", "naive")
DEFAULT_CHUNK_SIZE = 64

# Backends (sequax.ops.dispatch): "xla" (the modes above) and "pallas"
# (pallas_kernels.ssd: the chunked algorithm with tensor-core matmuls).
# auto: the kernel on GPUs (4x the XLA path forward on an H200, BENCHMARKS.md); TPUs only with
# backend="pallas" until the TPU kernel has run on one.
SSD = BackendTable("ssd", {"gpu": ("pallas", "xla"), "tpu": ("xla",)})


def _float(name, v):
    v = jnp.asarray(v)
    if not jnp.issubdtype(v.dtype, jnp.floating):
        raise ValueError(f"{name} must be a float array (cast it to float32); got dtype {v.dtype}")
    return v


def _check(x, dt, A, B, C, D, state, lead, state_name):
    """Validate shapes and dtypes; return float32 arrays (B, C as given, D/state possibly None)."""
    x = _float("x", x)
    names = ", ".join(lead)
    if x.ndim != len(lead) + 2:
        raise ValueError(f"x must be [{names}, heads, head_dim], got shape {x.shape}")
    if min(x.shape[: len(lead)]) < 1:
        raise ValueError(f"x must be [{names}, heads, head_dim] with {names} >= 1, got shape {x.shape}")
    heads, head_dim = x.shape[-2:]
    dt = _float("dt", dt)
    if dt.shape != x.shape[:-1]:
        raise ValueError(f"dt must be x's shape without head_dim {x.shape[:-1]}, got {dt.shape}")
    if jnp.shape(A) != (heads,):
        raise ValueError(
            f"A must be [heads] = ({heads},) (one scalar per head), got {jnp.shape(A)}"
        )
    B, C = _float("B", B), _float("C", C)
    for name, v in (("B", B), ("C", C)):
        if v.ndim != x.ndim or v.shape[:-2] != x.shape[:-2]:
            raise ValueError(
                f"{name} must be [{names}, groups, state] with leading dims "
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


def _recur(h, x, dt, a, B, C):
    """One float32 step: ``h`` ``[b, H, P, N]``, ``x`` ``[b, H, P]``, ``dt`` and the log
    decay ``a = dt A`` ``[b, H]``, ``B``/``C`` ``[b, G, N]``. Returns the new ``h`` and
    ``y`` ``[b, H, P]``."""
    r = x.shape[1] // B.shape[1]
    B, C = jnp.repeat(B, r, axis=1), jnp.repeat(C, r, axis=1)  # [b, H, N]
    h = jnp.exp(a)[..., None, None] * h + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    return h, jnp.einsum("bhpn,bhn->bhp", h, C)


def _segsum(a):
    """``a`` ``[..., T]`` -> ``[..., T, T]`` with ``[i, j] = sum_{j < k <= i} a_k`` (0 for i <= j).

    Summing masked copies (rather than differencing a cumulative sum) keeps
    the small within-chunk sums accurate however large the totals get, and a
    ``-inf`` (a segment reset) only ever meets other terms in sums.
    """
    T = a.shape[-1]
    x = jnp.broadcast_to(a[..., :, None], a.shape + (T,))  # x[..., i, j] = a_i
    x = jnp.where(jnp.tril(jnp.ones((T, T), bool), k=-1), x, 0.0)  # keep k > j
    return jnp.cumsum(x, axis=-2)  # sum over k <= i


def ssd(x, dt, A, B, C, *, chunk_size=DEFAULT_CHUNK_SIZE, D=None, initial_state=None,
        return_state=False, mode=None, segment_ids=None, backend="auto"):
    """SSD (Mamba-2), any length.

    Args:
      x: ``[batch, length, heads, head_dim]`` float.
      dt: ``[batch, length, heads]`` positive step sizes (softplus/bias
        already applied by the caller).
      A: ``[heads]`` negative scalar per head.
      B, C: ``[batch, length, groups, state]``; ``groups`` divides ``heads``.
      chunk_size: chunk length for ``mode="chunked"`` (the tail is padded;
        None: 64).
      D: optional ``[heads]`` skip connection.
      initial_state: optional ``[batch, heads, head_dim, state]``, the state
        before position 0 (it feeds the first segment).
      return_state: also return the final state.
      mode: ``"chunked"`` or ``"naive"`` (the pure-JAX algorithm); None lets
        the backend choose (chunked for ``"xla"``).
      segment_ids: optional ``[batch, length]`` ints; the state restarts at
        zero where the id changes (the pure-JAX backend only).
      backend: ``"auto"``, ``"xla"`` or ``"pallas"`` (see
        :mod:`sequax.ops.dispatch`).

    Returns:
      ``y`` ``[batch, length, heads, head_dim]`` in ``x``'s dtype, and with
      ``return_state`` the final float32 state ``[batch, heads, head_dim, state]``.
    """
    check_mode("ssd", mode, MODES)
    chunk_size = check_chunk_size(chunk_size, DEFAULT_CHUNK_SIZE)
    _check(x, dt, A, B, C, D, initial_state, ("batch", "length"), "initial_state")
    x, dt, A, B, C = (jnp.asarray(v) for v in (x, dt, A, B, C))
    if segment_ids is not None:
        segment_ids = check_segment_ids(segment_ids, *x.shape[:2])
    args = dict(chunk_size=chunk_size, D=D, initial_state=initial_state, return_state=return_state, mode=mode)
    name = SSD.resolve(backend, x=x, dt=dt, A=A, B=B, C=C, segment_ids=segment_ids, **args)
    if name == "xla":
        return _ssd_xla(x, dt, A, B, C, segment_ids=segment_ids, **args)
    return SSD.get(name)(x, dt, A, B, C, **args)


def _ssd_xla(x, dt, A, B, C, *, chunk_size, D, initial_state, return_state, mode, segment_ids=None):
    """The pure-JAX backend on validated inputs (float32 math)."""
    out_dtype = x.dtype
    x, dt, A, B, C, D, h0 = _check(x, dt, A, B, C, D, initial_state, ("batch", "length"), "initial_state")
    if h0 is None:
        h0 = jnp.zeros(x.shape[:1] + x.shape[2:] + B.shape[-1:], jnp.float32)
    a = dt * A  # log decay per step [b, l, H]
    if segment_ids is not None:  # a reset: nothing of the old state survives
        a = jnp.where(segment_starts(segment_ids)[..., None], -jnp.inf, a)
    if mode == "naive":
        y, last = _ssd_naive(x, dt, a, B, C, h0)
    else:
        y, last = _ssd_chunked(x, dt, a, B, C, h0, min(chunk_size, x.shape[1]))
    if D is not None:
        y = y + D[:, None] * x
    y = y.astype(out_dtype)
    return (y, last) if return_state else y


def _ssd_chunked(x, dt, a, B, C, h0, T):
    """The SSD paper's chunked algorithm; ``a = dt A`` ``[b, l, H]`` (``-inf`` at resets)."""
    batch, length, heads, head_dim = x.shape
    groups, n = B.shape[-2:]
    r = heads // groups
    # Chunks [b, c, T, ...]; the padded tail has dt = 0 and a = 0: no input, no decay.
    xdt = split_chunks((x * dt[..., None]).reshape(batch, length, groups, r, head_dim), T)
    a = split_chunks(a.reshape(batch, length, groups, r), T)  # [b, c, T, g, r]
    B, C = split_chunks(B, T), split_chunks(C, T)  # [b, c, T, g, n]

    # 1. Within each chunk: y_i = sum_{j<=i} (C_i . B_j) L_ij dt_j x_j, with
    #    L_ij = exp(sum_{j<k<=i} a_k).
    L = jnp.where(jnp.tril(jnp.ones((T, T), bool)), jnp.exp(_segsum(jnp.moveaxis(a, 2, -1))), 0.0)
    CB = jnp.einsum("bcign,bcjgn->bcgij", C, B)
    y = jnp.einsum("bcgij,bcgrij,bcjgrp->bcigrp", CB, L, xdt)

    # 2. Each chunk's own contribution to the state at its end (zero start):
    #    the decay from j to the end is L's last row.
    states = jnp.einsum("bcjgn,bcgrj,bcjgrp->bcgrpn", B, L[..., -1, :], xdt)

    # 3. Pass the state across chunks: H_c = exp(sum of chunk c's a) H_{c-1} + states_c.
    #    The decay from the chunk's entry to i is a sum from the chunk start.
    a_in = jnp.cumsum(a, axis=2)  # [b, c, T, g, r]
    h0 = h0.reshape(batch, groups, r, head_dim, n)
    H, last = linear_scan(
        jnp.exp(a_in[:, :, -1])[..., None, None], states, initial_state=h0, mode="sequential",
        return_state=True,
    )
    H_in = jnp.concatenate([h0[:, None], H[:, :-1]], axis=1)

    # 4. The entering state's contribution: y_i += exp(a_in_i) H_in C_i.
    y = y + jnp.einsum("bcign,bcgrpn,bcigr->bcigrp", C, H_in, jnp.exp(a_in))
    y = merge_chunks(y, length).reshape(batch, length, heads, head_dim)
    return y, last.reshape(batch, heads, head_dim, n)


def _ssd_naive(x, dt, a, B, C, h0):
    """The SSD recurrence one step at a time (``lax.scan``): ``mode="naive"``, the reference."""

    def step(h, xs):
        return _recur(h, *xs)

    last, y = lax.scan(step, h0, [jnp.moveaxis(v, 1, 0) for v in (x, dt, a, B, C)])
    return jnp.moveaxis(y, 0, 1), last


def _pallas_why_not(*, segment_ids=None, **inputs):
    """The kernel's own reasons, after refusing ``segment_ids`` (it has no resets)."""
    if segment_ids is not None:
        return "the pallas ssd kernel does not take segment_ids (packed sequences); use backend='xla'"
    from pallas_kernels.ssd import why_not  # imported only once the kernel module loaded

    return why_not(**inputs)


SSD.register("xla", _ssd_xla)
SSD.register("pallas", "pallas_kernels.ssd:ssd", _pallas_why_not)


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
    state, y = _recur(state, x_t, dt_t, dt_t * A, B_t, C_t)
    if D is not None:
        y = y + D[:, None] * x_t
    return y.astype(out_dtype), state


__all__ = ["MODES", "SSD", "ssd", "ssd_step"]
