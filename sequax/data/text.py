"""Byte-level language modelling on local text: any file or folder, offline by default.

``byte_text`` reads ``path`` (a file, or every text file below a folder that
matches ``pattern``; binary files are skipped). With no ``path`` it reads the
Python standard library's own ``.py`` sources (the folder of ``os.py``), so a
run needs no download. Bytes are the tokens (``vocab_size`` 256).

Documents are files. Sorted by path, every ``validation_every``-th one is
held out for validation and the one before it for test (a single file is cut
90/5/5 by bytes instead). Each split is one stream of its documents' bytes.

- **Training** (an endless generator) reads windows of ``seq_len + 1`` bytes at
  random places of the training stream. With ``packing`` a window holds
  pieces of several documents, marked by ``segment_ids`` ``[batch, length]``
  (nothing attends across them) and no loss on a byte whose next byte starts
  another document; without it a window lies inside one document (short ones
  0-padded, no loss there).
- **Validation / test** (finite) are the consecutive windows of their streams,
  so ``num_batches="full"`` scores every byte once: bits per byte is the
  evaluation loss / ln 2.
- ``curriculum="dd"``: Dataset Decomposition (Pouransari et al. 2024). Each
  training document is cut into pieces whose lengths are powers of two (its
  length's binary digits, pieces of ``seq_len`` first), from
  ``min_bucket_len`` to ``seq_len``; a batch holds pieces of one length
  ``2^k``, ``batch_size * seq_len / 2^k`` of them (same tokens per step), so no
  sequence mixes documents. Bucket ``k`` is drawn with weight
  ``tokens_k * 2^(-(1 - p) * curriculum_strength * (k - k_min))`` at training
  progress ``p = step / curriculum_steps``: short sequences first, the natural
  mixture by the end.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from sequax.data.base import Task, check_split
from sequax.data.registry import register_task

CURRICULA = ("none", "dd")


def stdlib_folder() -> str:
    """The folder of the running Python's standard library sources."""
    return os.path.dirname(os.__file__)


def _is_text(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\0" not in f.read(1024)
    except OSError:
        return False


def list_documents(path: Optional[str], pattern: Optional[str]) -> List[str]:
    """The files a ``byte_text`` task reads (sorted); ``ValueError`` when there are none."""
    if path is None:
        folder = stdlib_folder()
        return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                      if fnmatch.fnmatch(f, pattern or "*.py") and os.path.isfile(os.path.join(folder, f)))
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise ValueError(f"data.task_kwargs.path: {path} is neither a file nor a folder")
    files = []
    for base, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(base, n) for n in names
                  if not n.startswith(".") and fnmatch.fnmatch(n, pattern or "*")]
    files = sorted(f for f in files if _is_text(f))
    if not files:
        raise ValueError(f"data.task_kwargs.path: no text files matching {pattern or '*'!r} under {path}")
    return files


