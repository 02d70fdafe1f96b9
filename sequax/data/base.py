"""Tasks: batches for a named split, from endless seeded generators or finite datasets.

A split is ``train``, ``validation`` or ``test``. For each split a task is one of:

- a **generator** (endless): ``num_examples(split)`` is ``None`` and
  ``batch(rng, batch_size)`` draws a batch from a numpy ``Generator``;
- a **dataset** (finite): ``num_examples(split)`` is ``N`` and
  ``examples(split, indices)`` returns the examples at ``indices`` ``[n]``
  (each in ``[0, N)``) as a batch of ``n``.

Every batch is a pure function of ``(seed, split, batch index)``:

- :class:`TaskIterator` is the endless, resumable stream a training run reads.
  On a generator split, batch ``n`` is drawn from a ``Generator`` seeded by
  ``(seed, split, n)``; on a dataset split it holds examples ``n * B ... n * B + B - 1``
  of an endless sequence of epochs, each a permutation of the split seeded by
  ``(seed, split, epoch)``. Saving ``position`` in a checkpoint makes a resumed
  run see exactly the batches an uninterrupted one would have seen.
- :class:`SplitBatches` is what one evaluation reads: a fixed number of batches
  of a generator split, or one pass over a dataset split in index order
  (``num_batches="full"``), its last batch padded to ``batch_size``.

Language-model-style batches are dicts of numpy arrays:

- ``inputs`` int32 ``[batch, length]``: token ids;
- ``targets`` int32 ``[batch, length]``: the token to predict at each position;
- ``loss_mask`` float32 ``[batch, length]``: 1 where the loss and accuracy count.

Classification batches (``kind == "classification"``) have ``inputs``,
``label`` int32 ``[batch]`` and ``lengths`` int32 ``[batch]``. Batches of a
dataset split read by :class:`SplitBatches` also carry ``example_mask``
float32 ``[batch]``: 1 for an example of the split, 0 for a padding row.

Finite datasets plug in by subclassing :class:`Task` (``num_examples`` and
``examples``; :class:`ArrayDataset` holds them in memory), and any generator
task gets fixed, finite splits from :class:`FixedSizeSplits`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Mapping, Optional, Union

import numpy as np

# Split name -> the word that seeds its random streams (validation keeps the
# stream the trainer's single evaluation always used).
SPLITS = {"train": 0, "validation": 1, "test": 2}
_SHUFFLE, _FIXED = 1, 2  # extra seed words: epoch permutations, fixed examples


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


class Task:
    """Base class: subclasses set ``vocab_size``, ``seq_len``, ``kind`` and, per split,
    either ``batch`` (generator) or ``num_examples`` + ``examples`` (dataset)."""

    kind = "lm"
    vocab_size: int
    seq_len: int
    num_classes: int = 0

    def num_examples(self, split: str) -> Optional[int]:
        """Examples in ``split`` if it is a finite dataset, ``None`` for an endless generator."""
        check_split(split)
        return None

    def batch(self, rng: np.random.Generator, batch_size: int) -> Dict[str, np.ndarray]:
        """A batch of ``batch_size`` examples drawn with ``rng`` (generator splits)."""
        raise NotImplementedError(f"{type(self).__name__} has no generator splits")

    def batch_at_position(self, rng: np.random.Generator, batch_size: int, position: int) -> Dict[str, np.ndarray]:
        """Batch ``position`` of the training stream: ``batch(rng, batch_size)`` unless a task overrides
        it to depend on the position (a curriculum: ``sequax.data.text``, induction heads). Other
        generator splits always read ``batch``, so evaluations see the task itself."""
        return self.batch(rng, batch_size)

    def examples(self, split: str, indices: np.ndarray) -> Dict[str, np.ndarray]:
        """The examples at ``indices`` ``[n]`` of ``split`` as a batch of ``n`` (dataset splits)."""
        raise NotImplementedError(f"{type(self).__name__} has no dataset splits")

    @staticmethod
    def check_positive(**values):
        for name, value in values.items():
            if int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")


def _concat(rows):
    return {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}


class FixedSizeSplits(Task):
    """``task`` (a generator) with some splits turned into fixed datasets.

    ``sizes`` maps a split to its number of examples ``N``; other splits stay
    endless generators. Example ``i`` of a fixed split is drawn alone, with a
    ``Generator`` seeded by ``(seed, split, i)``, so the set is the same
    whatever batch size reads it.
    """

    def __init__(self, task: Task, sizes: Mapping[str, int], seed: int):
        for split, size in sizes.items():
            check_split(split)
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
                raise ValueError(f"the size of split {split!r} must be a positive int, got {size!r}")
        self.task, self.sizes, self.seed = task, {s: int(n) for s, n in sizes.items()}, int(seed)
        self.kind, self.vocab_size, self.seq_len = task.kind, task.vocab_size, task.seq_len
        self.num_classes = task.num_classes

    def num_examples(self, split):
        check_split(split)
        return self.sizes.get(split)

    def batch(self, rng, batch_size):
        return self.task.batch(rng, batch_size)

    def batch_at_position(self, rng, batch_size, position):
        return self.task.batch_at_position(rng, batch_size, position)

    def examples(self, split, indices):
        rows = [
            self.task.batch(np.random.default_rng([self.seed, SPLITS[split], _FIXED, int(i)]), 1)
            for i in indices
        ]
        return _concat(rows)


class ArrayDataset(Task):
    """A finite dataset held in memory: ``splits[split][key]`` arrays ``[N, ...]``.

    Every array of a split has the same leading size ``N``; the keys are those
    of a batch (see the module docstring). Splits not given do not exist.
    """

    def __init__(self, splits: Mapping[str, Mapping[str, np.ndarray]], *, vocab_size: int,
                 seq_len: int, kind: str = "lm", num_classes: int = 0):
        self.splits = {}
        for split, arrays in splits.items():
            check_split(split)
            arrays = {key: np.asarray(value) for key, value in arrays.items()}
            sizes = {key: len(value) for key, value in arrays.items()}
            if not arrays or len(set(sizes.values())) != 1 or 0 in sizes.values():
                raise ValueError(
                    f"split {split!r} needs arrays with one common, positive leading size; got {sizes}"
                )
            self.splits[split] = arrays
        self.vocab_size, self.seq_len, self.kind, self.num_classes = vocab_size, seq_len, kind, num_classes

    def num_examples(self, split):
        check_split(split)
        if split not in self.splits:
            raise ValueError(f"this dataset has no {split!r} split; it has: {', '.join(self.splits)}")
        return len(next(iter(self.splits[split].values())))

    def examples(self, split, indices):
        self.num_examples(split)
        return {key: value[indices] for key, value in self.splits[split].items()}


@functools.lru_cache(maxsize=8)
def _epoch_order(size: int, seed: int, split: str, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, SPLITS[split], _SHUFFLE, epoch]).permutation(size)


def stream_indices(size: int, seed: int, split: str, start: int, count: int) -> np.ndarray:
    """Dataset indices ``[count]`` at places ``start ...`` of the endless shuffled epoch stream."""
    places = np.arange(start, start + count)
    epochs, slots = np.divmod(places, size)
    out = np.empty(count, np.int64)
    for epoch in np.unique(epochs):
        where = epochs == epoch
        out[where] = _epoch_order(size, seed, split, int(epoch))[slots[where]]
    return out


@dataclasses.dataclass
class TaskIterator:
    """Yields ``task``'s batches for ``split`` without end; ``position`` is the index of the next batch."""

    task: Task
    batch_size: int
    seed: int
    split: str = "train"
    position: int = 0

    def __post_init__(self):
        check_split(self.split)

    def batch_at(self, position: int) -> Dict[str, np.ndarray]:
        size = self.task.num_examples(self.split)
        if size is None:
            rng = np.random.default_rng([self.seed, SPLITS[self.split], position])
            if self.split != "train":
                return self.task.batch(rng, self.batch_size)
            return self.task.batch_at_position(rng, self.batch_size, position)
        indices = stream_indices(size, self.seed, self.split, position * self.batch_size, self.batch_size)
        return self.task.examples(self.split, indices)

    def __iter__(self):
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        batch = self.batch_at(self.position)
        self.position += 1
        return batch


