"""Config-driven training: ``train_and_evaluate(config, workdir)``.

One trainer serves every experiment: the task, model and optimizer are looked
up by name from the config. A run resumes from the newest checkpoint in
``workdir`` (parameters, optimizer state, step, RNG and data position), so a
resumed run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from sequax.data import TaskIterator, make_task
from sequax.models import build_model
from sequax.parallel.mesh import make_mesh, shard_batch
from sequax.train.checkpoint import Checkpointer, parameter_shapes
from sequax.train.config import validate
from sequax.train.metrics import MetricsWriter
from sequax.train.optim import make_optimizer


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    opt_state: Any
    rng: jnp.ndarray


def model_inputs(batch) -> Dict[str, Any]:
    """The keyword arguments the model takes from a batch."""
    kwargs = {}
    if "segment_ids" in batch:
        kwargs["segment_ids"] = batch["segment_ids"]
    if "lengths" in batch:
        kwargs["lengths"] = batch["lengths"]
    return kwargs


def loss_and_metrics(model, params, batch, rng, deterministic):
    """Mean cross-entropy over counted positions, and accuracy / token counts."""
    rngs = None if deterministic else {"dropout": rng}
    logits = model.apply(
        {"params": params}, batch["inputs"], deterministic=deterministic, rngs=rngs,
        **model_inputs(batch),
    )
    if "label" in batch:
        targets, weights = batch["label"], jnp.ones(batch["label"].shape, jnp.float32)
    else:
        targets, weights = batch["targets"], batch["loss_mask"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    count = jnp.maximum(weights.sum(), 1.0)
    loss = (ce * weights).sum() / count
    return loss, {"loss": loss, "accuracy": (correct * weights).sum() / count}


def make_train_step(model, optimizer):
    def train_step(state: TrainState, batch):
        rng, step_rng = jax.random.split(state.rng)
        grad_fn = jax.value_and_grad(
            lambda p: loss_and_metrics(model, p, batch, step_rng, deterministic=False), has_aux=True
        )
        (_, metrics), grads = grad_fn(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
        return TrainState(state.step + 1, params, opt_state, rng), metrics

    return jax.jit(train_step, donate_argnums=(0,))


def make_eval_step(model):
    def eval_step(params, batch):
        return loss_and_metrics(model, params, batch, None, deterministic=True)[1]

    return jax.jit(eval_step)


def _init_state(model, optimizer, example, seed: int) -> TrainState:
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_rng, example["inputs"], **model_inputs(example))
    params = variables["params"]
    return TrainState(jnp.array(0, jnp.int32), params, optimizer.init(params), train_rng)


def _tokens_per_batch(batch) -> int:
    return int(np.prod(batch["inputs"].shape))


def train_and_evaluate(config, workdir: str, *, stop_at_step: Optional[int] = None) -> Dict[str, Any]:
    """Train ``config`` in ``workdir``; return the final summary (also in ``metrics.json``).

    ``stop_at_step`` ends the run early after that step, with a checkpoint, as
    a preempted job would (the schedule still follows ``train.num_steps``).
    """
    validate(config)
    task = make_task(config.data.task, **dict(config.data.task_kwargs))
    if task.vocab_size > config.model.vocab_size:
        raise ValueError(
            f"task {config.data.task!r} uses {task.vocab_size} tokens but model.vocab_size is "
            f"{config.model.vocab_size}; raise model.vocab_size"
        )
    if task.kind == "classification" and config.model.num_classes < task.num_classes:
        raise ValueError(
            f"task {config.data.task!r} has {task.num_classes} classes; set model.num_classes to it"
        )
    model = build_model(config.model)
    num_steps = int(config.train.num_steps)
    optimizer = make_optimizer(config.optimizer, num_steps)
    mesh = make_mesh(config.mesh)
    batch_size = int(config.train.batch_size)
    eval_batch_size = int(config.eval.batch_size) or batch_size
    for name, size in (("train.batch_size", batch_size), ("eval.batch_size", eval_batch_size)):
        if size <= 0 or (mesh is not None and size % mesh.shape["data"]):
            raise ValueError(f"{name} ({size}) must be positive and divisible by mesh.data")

    train_iter = TaskIterator(task, batch_size, seed=config.train.seed, split="train")
    example = jax.tree_util.tree_map(jnp.asarray, train_iter.batch_at(0))
    abstract = jax.eval_shape(lambda: _init_state(model, optimizer, example, config.train.seed))

    # Everything that can refuse the run does so before the workdir is written.
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    resuming = Checkpointer.exists(checkpoint_dir)
    checkpointer = Checkpointer(checkpoint_dir, keep=config.checkpoint.keep, every=config.checkpoint.every)
    if resuming:
        checkpointer.check_compatible(parameter_shapes(abstract.params))
        state, meta = checkpointer.restore(abstract)
        train_iter.position = int(meta["data_position"])
    else:
        state = _init_state(model, optimizer, example, config.train.seed)

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=1))
    metrics = MetricsWriter(workdir)
    if resuming and os.path.exists(os.path.join(workdir, "metrics.json")):
        with open(os.path.join(workdir, "metrics.json")) as f:
            metrics.history = json.load(f).get("history", {})

    train_step = make_train_step(model, optimizer)
    eval_step = make_eval_step(model)
    eval_iter = TaskIterator(task, eval_batch_size, seed=config.train.seed, split="eval")
    eval_batches = [eval_iter.batch_at(i) for i in range(int(config.eval.num_batches))]

    def evaluate(params) -> Dict[str, float]:
        totals: Dict[str, float] = {}
        for batch in eval_batches:
            out = jax.device_get(eval_step(params, shard_batch(batch, mesh)))
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v) / len(eval_batches)
        return totals

    def meta() -> Dict[str, Any]:
        return {
            "data_position": train_iter.position,
            "parameter_shapes": parameter_shapes(state.params),
            "model": config.model.to_dict(),
        }

    if mesh is not None:
        state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))

    start = int(state.step)
    end = num_steps if stop_at_step is None else min(num_steps, int(stop_at_step))
    log_every = max(int(config.train.log_every), 1)
    eval_every = int(config.eval.every)
    last_train: Dict[str, float] = {}
    last_eval: Dict[str, float] = {}
    tokens_per_second = 0.0
    timed_tokens, timed_seconds = 0, 0.0
    window: Dict[str, float] = {}

    bar = tqdm(range(start, end), initial=start, total=num_steps, desc="train", dynamic_ncols=True)
    for step in bar:
        batch = next(train_iter)
        tic = time.perf_counter()
        state, step_metrics = train_step(state, shard_batch(batch, mesh))
        step_metrics = jax.device_get(step_metrics)
        if step > start:  # the first step of a run includes compilation
            timed_seconds += time.perf_counter() - tic
            timed_tokens += _tokens_per_batch(batch)
        for k, v in step_metrics.items():
            window[k] = window.get(k, 0.0) + float(v)
        window["_count"] = window.get("_count", 0.0) + 1
        done = step + 1
        if done % log_every == 0 or done == end:
            count = window.pop("_count")
            last_train = {k: v / count for k, v in window.items()}
            window = {}
            if timed_seconds > 0:
                tokens_per_second = timed_tokens / timed_seconds
            metrics.write(done, {f"train/{k}": v for k, v in last_train.items()})
            metrics.write(done, {"train/tokens_per_second": tokens_per_second})
            bar.set_postfix(
                loss=f"{last_train['loss']:.4f}", acc=f"{last_train['accuracy']:.3f}",
                tok_s=f"{tokens_per_second:,.0f}",
            )
        if (eval_every > 0 and done % eval_every == 0) or done == num_steps:
            last_eval = evaluate(state.params)
            metrics.write(done, {f"eval/{k}": v for k, v in last_eval.items()})
            bar.write(
                f"step {done}: eval loss {last_eval['loss']:.4f} accuracy {last_eval['accuracy']:.4f}"
            )
        checkpointer.save(done, state, meta(), force=done == end)
    bar.close()

    if not last_eval:
        last_eval = evaluate(state.params)
    checkpointer.close()
    metrics.close()
    summary = {
        "step": int(state.step),
        "train_loss": last_train.get("loss", float("nan")),
        "train_accuracy": last_train.get("accuracy", float("nan")),
        "eval_loss": last_eval["loss"],
        "eval_accuracy": last_eval["accuracy"],
        "tokens_per_second": tokens_per_second,
    }
    metrics.save_summary(summary)
    metrics.save_plot()
    return {**summary, "state": state}