def _stream(documents: List[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    data = np.frombuffer(b"".join(documents), np.uint8)
    doc_ids = np.repeat(np.arange(len(documents), dtype=np.int32), [len(d) for d in documents])
    return data, doc_ids


def decompose(length: int, min_len: int, max_len: int) -> List[int]:
    """Piece lengths (powers of two in ``[min_len, max_len]``) of a document of ``length`` bytes, in order."""
    pieces = [max_len] * (length // max_len)
    rest = length - max_len * len(pieces)
    size = max_len // 2
    while size >= min_len:
        if rest >= size:
            pieces.append(size)
            rest -= size
        size //= 2
    return pieces


@register_task("byte_text")
class ByteText(Task):
    """Bytes of local text; batches as :mod:`sequax.data.base` (LM), plus ``segment_ids`` when packing."""

    vocab_size = 256

    def __init__(self, path: Optional[str] = None, pattern: Optional[str] = None, seq_len: int = 512,
                 validation_every: int = 20, max_bytes: int = 0, packing: bool = True, curriculum: str = "none",
                 min_bucket_len: int = 64, curriculum_steps: int = 0, curriculum_strength: float = 1.0):
        self.check_positive(seq_len=seq_len, min_bucket_len=min_bucket_len)
        if validation_every < 3:
            raise ValueError(f"validation_every must be at least 3 (one validation and one test document "
                             f"in each group), got {validation_every}")
        if curriculum not in CURRICULA:
            raise ValueError(f"curriculum must be one of {CURRICULA}, got {curriculum!r}")
        if curriculum == "dd":
            for name, value in (("seq_len", seq_len), ("min_bucket_len", min_bucket_len)):
                if value & (value - 1):
                    raise ValueError(f"curriculum='dd' needs {name} to be a power of two, got {value}")
            if min_bucket_len > seq_len:
                raise ValueError(f"min_bucket_len ({min_bucket_len}) must not exceed seq_len ({seq_len})")
        self.seq_len, self.packing, self.curriculum = int(seq_len), bool(packing), curriculum
        self.min_bucket_len, self.curriculum_steps = int(min_bucket_len), int(curriculum_steps)
        self.curriculum_strength = float(curriculum_strength)
        self.files = list_documents(path, pattern)
        documents, total = [], 0
        for file in self.files:
            with open(file, "rb") as f:
                text = f.read()
            if max_bytes:
                text = text[:max(max_bytes - total, 0)]
            if text:
                documents.append(text)
                total += len(text)
            if max_bytes and total >= max_bytes:
                break
        self.streams = {split: _stream(docs) for split, docs in self._split(documents, validation_every).items()}
        for split, (data, _) in self.streams.items():
            if len(data) < self.seq_len + 1:
                raise ValueError(
                    f"the {split} split has {len(data)} bytes, fewer than seq_len + 1 ({self.seq_len + 1}); "
                    "point data.task_kwargs.path at more text or lower seq_len")
        if curriculum == "dd":
            self.buckets = self._buckets()

    @staticmethod
    def _split(documents: List[bytes], every: int) -> Dict[str, List[bytes]]:
        if len(documents) < 3:
            data = b"".join(documents)
            a, b = int(len(data) * 0.9), int(len(data) * 0.95)
            return {"train": [data[:a]], "validation": [data[a:b]], "test": [data[b:]]}
        splits: Dict[str, List[bytes]] = {"train": [], "validation": [], "test": []}
        for i, doc in enumerate(documents):
            slot = i % every
            splits["validation" if slot == every - 1 else "test" if slot == every - 2 else "train"].append(doc)
        for split in ("validation", "test"):
            if not splits[split]:  # fewer documents than one group: take the last training ones
                splits[split].append(splits["train"].pop())
        return splits

    # ------------------------------------------------------------------ finite evaluation splits

    def num_examples(self, split):
        check_split(split)
        if split == "train":
            return None
        return (len(self.streams[split][0]) - 1) // self.seq_len

    def _windows(self, split: str, starts: np.ndarray, within_document: bool = False):
        data, doc_ids = self.streams[split]
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None]
        valid = idx < len(data)
        idx = np.minimum(idx, len(data) - 1)
        tokens, docs = data[idx].astype(np.int32), doc_ids[idx]
        same = (docs[:, 1:] == docs[:, :-1]) & valid[:, 1:]
        if within_document:  # bytes past the window's own document are padding
            own = docs == docs[:, :1]
            tokens = np.where(own & valid, tokens, 0)
            same &= own[:, 1:]
        batch = {"inputs": tokens[:, :-1], "targets": np.where(same, tokens[:, 1:], 0),
                 "loss_mask": same.astype(np.float32)}
        if self.packing:
            batch["segment_ids"] = (docs[:, :-1] - docs[:, :1] + 1).astype(np.int32)
        return batch

    def examples(self, split, indices):
        check_split(split)
        if split == "train":
            raise NotImplementedError("the training split is an endless generator")
        return self._windows(split, np.asarray(indices, np.int64) * self.seq_len)

    # ------------------------------------------------------------------ the training stream

    def batch(self, rng, batch_size):
        return self.batch_at_position(rng, batch_size, self.curriculum_steps)

    def batch_at_position(self, rng, batch_size, position):
        if self.curriculum == "dd":
            return self._bucket_batch(rng, batch_size, position)
        data, doc_ids = self.streams["train"]
        if self.packing:
            starts = rng.integers(0, len(data) - self.seq_len, batch_size)
            return self._windows("train", starts)
        # One document per window: pick a byte uniformly, start the window at its document's
        # start or later, so long documents are read everywhere and short ones whole.
        picks = rng.integers(0, len(data) - 1, batch_size)
        doc_start = np.searchsorted(doc_ids, doc_ids[picks], side="left")
        doc_end = np.searchsorted(doc_ids, doc_ids[picks], side="right")
        latest = np.maximum(doc_end - (self.seq_len + 1), doc_start)
        starts = doc_start + (rng.random(batch_size) * (latest - doc_start + 1)).astype(np.int64)
        return self._windows("train", starts, within_document=True)

    def _buckets(self) -> Dict[int, np.ndarray]:
        """Piece length -> start offsets ``[n]`` in the training stream."""
        _, doc_ids = self.streams["train"]
        bounds = np.flatnonzero(np.diff(doc_ids)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(doc_ids)]])
        buckets: Dict[int, List[int]] = {}
        for start, end in zip(starts, ends):
            offset = int(start)
            for piece in decompose(int(end - start), self.min_bucket_len, self.seq_len):
                buckets.setdefault(piece, []).append(offset)
                offset += piece
        if not buckets:
            raise ValueError(f"no training document has min_bucket_len={self.min_bucket_len} bytes; lower it")
        return {length: np.asarray(offsets, np.int64) for length, offsets in sorted(buckets.items())}

    def bucket_weights(self, position: int) -> Dict[int, float]:
        """Sampling probability of each piece length at step ``position`` (sums to 1)."""
        progress = 1.0 if self.curriculum_steps <= 0 else min(position / self.curriculum_steps, 1.0)
        k_min = np.log2(min(self.buckets))
        weights = {length: len(offsets) * length
                   * 2.0 ** (-(1 - progress) * self.curriculum_strength * (np.log2(length) - k_min))
                   for length, offsets in self.buckets.items()}
        total = sum(weights.values())
        return {length: w / total for length, w in weights.items()}

    def _bucket_batch(self, rng, batch_size, position):
        weights = self.bucket_weights(position)
        lengths = list(weights)
        length = lengths[rng.choice(len(lengths), p=list(weights.values()))]
        rows = batch_size * self.seq_len // length
        offsets = self.buckets[length][rng.integers(0, len(self.buckets[length]), rows)]
        data, _ = self.streams["train"]
        tokens = data[offsets[:, None] + np.arange(length)[None]].astype(np.int32)
        targets = np.zeros_like(tokens)
        targets[:, :-1] = tokens[:, 1:]
        loss_mask = np.zeros(tokens.shape, np.float32)
        loss_mask[:, :-1] = 1.0
        return {"inputs": tokens, "targets": targets, "loss_mask": loss_mask}
