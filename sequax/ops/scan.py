"""First-order linear recurrences ``h_t = a_t * h_{t-1} + b_t`` as pure functions.

The recurrence is associative: composing step ``(a1, b1)`` then ``(a2, b2)``
gives ``h -> a2 * (a1 * h + b1) + b2 = (a1 * a2) * h + (a2 * b1 + b2)``, so the
pair operator ``(a1, b1) o (a2, b2) = (a1 * a2, a2 * b1 + b2)`` lets
``jax.lax.associative_scan`` compute every ``h_t`` in ``O(log length)`` depth.

Three interchangeable modes (algorithms of the pure-JAX ``"xla"`` backend):

- ``"sequential"``: ``lax.scan`` over time; the reference.
- ``"associative"``: one parallel scan over the whole sequence; memory
  ``O(length * log length)`` intermediates in the backward pass.
- ``"chunked"``: a parallel scan inside chunks of ``chunk_size`` positions and
  a ``lax.scan`` carrying the state from chunk to chunk; the temporaries of
  the parallel scan exist for one chunk at a time (forward and backward,
  thanks to ``jax.checkpoint`` on the chunk body).

Backends (:mod:`sequax.ops.dispatch`): ``"xla"`` (the modes above) and
``"pallas"`` (:mod:`pallas_kernels.linear_scan`, real inputs, one fused pass
forward and one backward).

:func:`scan_chunks` (a rematerialised ``lax.scan`` over chunks) and
:func:`chunk_states` (one chunk's states from a carried state) are the chunked
mode's parts; the selective scan's chunked mode is built from the same two.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from sequax.ops.dispatch import BackendTable, check_mode as check_mode_name
from sequax.ops.segments import check_segment_ids, check_sequence, merge_chunks, segment_starts, split_chunks

MODES = ("sequential", "associative", "chunked")
DEFAULT_MODE = "associative"
DEFAULT_CHUNK_SIZE = 128

LINEAR_SCAN = BackendTable("linear_scan", {"gpu": ("xla",), "tpu": ("xla",)})


def combine(left, right):
    """The associative operator on ``(a, b)`` pairs: ``(a1*a2, a2*b1 + b2)``.

    ``left`` is the earlier step. Works elementwise on arrays of any (matching,
    broadcastable) shape.
    """
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


def check_chunk_size(chunk_size, default: int) -> int:
    """``chunk_size`` as a positive int (``default`` if None; numpy ints welcome), else ``ValueError``."""
    if chunk_size is None:
        return default
    try:
        ok = not isinstance(chunk_size, bool) and int(chunk_size) == chunk_size and chunk_size >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"chunk_size must be a positive int (or None for {default}), got {chunk_size!r}")
    return int(chunk_size)


def check_mode(mode, chunk_size, op: str = "linear_scan", default_chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Validate ``mode`` (one of :data:`MODES` or None) and ``chunk_size``; return the chunk size."""
    check_mode_name(op, mode, MODES)
    return check_chunk_size(chunk_size, default_chunk_size)


def _scan_sequential(a, b):
    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    h0 = jnp.zeros(b.shape[:1] + b.shape[2:], b.dtype)
    _, h = lax.scan(step, h0, (jnp.moveaxis(a, 1, 0), jnp.moveaxis(b, 1, 0)))
    return jnp.moveaxis(h, 0, 1)


def _scan_associative(a, b):
    return lax.associative_scan(combine, (a, b), axis=1)[1]


def chunk_states(h, a, b):
    """All states of one chunk, ``[batch, T, ...]``, starting from the carried state ``h`` ``[batch, ...]``.

    A parallel scan gives ``prod_{s<=t} a_s`` and the zero-start states; the
    carried state enters through the first.
    """
    a_cum, h_local = lax.associative_scan(combine, (a, b), axis=1)
    return a_cum * h[:, None] + h_local


def scan_chunks(body, init, xs, chunk_size: int, pad_values=None):
    """``lax.scan`` of ``body(carry, chunk) -> (carry, out)`` over chunks of the length axis.

    Args:
      body: called on one chunk: ``chunk`` is the tuple ``xs`` cut to
        ``[batch, chunk_size, ...]``; ``out`` a pytree of ``[batch, chunk_size, ...]``.
        It is rematerialised (``jax.checkpoint``), so the backward pass holds
        one chunk's temporaries at a time.
      init: the carry before the first chunk.
      xs: tuple of ``[batch, length, ...]`` arrays.
      chunk_size: positions per chunk; the tail chunk is padded.
      pad_values: tuple of scalars, one per entry of ``xs`` (default 0): the
        padding must leave the carry unchanged (e.g. decay 1, input 0).

    Returns:
      ``(carry, out)``: the carry after the last chunk and ``out`` merged back
      to ``[batch, length, ...]``.
    """
    length = xs[0].shape[1]
    pad_values = (0,) * len(xs) if pad_values is None else pad_values
    chunks = tuple(
        jnp.moveaxis(split_chunks(x, chunk_size, pad_value=v), 1, 0) for x, v in zip(xs, pad_values)
    )
    carry, out = lax.scan(jax.checkpoint(body), init, chunks)
    return carry, jax.tree_util.tree_map(lambda o: merge_chunks(jnp.moveaxis(o, 0, 1), length), out)


