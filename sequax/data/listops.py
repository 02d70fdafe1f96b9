"""ListOps (Nangia & Bowman 2018) as generated for the Long Range Arena (Tay et al. 2020).

An example is a nested prefix expression over the digits 0-9 with the
operators ``MIN``, ``MAX``, ``MED`` (the median, rounded down) and ``SM``
(the sum modulo 10), e.g. ``[MAX 2 9 [MIN 4 7 ] 0 ]`` = 9; the label is its
value (10 classes). The LRA recipe: a node at depth < ``max_depth`` is an
operator with probability 1/4 (else a digit), an operator takes 2 to
``max_args`` arguments, and a tree is kept when its token count lies strictly
between ``min_length`` and ``max_length`` (500 and 2000); distinct trees only;
96K/2K/2K train/validation/test. Brackets are dropped as in the LRA/S4 input
pipelines, the closing ``]`` kept, so each operator is two tokens (``[OP``
and ``]``) and each digit one.

Tokens (:data:`TOKENS`): 0 padding, 1-10 the digits 0-9, 11-14 the operators,
15 ``]``; ``vocab_size`` 16. Examples are built once into the local cache
(:mod:`sequax.data.cache`) in ``num_workers`` processes; the result depends
only on the parameters and the seed.
"""

from __future__ import annotations

import functools
import random
from typing import Dict, List, Optional, Tuple

import numpy as np

from sequax.data import cache
from sequax.data.registry import register_task

VERSION = 1
OPERATORS = ("MIN", "MAX", "MED", "SM")
PAD, DIGIT0, CLOSE = 0, 1, 15
OPERATOR_TOKEN = {name: 11 + i for i, name in enumerate(OPERATORS)}
TOKENS = ["<pad>"] + [str(d) for d in range(10)] + ["[" + op for op in OPERATORS] + ["]"]
VALUE_PROBABILITY = 0.75  # a node below max_depth is a digit with this probability (LRA: VALUE_P = 0.25)
CHUNK = 500  # examples per generation job


def apply_operator(name: str, args: List[int]) -> int:
    """The value of operator ``name`` on its arguments."""
    if name == "MIN":
        return min(args)
    if name == "MAX":
        return max(args)
    if name == "MED":
        ordered = sorted(args)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
    return sum(args) % 10


class _TooLong(Exception):
    pass


def _tree(rnd: random.Random, depth: int, max_depth: int, max_args: int, out: List[int], limit: int) -> int:
    """Append one subtree's tokens to ``out``; return its value. ``_TooLong`` past ``limit`` tokens."""
    if depth >= max_depth or rnd.random() < VALUE_PROBABILITY:
        digit = rnd.randrange(10)
        out.append(DIGIT0 + digit)
        if len(out) >= limit:
            raise _TooLong
        return digit
    name = OPERATORS[rnd.randrange(len(OPERATORS))]
    out.append(OPERATOR_TOKEN[name])
    args = [_tree(rnd, depth + 1, max_depth, max_args, out, limit) for _ in range(rnd.randint(2, max_args))]
    out.append(CLOSE)
    if len(out) >= limit:
        raise _TooLong
    return apply_operator(name, args)


def generate_example(rnd: random.Random, min_length: int, max_length: int, max_depth: int,
                     max_args: int) -> Tuple[List[int], int]:
    """One ``(tokens, value)`` with ``min_length < len(tokens) < max_length`` (rejection sampling)."""
    while True:
        tokens: List[int] = []
        try:
            value = _tree(rnd, 1, max_depth, max_args, tokens, max_length)
        except _TooLong:
            continue
        if len(tokens) > min_length:
            return tokens, value


def _chunk(index: int, seed: int, min_length: int, max_length: int, max_depth: int,
           max_args: int) -> List[Tuple[bytes, int]]:
    rnd = random.Random(f"listops/{seed}/{index}")
    out = []
    for _ in range(CHUNK):
        tokens, value = generate_example(rnd, min_length, max_length, max_depth, max_args)
        out.append((bytes(tokens), value))
    return out


def build(sizes: Dict[str, int], seed: int, min_length: int, max_length: int, max_depth: int,
          max_args: int, num_workers: int) -> cache.Splits:
    """The splits as arrays: ``inputs`` uint8 ``[N, max_length]``, ``label`` uint8, ``lengths`` int32."""
    total = sum(sizes.values())
    job = functools.partial(_chunk, seed=seed, min_length=min_length, max_length=max_length,
                            max_depth=max_depth, max_args=max_args)
    unique: Dict[bytes, int] = {}
    next_chunk = 0
    while len(unique) < total:
        count = max(1, -(-(total - len(unique)) // CHUNK))
        for rows in cache.parallel_map(job, range(next_chunk, next_chunk + count), num_workers):
            for tokens, value in rows:
                if len(unique) < total:
                    unique.setdefault(tokens, value)
        next_chunk += count
    examples = list(unique.items())
    splits, start = {}, 0
    for split, size in sizes.items():
        part = examples[start:start + size]
        start += size
        inputs = np.zeros((size, max_length), np.uint8)
        for i, (tokens, _) in enumerate(part):
            inputs[i, :len(tokens)] = np.frombuffer(tokens, np.uint8)
        splits[split] = {
            "inputs": inputs,
            "label": np.array([value for _, value in part], np.uint8),
            "lengths": np.array([len(tokens) for tokens, _ in part], np.int32),
        }
    return splits


@register_task("listops")
class ListOps(cache.CachedClassification):
    """LRA ListOps: ``inputs`` int32 ``[batch, max_length]`` (0-padded), ``label`` ``[batch]`` in 0-9,
    ``lengths`` ``[batch]``. See the module docstring for the recipe and the tokens."""

    num_classes = 10
    vocab_size = len(TOKENS)

    def __init__(self, num_train: int = 96_000, num_validation: int = 2_000, num_test: int = 2_000,
                 min_length: int = 500, max_length: int = 2000, max_depth: int = 10, max_args: int = 10,
                 seed: int = 0, cache_dir: Optional[str] = None, num_workers: int = 0):
        sizes = cache.split_sizes(num_train, num_validation, num_test)
        self.check_positive(max_depth=max_depth, max_length=max_length)
        if max_args < 2:
            raise ValueError(f"max_args must be at least 2 (an operator takes 2 or more), got {max_args}")
        if not 0 <= min_length < max_length - 1:
            raise ValueError(
                f"min_length ({min_length}) must be >= 0 and below max_length - 1 ({max_length - 1}): "
                "a kept tree has min_length < tokens < max_length"
            )
        if max_depth == 1 and min_length >= 1:
            raise ValueError("max_depth=1 only makes single digits; raise max_depth or set min_length=0")
        self.seq_len = int(max_length)
        params = dict(sizes=sizes, seed=int(seed), min_length=int(min_length), max_length=int(max_length),
                      max_depth=int(max_depth), max_args=int(max_args))
        workers = cache.default_workers(num_workers)
        self.splits = cache.cached_splits(
            "listops", VERSION, params, lambda: build(num_workers=workers, **params), cache_dir
        )
