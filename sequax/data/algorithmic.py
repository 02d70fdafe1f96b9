"""Algorithmic tasks for length generalisation: copy, reverse, addition, sort (with a hint task).

Decoder-only formats (Kazemnejad et al. 2023, "The Impact of Positional
Encoding on Length Generalization in Transformers"): the instance, a
separator, then the answer and an end token; the loss counts the answer and
the end token only. An instance has ``n`` items, ``n`` drawn uniformly from
``[min_len, max_len]``; evaluations at other lengths set both
(``{"min_len": 40, "max_len": 40}``). Rows are 0-padded to ``seq_len``
(default: the longest example ``max_len`` allows).

- ``copy``: ``x_1 .. x_n SEP x_1 .. x_n END``
- ``reverse``: ``x_1 .. x_n SEP x_n .. x_1 END``
- ``addition``: ``a_1 .. a_n PLUS b_1 .. b_n SEP c_1 .. c_{n+1} END``: ``n``-digit
  numbers, least significant digit first (so is the sum, ``n + 1`` digits)
- ``sort``: ``x_1 .. x_n SEP sorted(x) END`` over ``num_values`` values (``distinct``:
  without repeats). With ``hint_fraction > 0`` that fraction of examples is the
  auxiliary successor task of task hinting (Awasthi & Gupta 2023):
  ``x_1 .. x_n HINT x_1 s_1 x_2 s_2 .. x_n s_n`` where ``s_i`` is the element
  after ``x_i`` in sorted order (``END`` after the largest); the loss counts the
  ``s_i``. Evaluations set ``hint_fraction=0`` to score sorting alone.

Tokens: 0 padding, 1 ``SEP``, 2 ``END``, 3 ``PLUS``, 4 ``HINT``, values from 5.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from sequax.data.base import Task
from sequax.data.registry import register_task

PAD, SEP, END, PLUS, HINT = 0, 1, 2, 3, 4
VALUE0 = 5


class Algorithmic(Task):
    """Shared length sampling, padding and batching; subclasses build one example's tokens."""

    num_values: int

    def _setup(self, min_len: int, max_len: int, num_values: int, seq_len: Optional[int]):
        self.check_positive(min_len=min_len, max_len=max_len, num_values=num_values)
        if min_len > max_len:
            raise ValueError(f"min_len ({min_len}) must not exceed max_len ({max_len})")
        self.min_len, self.max_len, self.num_values = int(min_len), int(max_len), int(num_values)
        self.vocab_size = VALUE0 + self.num_values
        longest = self.longest(self.max_len)
        if seq_len is None:
            seq_len = longest
        if seq_len < longest:
            raise ValueError(f"seq_len ({seq_len}) is shorter than the longest example ({longest} tokens at "
                             f"max_len={self.max_len}); raise seq_len or leave it unset")
        self.seq_len = int(seq_len)

    def longest(self, n: int) -> int:
        """Tokens in the longest example with ``n`` items."""
        raise NotImplementedError

    def example(self, rng: np.random.Generator, n: int) -> Tuple[List[int], List[int]]:
        """One example with ``n`` items: its tokens and the positions whose next token is scored."""
        raise NotImplementedError

    def batch(self, rng, batch_size):
        inputs = np.zeros((batch_size, self.seq_len), np.int32)
        targets = np.zeros_like(inputs)
        loss_mask = np.zeros(inputs.shape, np.float32)
        for i in range(batch_size):
            tokens, scored = self.example(rng, int(rng.integers(self.min_len, self.max_len + 1)))
            tokens = np.asarray(tokens, np.int32)
            inputs[i, :len(tokens) - 1] = tokens[:-1]
            targets[i, :len(tokens) - 1] = tokens[1:]
            loss_mask[i, np.asarray(scored) - 1] = 1.0  # input position p predicts token p + 1
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}


def _answer(prefix: List[int], answer: List[int]) -> Tuple[List[int], List[int]]:
    tokens = prefix + answer + [END]
    return tokens, list(range(len(prefix), len(tokens)))


@register_task("copy")
class Copy(Algorithmic):
    """``x SEP x END``; see the module docstring. Batches as :mod:`sequax.data.base` (LM)."""

    def __init__(self, min_len: int = 1, max_len: int = 20, num_values: int = 10, seq_len: Optional[int] = None):
        self._setup(min_len, max_len, num_values, seq_len)

    def longest(self, n):
        return 2 * n + 2

    def transform(self, items: List[int]) -> List[int]:
        return items

    def example(self, rng, n):
        items = [VALUE0 + int(v) for v in rng.integers(0, self.num_values, n)]
        return _answer(items + [SEP], self.transform(items))


@register_task("reverse")
class Reverse(Copy):
    """``x SEP reversed(x) END``."""

    def transform(self, items):
        return items[::-1]


@register_task("addition")
class Addition(Algorithmic):
    """``a PLUS b SEP (a + b) END``, ``n``-digit numbers least significant digit first."""

    def __init__(self, min_len: int = 1, max_len: int = 20, seq_len: Optional[int] = None):
        self._setup(min_len, max_len, 10, seq_len)

    def longest(self, n):
        return 3 * n + 4

    def example(self, rng, n):
        a, b = rng.integers(0, 10, n), rng.integers(0, 10, n)
        total, carry = [], 0
        for x, y in zip(a, b):
            carry, digit = divmod(int(x) + int(y) + carry, 10)
            total.append(digit)
        total.append(carry)
        prefix = [VALUE0 + int(d) for d in a] + [PLUS] + [VALUE0 + int(d) for d in b] + [SEP]
        return _answer(prefix, [VALUE0 + d for d in total])