@dataclasses.dataclass
class SplitBatches:
    """The batches one evaluation reads from ``split``: ``len()`` of them, in order.

    ``num_batches`` is a number of batches, or ``"full"``: one pass over a
    dataset split, ``ceil(N / batch_size)`` batches in index order, the last
    one padded with repeats of the split's last example (``example_mask`` 0
    there) so every example counts exactly once. A generator split has no end,
    so it needs a number; its batch ``i`` is ``TaskIterator(...).batch_at(i)``.
    """

    task: Task
    split: str
    batch_size: int
    seed: int
    num_batches: Union[int, str] = "full"

    def __post_init__(self):
        check_split(self.split)
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        self.size = self.task.num_examples(self.split)
        whole = None if self.size is None else -(-self.size // self.batch_size)
        if self.num_batches == "full":
            if whole is None:
                raise ValueError(
                    f"num_batches='full' needs a finite split, but split {self.split!r} is an endless "
                    "generator; give a number of batches (or a size in data.split_sizes)"
                )
            self.length = whole
            return
        if isinstance(self.num_batches, bool) or not isinstance(self.num_batches, (int, np.integer)) \
                or self.num_batches <= 0:
            raise ValueError(f"num_batches must be a positive int or 'full', got {self.num_batches!r}")
        if whole is not None and self.num_batches > whole:
            raise ValueError(
                f"num_batches={self.num_batches}, but split {self.split!r} has {self.size} examples: "
                f"{whole} batches of {self.batch_size}; pass 'full' or at most {whole}"
            )
        self.length = int(self.num_batches)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if self.size is None:
            return TaskIterator(self.task, self.batch_size, self.seed, self.split).batch_at(index)
        start = index * self.batch_size
        real = min(self.batch_size, self.size - start)
        indices = np.minimum(np.arange(start, start + self.batch_size), self.size - 1)
        batch = dict(self.task.examples(self.split, indices))
        batch["example_mask"] = (np.arange(self.batch_size) < real).astype(np.float32)
        return batch

    def __iter__(self):
        return (self[i] for i in range(self.length))
