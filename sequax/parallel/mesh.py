"""The device mesh from ``config.mesh`` and batch placement.

Mesh axes are ``data``, ``fsdp``, ``tensor`` and ``sequence``. Today the
trainer uses the ``data`` axis (the batch is split across it, parameters are
replicated); the other axes are reserved for FSDP, tensor and sequence
parallelism and must stay 1 until those land.
"""

from __future__ import annotations

from typing import Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor", "sequence")


def make_mesh(mesh_config) -> Optional[Mesh]:
    """A :class:`Mesh` over ``prod(sizes)`` devices, or ``None`` when every size is 1."""
    sizes = [int(mesh_config[a]) for a in AXES]
    if any(s <= 0 for s in sizes):
        raise ValueError(f"mesh sizes must be positive, got {dict(zip(AXES, sizes))}")
    for axis, size in zip(AXES[1:], sizes[1:]):
        if size != 1:
            raise ValueError(
                f"mesh.{axis}={size}: only data parallelism is available so far; "
                f"set mesh.{axis}=1 and use mesh.data"
            )
    total = int(np.prod(sizes))
    if total == 1:
        return None
    devices = jax.devices()
    if total > len(devices):
        raise ValueError(
            f"the mesh needs {total} devices but {len(devices)} are visible; lower the mesh sizes"
        )
    return Mesh(np.array(devices[:total]).reshape(sizes), AXES)


def shard_batch(batch, mesh: Optional[Mesh]):
    """Put a batch of numpy arrays on device, split along ``data`` when there is a mesh."""
    if mesh is None:
        return jax.tree_util.tree_map(jax.numpy.asarray, batch)
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), batch)