def _scan_chunked(a, b, chunk_size):
    def body(h, ab):
        h_chunk = chunk_states(h, *ab)
        return h_chunk[:, -1], h_chunk

    h0 = jnp.zeros(b.shape[:1] + b.shape[2:], b.dtype)
    # a = 1, b = 0 leaves the state unchanged, so padding is harmless.
    return scan_chunks(body, h0, (a, b), chunk_size, pad_values=(1, 0))[1]


def linear_scan(
    a,
    b,
    *,
    initial_state=None,
    reverse: bool = False,
    segment_ids=None,
    mode=None,
    chunk_size=None,
    return_state: bool = False,
    backend: str = "auto",
):
    """All states of ``h_t = a_t * h_{t-1} + b_t`` along axis 1.

    Args:
      a: ``[batch, length, ...]`` decay, real or complex; same rank as ``b``
        and broadcastable to ``b.shape`` (use size-1 axes).
      b: ``[batch, length, ...]`` input.
      initial_state: ``[batch, ...]`` (``b.shape`` without the length axis),
        the state before the first position in scan order; zeros if None.
      reverse: scan from the end, ``h_t = a_t * h_{t+1} + b_t``.
      segment_ids: optional ``[batch, length]`` ints of packed sequences; the
        state resets to zero where the id changes (in scan order), i.e.
        ``a_t = 0`` there. ``initial_state`` feeds only the first position
        in scan order.
      mode: ``"sequential"``, ``"associative"`` or ``"chunked"`` (the pure-JAX
        algorithm); None: the backend's default (associative for ``"xla"``).
      chunk_size: chunk length for ``"chunked"`` (default 128; the tail is
        padded); ignored by the other modes.
      return_state: also return the final state (last in scan order).
      backend: ``"auto"``, ``"xla"`` or ``"pallas"`` (see
        :mod:`sequax.ops.dispatch`).

    Returns:
      ``h`` ``[batch, length, ...]`` in the common dtype of the inputs
      (computed in at least float32), and with ``return_state`` also the
      final state ``[batch, ...]``.
    """
    chunk_size = check_mode(mode, chunk_size)
    b = check_sequence("b", b, complex_ok=True)
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        raise ValueError(f"a must be a float or complex array (cast it to float32); got dtype {a.dtype}")
    if a.ndim != b.ndim:
        raise ValueError(
            f"a must have the same rank as b {b.shape} (use size-1 axes to broadcast), "
            f"got shape {a.shape}"
        )
    try:
        ok = jnp.broadcast_shapes(a.shape, b.shape) == b.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"a {a.shape} must broadcast to b's shape {b.shape}")
    state_shape = b.shape[:1] + b.shape[2:]
    if initial_state is not None:
        initial_state = jnp.asarray(initial_state)
        if initial_state.shape != state_shape:
            raise ValueError(
                f"initial_state must be [batch, ...] = {state_shape} (b without its "
                f"length axis), got shape {initial_state.shape}"
            )
    if segment_ids is not None:
        segment_ids = check_segment_ids(segment_ids, *b.shape[:2])
    args = dict(initial_state=initial_state, reverse=reverse, segment_ids=segment_ids)
    backend = LINEAR_SCAN.resolve(backend, a=a, b=b, mode=mode, **args)
    if backend != "xla":
        return LINEAR_SCAN.get(backend)(a, b, return_state=return_state, **args)
    h, final = _linear_scan_xla(a, b, mode=mode or DEFAULT_MODE, chunk_size=chunk_size, **args)
    return (h, final) if return_state else h


def _linear_scan_xla(a, b, *, initial_state, reverse, segment_ids, mode, chunk_size):
    """The pure-JAX path on validated inputs; returns ``(h, final)``.

    Low-precision inputs (bfloat16, float16) are accumulated in float32.
    """
    out_dtype = jnp.result_type(*([a, b] if initial_state is None else [a, b, initial_state]))
    dtype = jnp.promote_types(out_dtype, jnp.float32)
    a, b = jnp.broadcast_to(a.astype(dtype), b.shape), b.astype(dtype)
    if initial_state is not None:
        initial_state = jnp.asarray(initial_state, dtype)
    if reverse:
        a, b = jnp.flip(a, 1), jnp.flip(b, 1)
    if segment_ids is not None:
        starts = segment_starts(segment_ids, reverse=reverse)
        if reverse:
            starts = jnp.flip(starts, 1)
        starts = starts.reshape(starts.shape + (1,) * (b.ndim - 2))
        a = jnp.where(starts, jnp.zeros((), dtype), a)
    if initial_state is not None:
        # h_0 = a_0 h_{-1} + b_0: fold the initial state into the first input.
        b = b.at[:, 0].add(a[:, 0] * initial_state)

    if mode == "sequential":
        h = _scan_sequential(a, b)
    elif mode == "associative":
        h = _scan_associative(a, b)
    else:
        h = _scan_chunked(a, b, chunk_size)

    final = h[:, -1].astype(out_dtype)
    h = h.astype(out_dtype)
    if reverse:
        h = jnp.flip(h, 1)
    return h, final


LINEAR_SCAN.register("xla", _linear_scan_xla)
LINEAR_SCAN.register("pallas", "pallas_kernels.linear_scan:linear_scan", "pallas_kernels.linear_scan:why_not")

__all__ = [
    "LINEAR_SCAN", "MODES", "check_chunk_size", "check_mode", "chunk_states", "combine", "linear_scan",
    "scan_chunks",
]
