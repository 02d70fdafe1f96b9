"""Tasks as deterministic functions of (seed, split, index), and a resumable iterator.

A task's ``batch(rng, batch_size)`` draws one batch from a numpy ``Generator``.
:class:`TaskIterator` seeds that generator from ``(seed, split, position)``, so
batch ``n`` is the same whatever happened before it: saving ``position`` in a
checkpoint makes a resumed run see exactly the batches an uninterrupted run
would have seen.

Language-model-style batches are dicts of numpy arrays:

- ``inputs`` int32 ``[batch, length]``: token ids;
- ``targets`` int32 ``[batch, length]``: the token to predict at each position;
- ``loss_mask`` float32 ``[batch, length]``: 1 where the loss and accuracy count.

Classification batches (``kind == "classification"``) have ``inputs``,
``label`` int32 ``[batch]`` and ``lengths`` int32 ``[batch]``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict

import numpy as np

SPLITS = {"train": 0, "eval": 1, "test": 2}


class Task:
    """Base class: subclasses set ``vocab_size``, ``seq_len``, ``kind`` and define ``batch``."""

    kind = "lm"
    vocab_size: int
    seq_len: int
    num_classes: int = 0

    def batch(self, rng: np.random.Generator, batch_size: int) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    @staticmethod
    def check_positive(**values):
        for name, value in values.items():
            if int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")


@dataclasses.dataclass
class TaskIterator:
    """Yields ``task``'s batches for ``split``; ``position`` is the index of the next batch."""

    task: Task
    batch_size: int
    seed: int
    split: str = "train"
    position: int = 0

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose one of {sorted(SPLITS)}")

    def batch_at(self, position: int) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], position])
        return self.task.batch(rng, self.batch_size)

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        batch = self.batch_at(self.position)
        self.position += 1
        return batch