@register_task("sort")
class Sort(Algorithmic):
    """``x SEP sorted(x) END``; ``hint_fraction`` of examples are the successor hint task instead."""

    def __init__(self, min_len: int = 1, max_len: int = 20, num_values: int = 128, distinct: bool = True,
                 hint_fraction: float = 0.0, seq_len: Optional[int] = None):
        if not 0.0 <= hint_fraction <= 1.0:
            raise ValueError(f"hint_fraction must be in [0, 1], got {hint_fraction}")
        self.hint_fraction, self.distinct = float(hint_fraction), bool(distinct)
        self._setup(min_len, max_len, num_values, seq_len)
        if self.distinct and self.max_len > self.num_values:
            raise ValueError(f"distinct sorting of max_len={self.max_len} items needs num_values >= max_len, "
                             f"got {self.num_values}; raise num_values or set distinct=False")

    def longest(self, n):
        return max(2 * n + 2, 3 * n + 1) if self.hint_fraction > 0 else 2 * n + 2

    def example(self, rng, n):
        values = rng.choice(self.num_values, n, replace=False) if self.distinct \
            else rng.integers(0, self.num_values, n)
        items = [VALUE0 + int(v) for v in values]
        if self.hint_fraction > 0 and rng.random() < self.hint_fraction:
            return successor_example(items)
        return _answer(items + [SEP], sorted(items))


def successor_example(items: List[int]) -> Tuple[List[int], List[int]]:
    """``items HINT x_1 s_1 .. x_n s_n`` and the positions of the ``s_i``.

    ``s_i`` follows ``x_i`` in sorted order (stable for repeats: the next copy
    of an equal value); ``END`` follows the last.
    """
    order = sorted(range(len(items)), key=lambda i: (items[i], i))
    rank = {index: r for r, index in enumerate(order)}
    tokens, scored = items + [HINT], []
    for i, item in enumerate(items):
        r = rank[i]
        tokens += [item, items[order[r + 1]] if r + 1 < len(items) else END]
        scored.append(len(tokens) - 1)
    return tokens, scored


@register_task("passkey")
class Passkey(Task):
    """Passkey retrieval (Mohtashami & Jaggi 2023) in token form.

    A haystack of ``seq_len`` tokens hides ``KEY d_1 .. d_k`` (``num_digits``
    digits) at a uniformly random depth; the sequence ends ``QUERY d_1 .. d_k``
    and the loss counts the digits after ``QUERY``. The haystack is a fixed
    ``pattern_length``-token phrase repeated (``filler="repeat"``, like the
    paper's repeated sentences) or uniform random filler tokens
    (``filler="random"``). Tokens: 0 padding, 1 ``KEY``, 2 ``QUERY``, 3-12 the
    digits, filler from 13 up to ``vocab_size``.
    """

    KEY, QUERY, DIGIT0, FILLER0 = 1, 2, 3, 13

    def __init__(self, seq_len: int = 1024, num_digits: int = 5, vocab_size: int = 64, filler: str = "repeat",
                 pattern_length: int = 16):
        self.check_positive(seq_len=seq_len, num_digits=num_digits, pattern_length=pattern_length)
        if filler not in ("repeat", "random"):
            raise ValueError(f"filler must be 'repeat' or 'random', got {filler!r}")
        if vocab_size <= self.FILLER0:
            raise ValueError(f"vocab_size must exceed {self.FILLER0} (the filler tokens start there), got {vocab_size}")
        if seq_len < 2 * num_digits + 4:
            raise ValueError(f"seq_len ({seq_len}) must be at least 2 * num_digits + 4 ({2 * num_digits + 4})")
        self.seq_len, self.vocab_size, self.num_digits = int(seq_len), int(vocab_size), int(num_digits)
        self.filler, self.pattern_length = filler, int(pattern_length)

    def batch(self, rng, batch_size):
        length, k = self.seq_len, self.num_digits
        fillers = self.vocab_size - self.FILLER0
        if self.filler == "repeat":
            pattern = self.FILLER0 + np.arange(self.pattern_length) % fillers
            row = np.resize(pattern, length)
            tokens = np.tile(row, (batch_size, 1)).astype(np.int32)
        else:
            tokens = rng.integers(self.FILLER0, self.vocab_size, (batch_size, length)).astype(np.int32)
        digits = rng.integers(0, 10, (batch_size, k)) + self.DIGIT0
        haystack_end = length - (k + 1)  # the query and its digits fill the end
        depth = rng.integers(0, haystack_end - (k + 1) + 1, batch_size)
        rows = np.arange(batch_size)[:, None]
        tokens[rows[:, 0], depth] = self.KEY
        tokens[rows, depth[:, None] + 1 + np.arange(k)] = digits
        tokens[:, haystack_end] = self.QUERY
        tokens[:, haystack_end + 1:] = digits
        targets = np.zeros_like(tokens)
        targets[:, :-1] = tokens[:, 1:]
        loss_mask = np.zeros(tokens.shape, np.float32)
        loss_mask[:, haystack_end:length - 1] = 1.0
        return {"inputs": tokens, "targets": targets, "loss_mask": loss_mask}


__all__ = ["Addition", "Copy", "Passkey", "Reverse", "Sort", "successor_example"]
