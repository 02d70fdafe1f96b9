"""The device layout a model is traced under, as mixers see it.

The trainer traces its steps inside :func:`use_layout` (mesh, logical-axis
rules, attention strategy). Model code asks:

- :func:`sequence_parallel`: the active :class:`SequenceParallel` when the mesh
  splits the sequence (``mesh.sequence > 1``), else ``None``. A mixer then
  runs its hot op through :mod:`sequax.parallel.sequence` (``shard_map`` over
  the ``sequence`` axis) or refuses with a one-line ``ValueError`` naming
  itself (:func:`refuse`);
- :func:`sequence_mesh`: just the mesh, or ``None``.

Outside :func:`use_layout` (tests, notebooks, a single device) both return
``None`` and every mixer runs its ordinary single-device code.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Optional, Sequence, Tuple

import flax.linen as nn
import jax
from jax.sharding import Mesh

SEQUENCE_AXIS = "sequence"
BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"
# config.model.sequence_parallel: how attention splits the sequence
# (sequax.parallel.attention); "none" leaves attention to XLA (it gathers keys and values).
ATTENTION_STRATEGIES = ("ring", "all_to_all", "none")


@dataclasses.dataclass(frozen=True)
class SequenceParallel:
    """A mesh whose ``axis`` (size > 1) splits the sequence, as a mixer sees it.

    ``batch_axes``: the mesh axes of size > 1 splitting the batch;
    ``head_axis``: the axis splitting heads/channels (``tensor``) or None;
    ``attention``: ``"ring"``, ``"all_to_all"`` or ``"none"``.
    """

    mesh: Mesh
    axis: str = SEQUENCE_AXIS
    batch_axes: Tuple[str, ...] = ()
    head_axis: Optional[str] = None
    attention: str = "ring"

    @property
    def size(self) -> int:
        """Devices along the sequence axis."""
        return int(self.mesh.shape[self.axis])

    @property
    def batch(self):
        """The batch dimension's entry of a ``PartitionSpec``."""
        return self.batch_axes or None

    def heads(self, num: int):
        """The heads dimension's entry of a ``PartitionSpec`` for ``num`` heads (None unless it divides)."""
        if self.head_axis is None or num % self.mesh.shape[self.head_axis]:
            return None
        return self.head_axis


_ACTIVE: contextvars.ContextVar[Optional[SequenceParallel]] = contextvars.ContextVar(
    "sequax_sequence_parallel", default=None
)


def _active_axes(mesh: Mesh, names: Sequence[str]) -> Tuple[str, ...]:
    return tuple(a for a in names if a in mesh.shape and mesh.shape[a] > 1)


def sequence_parallel_for(mesh: Optional[Mesh], attention: str = "ring") -> Optional[SequenceParallel]:
    """The :class:`SequenceParallel` of ``mesh``, or ``None`` when it does not split the sequence."""
    if attention not in ATTENTION_STRATEGIES:
        raise ValueError(
            f"model.sequence_parallel must be one of {ATTENTION_STRATEGIES}; got {attention!r}"
        )
    if mesh is None or mesh.shape.get(SEQUENCE_AXIS, 1) <= 1:
        return None
    heads = _active_axes(mesh, (HEAD_AXIS,))
    return SequenceParallel(mesh, SEQUENCE_AXIS, _active_axes(mesh, BATCH_AXES), heads[0] if heads else None,
                            attention)


def sequence_parallel() -> Optional[SequenceParallel]:
    """The active sequence split (see the module docstring), or ``None``."""
    return _ACTIVE.get()


def sequence_mesh() -> Optional[Mesh]:
    """The mesh of the active sequence split, or ``None``."""
    active = _ACTIVE.get()
    return None if active is None else active.mesh


def refuse(mixer: str, what: str = "") -> None:
    """``ValueError`` for a mixer (or option) that has no sequence-parallel form."""
    detail = f" ({what})" if what else ""
    raise ValueError(
        f"{mixer}{detail} has no sequence-parallel form; set mesh.sequence=1 (use mesh.data / mesh.fsdp) "
        "or pick a mixer that splits the sequence (attention, gla, retention, deltanet, mamba, mamba2, s5, "
        "hyena, sgconv, long_conv, s4, s4d, h3)"
    )


def _set_mesh(mesh):
    if hasattr(jax, "set_mesh"):
        return jax.set_mesh(mesh)
    return mesh  # older JAX: the Mesh itself is the context manager


@contextlib.contextmanager
def use_layout(mesh: Optional[Mesh], rules=(), attention: str = "ring"):
    """Trace model code for ``mesh``: the mesh and logical-axis ``rules`` become the context
    (``nn.with_logical_constraint`` then shards activations) and, when ``mesh.sequence > 1``,
    :func:`sequence_parallel` answers. ``mesh=None``: nothing changes."""
    if mesh is None:
        yield None
        return
    split = sequence_parallel_for(mesh, attention)
    token = _ACTIVE.set(split)
    try:
        with _set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
            yield split
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def use_sequence_parallel(split: Optional[SequenceParallel]):
    """Make ``split`` the active sequence split (tests; :func:`use_layout` does this for the trainer)."""
    token = _ACTIVE.set(split)
    try:
        yield split
    finally:
        _ACTIVE.reset(token)


__all__ = [
    "ATTENTION_STRATEGIES", "SequenceParallel", "refuse", "sequence_mesh", "sequence_parallel",
    "sequence_parallel_for", "use_layout", "use_sequence_parallel",
]
