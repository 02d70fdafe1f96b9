"""Tasks looked up by name; the splits they serve (endless generators or finite datasets);
the resumable training stream and the batches of one evaluation (see :mod:`sequax.data.base`)."""

import inspect

from sequax.data import synthetic  # noqa: F401  (registers the tasks)
from sequax.data import algorithmic, listops, lra, pathfinder, text  # noqa: F401  (register theirs)
from sequax.data.base import (
    SPLITS, ArrayDataset, FixedSizeSplits, SplitBatches, Task, TaskIterator, check_split,
)
from sequax.data.registry import TASKS, register_task


def available_tasks():
    """Sorted names of all registered tasks."""
    return TASKS.available()


def get_task(name):
    """The task class registered under ``name``."""
    return TASKS.get(name)


def make_task(name, **kwargs) -> Task:
    """Instantiate task ``name``; unknown options raise ``ValueError`` listing the valid ones."""
    cls = get_task(name)
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = [p for p in params if p != "self"]
        raise ValueError(
            f"task {name!r} has no option(s) {', '.join(unknown)}; its options are: {', '.join(valid)}"
        )
    return cls(**kwargs)


__all__ = [
    "SPLITS", "ArrayDataset", "FixedSizeSplits", "SplitBatches", "Task", "TaskIterator", "available_tasks",
    "check_split", "get_task", "make_task", "register_task",
]
