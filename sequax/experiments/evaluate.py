"""A trained run's named evaluations, scored per token and per sequence (exact match).

The trainer logs token accuracy; length-generalisation papers report exact
match, the fraction of sequences whose every scored position is right. Under
teacher forcing that equals greedy decoding being right: if every next-token
prediction given the true prefix is right, the greedy continuation is the true
one, and conversely. :func:`evaluate_runs` scores ``config.evals`` (or the one
default evaluation) with a run's parameters, optionally under changed mixer
options (``mixer_kwargs``, e.g. RoPE scaling at a longer length), which must
leave the parameter tree as it is.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp

from sequax.data import FixedSizeSplits, Task, make_task
from sequax.models import build_model
from sequax.parallel.mesh import shard_batch
from sequax.train.evaluation import evaluations_from_config
from sequax.train.trainer import model_inputs


def make_config_task(config, overrides: Dict[str, Any]) -> Task:
    """The task of ``config`` with ``task_kwargs`` updated by ``overrides`` (and fixed splits)."""
    task = make_task(config.data.task, **{**dict(config.data.task_kwargs), **overrides})
    sizes = dict(config.data.get("split_sizes") or {})
    return FixedSizeSplits(task, sizes, seed=int(config.train.seed)) if sizes else task


def _sums_fn(model):
    def sums(params, batch):
        logits = model.apply({"params": params}, batch["inputs"], deterministic=True, **model_inputs(batch))
        example_mask = batch.get("example_mask", jnp.ones(batch["inputs"].shape[:1], jnp.float32))
        if "label" in batch:
            correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
            return {"tokens": (correct * example_mask).sum(), "positions": example_mask.sum(),
                    "sequences": (correct * example_mask).sum(), "examples": example_mask.sum()}
        mask = batch["loss_mask"]
        right = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
        scored = (mask.sum(-1) > 0).astype(jnp.float32) * example_mask
        exact = jnp.all((right > 0) | (mask == 0), axis=-1).astype(jnp.float32) * scored
        return {"tokens": (right * mask * example_mask[:, None]).sum(),
                "positions": (mask * example_mask[:, None]).sum(),
                "sequences": exact.sum(), "examples": scored.sum()}

    return jax.jit(sums)


def evaluate(config, params, mixer_overrides: Optional[Callable[[Task], Dict[str, Any]]] = None,
             names: Optional[list] = None) -> Dict[str, Dict[str, float]]:
    """``{eval name: {"token_accuracy", "exact_match", "seq_len"}}`` for ``config``'s evaluations.

    ``mixer_overrides(task)`` may return mixer options for the evaluation of
    ``task`` (its ``seq_len`` is known there); ``names`` limits the evaluations.
    """
    evaluations = evaluations_from_config(config, lambda o: make_config_task(config, o), lambda t, w: None, 1)
    models: Dict[Any, Any] = {}
    out = {}
    for evaluation in evaluations:
        if names is not None and evaluation.name not in names:
            continue
        overrides = mixer_overrides(evaluation.task) if mixer_overrides else {}
        key = tuple(sorted(overrides.items()))
        if key not in models:
            model_config = copy.deepcopy(config.model)
            model_config.mixer_kwargs = {**dict(model_config.mixer_kwargs), **overrides}
            models[key] = _sums_fn(build_model(model_config))
        totals: Dict[str, float] = {}
        for batch in evaluation.batches:
            sums = jax.device_get(models[key](params, shard_batch(batch, None)))
            for k, v in sums.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        out[evaluation.name] = {
            "token_accuracy": totals["tokens"] / max(totals["positions"], 1.0),
            "exact_match": totals["sequences"] / max(totals["examples"], 1.0),
            "seq_len": int(evaluation.task.seq_len),
        }
    return out


def eval_length(config, name: str, key: str) -> Optional[int]:
    """The value of ``task_kwargs[key]`` evaluation ``name`` runs at (its own or the config's)."""
    entry = dict(config.evals or {}).get(name) or {}
    kwargs = {**dict(config.data.task_kwargs), **dict(entry.get("task_kwargs") or {})}
    value = kwargs.get(key)
    return None if value is None else int(value)


__all__ = ["eval_length", "evaluate", "make_config_task"]
