"""Packed segments and chunking: the helpers every op shares.

Segments: ``segment_ids`` ``[batch, length]`` ints mark packed sequences;
nothing crosses a change of id. Ops number the maximal runs of equal ids
(:func:`segment_runs`), so an id reused later in a row is still a new segment.

Pieces (chunked prefill, sequence shards): an op's ``initial_state`` is the
state before position 0 and feeds the first segment of the piece. When a piece
starts a new segment, the state carried from the previous piece must not
enter it: :func:`carry_state` zeroes it for exactly those rows, given the
segment id of the previous piece's last token.

Chunking: :func:`split_chunks` pads an axis to a multiple of the chunk size and
splits it; :func:`merge_chunks` undoes it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def check_segment_ids(segment_ids, batch: int, length: int, name: str = "segment_ids"):
    """``segment_ids`` as an int array ``[batch, length]``, or ``ValueError`` saying what to pass."""
    segment_ids = jnp.asarray(segment_ids)
    if segment_ids.shape != (batch, length) or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(
            f"{name} must be an int array [batch, length] = {(batch, length)}; "
            f"got {segment_ids.dtype}{tuple(segment_ids.shape)}"
        )
    return segment_ids


def segment_starts(segment_ids, *, reverse: bool = False):
    """Where a new segment begins, in scan order: bool ``[batch, length]``.

    True where the id differs from the previous position's (the next one's
    when ``reverse``). The first position in scan order is never a start, so
    an initial state flows into it. Any length >= 1.
    """
    segment_ids = jnp.asarray(segment_ids)
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must be [batch, length], got shape {segment_ids.shape}")
    first = jnp.zeros_like(segment_ids[:, :1], bool)
    if reverse:
        return jnp.concatenate([segment_ids[:, :-1] != segment_ids[:, 1:], first], axis=1)
    return jnp.concatenate([first, segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)


def segment_runs(segment_ids):
    """Run index ``[batch, length]`` int32: 0, 1, 2, ... counting the changes of id.

    Runs are contiguous and increasing, so ``run_i == run_j`` means "same
    segment" even when a row reuses an id later.
    """
    return jnp.cumsum(segment_starts(segment_ids).astype(jnp.int32), axis=1)


def carry_state(state, previous_segment_ids, segment_ids):
    """Zero the rows of ``state`` whose piece starts a new segment.

    Args:
      state: a pytree of arrays with a leading ``batch`` axis (a mixer or op
        state carried from the previous piece).
      previous_segment_ids: ``[batch]`` the segment id of the previous piece's
        last token (or None: keep everything).
      segment_ids: ``[batch, length]`` of this piece (or None: keep everything).

    Returns:
      ``state`` with every leaf zeroed for rows where ``segment_ids[:, 0] !=
      previous_segment_ids``.
    """
    if previous_segment_ids is None or segment_ids is None:
        return state
    keep = jnp.asarray(segment_ids)[:, 0] == jnp.asarray(previous_segment_ids)

    def mask(leaf):
        leaf = jnp.asarray(leaf)
        return jnp.where(keep.reshape((-1,) + (1,) * (leaf.ndim - 1)), leaf, jnp.zeros((), leaf.dtype))

    return jax.tree_util.tree_map(mask, state)


def split_chunks(x, size: int, *, axis: int = 1, pad_value=0):
    """Pad ``axis`` of ``x`` to a multiple of ``size`` and split it into ``[num_chunks, size]``.

    ``[..., L, ...]`` -> ``[..., num_chunks, size, ...]`` (the two new axes at
    ``axis``, ``axis + 1``); the tail is filled with ``pad_value``.
    """
    x = jnp.asarray(x)
    axis = axis % x.ndim
    length = x.shape[axis]
    num = -(-length // size)
    pad = num * size - length
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        x = jnp.pad(x, widths, constant_values=pad_value)
    return x.reshape(x.shape[:axis] + (num, size) + x.shape[axis + 1:])


def merge_chunks(x, length: int, *, axis: int = 1):
    """Inverse of :func:`split_chunks`: merge axes ``axis, axis + 1`` and keep ``length`` positions."""
    x = jnp.asarray(x)
    axis = axis % x.ndim
    x = x.reshape(x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2:])
    return jax.lax.slice_in_dim(x, 0, length, axis=axis)


def check_sequence(name, x, rank=None, *, layout="[batch, length, ...]", complex_ok=False):
    """``x`` as an array with ``rank`` axes (any >= 2 if None), ``batch >= 1``, ``length >= 1``
    and a floating (or, with ``complex_ok``, complex) dtype; else ``ValueError`` saying what to pass.

    ``layout`` names the axes in the message (``"[batch, length, channels]"``).
    """
    x = jnp.asarray(x)
    if (x.ndim != rank) if rank is not None else (x.ndim < 2):
        raise ValueError(f"{name} must be {layout}; got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be {layout} with batch >= 1 and length >= 1; got shape {x.shape}")
    kinds = (jnp.floating, jnp.complexfloating) if complex_ok else (jnp.floating,)
    if not any(jnp.issubdtype(x.dtype, kind) for kind in kinds):
        want = "a float or complex" if complex_ok else "a float"
        raise ValueError(f"{name} must be {want} array (cast it to float32); got dtype {x.dtype}")
    return x


def last_segment(previous, segment_ids):
    """The segment id ``[batch]`` int32 a state carries after a piece: ``segment_ids[:, -1]``,
    or ``previous`` when the piece has no ``segment_ids``."""
    if segment_ids is None:
        return previous
    return jnp.asarray(segment_ids)[:, -1].astype(jnp.int32)


__all__ = [
    "carry_state", "check_segment_ids", "check_sequence", "last_segment", "merge_chunks", "segment_runs",
    "segment_starts", "split_chunks",
]
