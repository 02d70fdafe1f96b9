"""Synthetic recall tasks: MQAR, induction heads, selective copying.

All are next-token-prediction tasks with the loss only on answer positions
(see :mod:`sequax.data.base` for the batch format). Token 0 is a filler/blank
that never needs predicting. Every split is an endless generator, seeded per
split; ``config.data.split_sizes`` turns a split into a fixed set of examples
(:class:`sequax.data.FixedSizeSplits`).
"""

from __future__ import annotations

import numpy as np

from sequax.data.base import Task
from sequax.data.registry import register_task


@register_task("mqar")
class MQAR(Task):
    """Multi-query associative recall (Zoology, Arora et al. 2023).

    A sequence starts with ``num_kv_pairs`` key-value pairs ``k1 v1 k2 v2 ...``
    (keys distinct, from ``[1, vocab/2)``; values from ``[vocab/2, vocab)``).
    Later, every key is queried once: at the query position the key appears
    and the target is its value; the value follows as the next input, so the
    query region reads like the context. Query slots are drawn without
    replacement with probability proportional to ``(slot + 1) ** (power_a - 1)``,
    which makes short gaps between a key's first and second appearance more
    likely (Zoology's power-law spacing; ``power_a=1`` is uniform). Other query
    region positions hold the filler token 0.
    """

    def __init__(self, vocab_size: int = 8192, seq_len: int = 256, num_kv_pairs: int = 16,
                 power_a: float = 0.01):
        self.check_positive(vocab_size=vocab_size, seq_len=seq_len, num_kv_pairs=num_kv_pairs)
        num_keys = vocab_size // 2 - 1
        if num_kv_pairs > num_keys:
            raise ValueError(
                f"num_kv_pairs ({num_kv_pairs}) exceeds the {num_keys} distinct keys that "
                f"vocab_size {vocab_size} allows; raise vocab_size or lower num_kv_pairs"
            )
        if seq_len < 4 * num_kv_pairs:
            raise ValueError(
                f"seq_len ({seq_len}) must be at least 4 * num_kv_pairs ({4 * num_kv_pairs}) "
                "to fit the context and one query slot per key"
            )
        if power_a <= 0:
            raise ValueError(f"power_a must be positive, got {power_a}")
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.num_kv_pairs, self.power_a = num_kv_pairs, power_a

    def batch(self, rng, batch_size):
        n, length = self.num_kv_pairs, self.seq_len
        half = self.vocab_size // 2
        context = 2 * n
        num_slots = (length - context) // 2
        weights = np.arange(1, num_slots + 1, dtype=np.float64) ** (self.power_a - 1)
        weights /= weights.sum()

        inputs = np.zeros((batch_size, length), np.int32)
        targets = np.zeros((batch_size, length), np.int32)
        loss_mask = np.zeros((batch_size, length), np.float32)
        for i in range(batch_size):
            keys = rng.choice(np.arange(1, half), size=n, replace=False)
            values = rng.integers(half, self.vocab_size, size=n)
            inputs[i, 0:context:2] = keys
            inputs[i, 1:context:2] = values
            slots = rng.choice(num_slots, size=n, replace=False, p=weights)
            query_pos = context + 2 * slots
            inputs[i, query_pos] = keys
            targets[i, query_pos] = values
            loss_mask[i, query_pos] = 1.0
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}


@register_task("induction_heads")
class InductionHeads(Task):
    """Induction heads (as in the Mamba paper's synthetic).

    Random tokens from ``[2, vocab)``; a trigger token 1 appears once at a random
    position followed by the answer token. The last input is the trigger again
    and the target there is the answer.

    ``curriculum_steps > 0``: a distance curriculum for training. At batch
    ``position`` the first trigger lies at most ``d`` tokens before the end,
    ``d`` growing geometrically from ``min_distance`` to the whole sequence over
    the first ``curriculum_steps`` batches; the shapes never change, and from
    then on the batches are the plain task's. Without it a small Mamba sits at
    chance (loss ``ln(vocab - 2)``) for longer the longer the sequence: past
    10,000 steps at 256 tokens, against ~600 at 64. Evaluations always use the
    plain task.
    """

    def __init__(self, vocab_size: int = 16, seq_len: int = 256, curriculum_steps: int = 0,
                 min_distance: int = 16):
        self.check_positive(vocab_size=vocab_size, seq_len=seq_len, min_distance=min_distance)
        if vocab_size < 3 or seq_len < 4:
            raise ValueError("induction_heads needs vocab_size >= 3 and seq_len >= 4")
        if int(curriculum_steps) < 0:
            raise ValueError(f"curriculum_steps must be >= 0 (0: no curriculum), got {curriculum_steps}")
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.curriculum_steps, self.min_distance = int(curriculum_steps), int(min_distance)

    def max_distance(self, position: int) -> int:
        """How far before the final trigger the first one may lie at batch ``position``."""
        whole = self.seq_len - 2
        if self.curriculum_steps <= 0 or position >= self.curriculum_steps:
            return whole
        start = min(self.min_distance, whole)
        return int(min(whole, round(start * (whole / start) ** (position / self.curriculum_steps))))

    def batch(self, rng, batch_size):
        return self._batch(rng, batch_size, self.seq_len - 2)

    def batch_at_position(self, rng, batch_size, position):
        return self._batch(rng, batch_size, self.max_distance(position))

    def _batch(self, rng, batch_size, distance):
        length = self.seq_len
        inputs = rng.integers(2, self.vocab_size, size=(batch_size, length)).astype(np.int32)
        trigger_pos = rng.integers(length - 2 - distance, length - 2, size=batch_size)
        rows = np.arange(batch_size)
        inputs[rows, trigger_pos] = 1
        inputs[:, -1] = 1
        targets = np.zeros_like(inputs)
        targets[:, -1] = inputs[rows, trigger_pos + 1]
        loss_mask = np.zeros(inputs.shape, np.float32)
        loss_mask[:, -1] = 1.0
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}


@register_task("selective_copying")
class SelectiveCopying(Task):
    """Selective copying (Mamba paper, Gu & Dao 2023).

    A region of ``seq_len`` positions holds ``num_tokens`` data tokens from
    ``[2, vocab)`` at random positions, blanks (0) elsewhere; then
    ``num_tokens`` marker tokens (1). At the k-th marker the target is the
    k-th data token in order. Total length ``seq_len + num_tokens``.
    """

    def __init__(self, vocab_size: int = 16, seq_len: int = 256, num_tokens: int = 16):
        self.check_positive(vocab_size=vocab_size, seq_len=seq_len, num_tokens=num_tokens)
        if vocab_size < 3:
            raise ValueError(f"selective_copying needs vocab_size >= 3, got {vocab_size}")
        if num_tokens > seq_len:
            raise ValueError(f"num_tokens ({num_tokens}) must not exceed seq_len ({seq_len})")
        self.vocab_size, self.region, self.num_tokens = vocab_size, seq_len, num_tokens
        self.seq_len = seq_len + num_tokens

    def batch(self, rng, batch_size):
        region, n = self.region, self.num_tokens
        inputs = np.zeros((batch_size, region + n), np.int32)
        targets = np.zeros_like(inputs)
        loss_mask = np.zeros(inputs.shape, np.float32)
        for i in range(batch_size):
            positions = np.sort(rng.choice(region, size=n, replace=False))
            tokens = rng.integers(2, self.vocab_size, size=n)
            inputs[i, positions] = tokens
            targets[i, region:] = tokens
        inputs[:, region:] = 1
        loss_mask[:, region:] = 1.0
        return {"inputs": inputs, "targets": targets, "loss_mask": loss_mask}
