"""Multi-process runs (several hosts, or several processes on one): ``jax.distributed`` from the config or the environment.

:func:`initialize` runs first in :func:`sequax.train.train_and_evaluate`,
before anything touches a device. It starts ``jax.distributed`` when

- the config says where the coordinator is (``config.distributed``:
  ``coordinator_address`` ``"host:port"`` of process 0, ``num_processes``,
  ``process_id``; e.g. two processes on one machine), or
- the environment is a multi-process job JAX detects by itself: a SLURM step
  with more than one task (``SLURM_NTASKS``/``SLURM_STEP_NUM_TASKS``), a Cloud
  TPU slice with more than one host (``TPU_WORKER_HOSTNAMES``), an Open MPI
  job (``OMPI_COMM_WORLD_SIZE``); ``config.distributed.cluster`` then names
  JAX's detection method (``"auto"`` lets it look);

and otherwise does nothing (one process sees its local devices). Every
process then runs the same program: the mesh spans all processes' devices
(:func:`sequax.parallel.mesh.make_mesh`), each places only its own part of a
batch (:func:`sequax.parallel.mesh.shard_batch`), all of them write their
shards of a checkpoint and read them back (orbax), and only process 0 writes
the metrics, the plot, ``config.json`` and the checkpoint manifests
(:func:`is_primary`).

On CPU, processes exchange collectives through gloo. Launch commands for a
SLURM GPU job and a Cloud TPU slice are in the README ("Scaling out").
"""

from __future__ import annotations

import os
from typing import Optional

import jax

CLUSTERS = ("auto", "none")
_ENVIRONMENTS = (
    ("SLURM_STEP_NUM_TASKS", "slurm"), ("SLURM_NTASKS", "slurm"), ("OMPI_COMM_WORLD_SIZE", "ompi"),
)


def cluster_from_environment(environ=None) -> Optional[str]:
    """The multi-process job this process belongs to (``"slurm"``, ``"tpu"``, ``"ompi"``), or ``None``."""
    environ = os.environ if environ is None else environ
    for variable, name in _ENVIRONMENTS:
        if int(environ.get(variable, "1") or 1) > 1:
            return name
    hosts = environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "tpu"
    return None


def _options(config):
    section = config.get("distributed") if hasattr(config, "get") else None
    return {} if section is None else dict(section)


def initialize(config, environ=None) -> bool:
    """Start ``jax.distributed`` if the config or the environment asks for it; ``True`` if this run is
    multi-process. Call before any JAX computation; a second call (or an already initialised
    runtime) changes nothing. ``ValueError`` for an incomplete ``config.distributed``."""
    if jax.distributed.is_initialized():
        return True
    options = _options(config)
    address = options.get("coordinator_address") or ""
    num, pid = int(options.get("num_processes") or 0), int(options.get("process_id", -1))
    cluster = options.get("cluster") or "auto"
    if cluster not in CLUSTERS:
        raise ValueError(f"distributed.cluster must be one of {CLUSTERS}; got {cluster!r}")
    if address:
        if num < 1 or not 0 <= pid < num:
            raise ValueError(
                f"distributed.coordinator_address={address!r} needs distributed.num_processes >= 1 and "
                f"0 <= distributed.process_id < num_processes; got {num} and {pid}"
            )
        jax.distributed.initialize(address, num_processes=num, process_id=pid)
        return True
    if cluster == "none":
        return False
    detected = cluster_from_environment(environ)
    if detected is None:
        return False
    jax.distributed.initialize(cluster_detection_method=None if detected == "tpu" else detected)
    return True


def is_primary() -> bool:
    """Whether this process writes what exists once per run (metrics, plots, manifests): process 0."""
    return jax.process_index() == 0


class QuietMetrics:
    """What a non-primary process writes instead of :class:`~sequax.train.metrics.MetricsWriter`: nothing."""

    def __init__(self):
        self.history = {}

    def write(self, step, scalars):
        for key, value in scalars.items():
            self.history.setdefault(key, []).append([int(step), float(value)])

    def flush(self):
        pass

    def close(self):
        pass

    def save_summary(self, summary):
        return ""

    def save_plot(self):
        return ""


class QuietProgress:
    """What a non-primary process shows instead of :class:`~sequax.train.progress.Progress`: nothing."""

    def advance(self, step):
        pass

    def log(self, step, metrics, tokens_per_second):
        pass

    def write(self, line):
        pass

    def close(self):
        pass


__all__ = ["QuietMetrics", "QuietProgress", "cluster_from_environment", "initialize", "is_primary"]
