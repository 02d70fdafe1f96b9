"""The device mesh from ``config.mesh`` and batch placement.

Mesh axes are ``data``, ``fsdp``, ``tensor`` and ``sequence``, in that order
(the last ones vary fastest over the device list, so on a multi-GPU host a
sequence or tensor group stays within the host's NVLink domain). The batch
is split over ``data`` and ``fsdp``, parameters and optimizer state over
``fsdp`` (FSDP) and ``tensor`` (tensor parallelism) by the logical-axis rules
of :mod:`sequax.parallel.sharding`, and the sequence over ``sequence``
(:mod:`sequax.parallel.sequence`, :mod:`sequax.parallel.attention`). One size
may be ``-1``: it takes the devices the others leave.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor", "sequence")


def mesh_sizes(mesh_config, num_devices: int):
    """``{axis: size}`` from ``config.mesh`` with a ``-1`` inferred from ``num_devices``; ``ValueError`` otherwise."""
    sizes = {a: int(mesh_config[a]) for a in AXES}
    inferred = [a for a, s in sizes.items() if s == -1]
    if len(inferred) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
        raise ValueError(f"mesh sizes must be positive (one of them may be -1), got {sizes}")
    if inferred:
        rest = int(np.prod([s for s in sizes.values() if s != -1]))
        if num_devices % rest:
            raise ValueError(
                f"mesh.{inferred[0]}=-1: the other sizes ({rest} devices) do not divide the {num_devices} devices"
            )
        sizes[inferred[0]] = num_devices // rest
    return sizes


def make_mesh(mesh_config, devices=None) -> Optional[Mesh]:
    """A :class:`Mesh` over ``prod(sizes)`` devices, or ``None`` when every size is 1 (one device).

    ``devices``: default ``jax.devices()`` (every process's). The product of
    the sizes must equal the device count when several processes run, and may
    be smaller in a single process (the first devices are used, e.g. a
    2-device mesh on a host of 8).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_sizes(mesh_config, len(devices))
    total = int(np.prod(list(sizes.values())))
    if total == 1 and jax.process_count() == 1:
        return None
    if total > len(devices) or (jax.process_count() > 1 and total != len(devices)):
        raise ValueError(
            f"the mesh {sizes} needs {total} devices but {len(devices)} are visible"
            f"{' (across ' + str(jax.process_count()) + ' processes)' if jax.process_count() > 1 else ''}; "
            "make the product of config.mesh match the device count, or set one size to -1"
        )
    return Mesh(np.array(devices[:total]).reshape([sizes[a] for a in AXES]), AXES)


def batch_spec(ndim: int, mesh: Mesh) -> PartitionSpec:
    """Where a batch array of rank ``ndim`` lives: rows over ``data`` x ``fsdp``, and for
    ``[batch, length]`` arrays the length over ``sequence``."""
    rows = tuple(a for a in ("data", "fsdp") if mesh.shape[a] > 1) or None
    if ndim == 2 and mesh.shape["sequence"] > 1:
        return PartitionSpec(rows, "sequence")
    return PartitionSpec(rows)


def batch_shardings(batch, mesh: Optional[Mesh]):
    """``NamedSharding`` per batch array (``None`` without a mesh)."""
    if mesh is None:
        return None
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, batch_spec(np.ndim(x), mesh)), batch)


def shard_batch(batch, mesh: Optional[Mesh]):
    """Put a batch of numpy arrays on device (split as :func:`batch_spec` says when there is a mesh).

    Every process holds the same global batch (the data iterator is seeded by
    position); each one places only the rows and positions of its own devices
    (``jax.make_array_from_callback``), so a multi-host run reads its shard.
    """
    if mesh is None:
        return jax.tree_util.tree_map(jax.numpy.asarray, batch)
    shardings = batch_shardings(batch, mesh)
    return jax.tree_util.tree_map(
        lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda index: np.asarray(x)[index]),
        batch, shardings,
    )
