"""Named evaluations, big_vision style: ``config.evals = {name: {split, num_batches, ...}}``.

Each evaluation reads the batches of one split of the task (with its own
``task_kwargs`` overrides, e.g. a longer ``seq_len`` for length
generalisation) every ``every`` steps and at the end, and logs
``<name>/loss`` and ``<name>/accuracy``. The keys of an entry, and their
defaults, are documented in :data:`sequax.train.config.EVAL_ENTRY`. With no
``config.evals``, one evaluation named ``eval`` reads ``eval.num_batches``
batches of the validation split, as the trainer always did.

Metrics are totals over the batches: the loss and accuracy of every counted
position (LM) or example (classification), each counted once, so a finite
split evaluated in full gives the same numbers whatever its batch size.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List

import jax

from sequax.data import SplitBatches, Task
from sequax.parallel.mesh import shard_batch
from sequax.train.config import EVAL_ENTRY

DEFAULT_NAME = "eval"


@dataclasses.dataclass
class Evaluation:
    """One named evaluation: ``batches`` of ``task`` run every ``every`` steps (0: only at the end)."""

    name: str
    task: Task
    batches: SplitBatches
    every: int

    def due(self, step: int, num_steps: int) -> bool:
        return (self.every > 0 and step % self.every == 0) or step == num_steps

    def run(self, eval_step: Callable, params, mesh) -> Dict[str, float]:
        """``{"loss", "accuracy"}`` over all batches; ``eval_step`` returns the sums of one batch."""
        totals: Dict[str, float] = {}
        for batch in self.batches:
            sums = jax.device_get(eval_step(params, shard_batch(batch, mesh)))
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + float(value)
        count = max(totals["count"], 1.0)
        return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


def evaluations_from_config(config, make_task: Callable[[dict], Task], check_task: Callable,
                            mesh_data: int) -> List[Evaluation]:
    """The evaluations ``config`` asks for; ``ValueError`` naming the key for a bad entry.

    ``make_task(overrides)`` builds the task with ``data.task_kwargs`` updated
    by ``overrides``; ``check_task(task, where)`` checks it fits the model.
    """
    named = dict(config.get("evals") or {})
    entries = named or {DEFAULT_NAME: {}}
    out = []
    for name, entry in entries.items():
        where = f"evals.{name}" if named else "eval"
        if not isinstance(name, str) or not name or "/" in name or name == "train":
            raise ValueError(f"{where}: an evaluation name must be a non-empty word other than 'train'")
        entry = dict(entry or {})
        unknown = sorted(set(entry) - set(EVAL_ENTRY))
        if unknown:
            raise ValueError(
                f"{where} has no key(s) {', '.join(unknown)}; its keys are {', '.join(EVAL_ENTRY)} "
                "(see sequax/train/config.py)"
            )
        split = entry.get("split", EVAL_ENTRY["split"])
        num_batches = entry.get("num_batches") or int(config.eval.num_batches)
        batch_size = int(entry.get("batch_size") or config.eval.batch_size or config.train.batch_size)
        every = entry.get("every")
        every = int(config.eval.every if every is None else every)
        if batch_size <= 0 or batch_size % mesh_data:
            raise ValueError(f"{where}.batch_size ({batch_size}) must be positive and divisible by mesh.data")
        try:
            task = make_task(dict(entry.get("task_kwargs") or {}))
        except ValueError as error:
            raise ValueError(f"{where}.task_kwargs: {error}") from None
        check_task(task, f"{where}.task_kwargs")
        try:
            batches = SplitBatches(task, split, batch_size, int(config.train.seed), num_batches)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        out.append(Evaluation(name, task, batches, every))
    return out
