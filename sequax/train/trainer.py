"""Config-driven training: ``train_and_evaluate(config, workdir)``.

One trainer serves every experiment: the task, model and optimizer are looked
up by name from the config. A run goes through four steps, one function each:

1. :func:`_prepare`: everything that can refuse the run (config keys, task,
   model, evaluations, the workdir path); nothing is written;
2. :func:`_restore` / :func:`_fresh_state`: the train state, from the newest
   intact checkpoint (parameters, optimizer state, step, RNG, data position and
   the metrics of a partly logged window) or fresh;
3. :func:`_train_loop`: the steps, with logging, evaluations and checkpoints;
   SIGINT/SIGTERM end it cleanly (see :mod:`sequax.train.interrupt`);
4. :func:`_summarize`: ``metrics.json`` and ``curves.png``.

A resumed run sees exactly the batches, and ends with exactly the state and
metrics history, of an uninterrupted one. Running a finished workdir again
changes nothing. OS errors on the workdir end in a one-line
:class:`~sequax.train.workdir.WorkdirError`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from sequax.data import FixedSizeSplits, TaskIterator, make_task
from sequax.models import build_model
from sequax.parallel.mesh import make_mesh, shard_batch
from sequax.parallel.sharding import layout_from_config
from sequax.train import distributed
from sequax.train.checkpoint import Checkpointer, parameter_shapes
from sequax.train.config import validate
from sequax.train.evaluation import Evaluation, evaluations_from_config
from sequax.train.interrupt import StopSignals, TrainingInterrupted
from sequax.train.metrics import SUMMARY, MetricsWriter, read_summary
from sequax.train.optim import make_optimizer
from sequax.train.progress import Progress
from sequax.train.workdir import check_workdir, os_error, write_text

TIMING_METRICS = ("train/tokens_per_second",)  # the only history entries a resumed run does not reproduce


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    opt_state: Any
    rng: jnp.ndarray


# ---------------------------------------------------------------------------- steps


def model_inputs(batch) -> Dict[str, Any]:
    """The keyword arguments the model takes from a batch."""
    kwargs = {}
    if "segment_ids" in batch:
        kwargs["segment_ids"] = batch["segment_ids"]
    if "lengths" in batch:
        kwargs["lengths"] = batch["lengths"]
    return kwargs


def metric_sums(model, params, batch, rng, deterministic):
    """Summed cross-entropy and correct predictions over counted positions, and their count.

    Counted positions: ``loss_mask`` (LM) or every example (classification),
    times ``example_mask`` where a batch has one (padding rows count 0).
    """
    rngs = None if deterministic else {"dropout": rng}
    logits = model.apply(
        {"params": params}, batch["inputs"], deterministic=deterministic, rngs=rngs,
        **model_inputs(batch),
    )
    if "label" in batch:
        targets, weights = batch["label"], jnp.ones(batch["label"].shape, jnp.float32)
    else:
        targets, weights = batch["targets"], batch["loss_mask"]
    if "example_mask" in batch:
        mask = batch["example_mask"]
        weights = weights * mask.reshape(mask.shape + (1,) * (weights.ndim - 1))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    return {"loss_sum": (ce * weights).sum(), "correct": (correct * weights).sum(), "count": weights.sum()}


def loss_and_metrics(model, params, batch, rng, deterministic):
    """Mean cross-entropy over counted positions, and ``{"loss", "accuracy"}``."""
    sums = metric_sums(model, params, batch, rng, deterministic)
    count = jnp.maximum(sums["count"], 1.0)
    loss = sums["loss_sum"] / count
    return loss, {"loss": loss, "accuracy": sums["correct"] / count}


def _on_layout(layout, jitted):
    """``jitted`` called (so traced) inside ``layout``'s context: mesh, logical-axis rules, sequence split.
    ``.jitted`` is the jitted function itself (lower/compile it inside ``layout.context()``)."""

    def call(*args):
        with layout.context():
            return jitted(*args)

    call.jitted = jitted
    return call


def make_train_step(model, optimizer, layout=None, shardings=None):
    """The jitted step; on a ``layout`` (:class:`sequax.parallel.sharding.Layout`) traced inside its
    context, with explicit ``shardings = (state, batch)`` in and ``(state, replicated)`` out."""

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

    if layout is None:
        return jax.jit(train_step, donate_argnums=(0,))
    replicated = jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec())
    return _on_layout(layout, jax.jit(train_step, donate_argnums=(0,), in_shardings=shardings,
                                      out_shardings=(shardings[0], replicated)))


def make_eval_step(model, layout=None):
    """``eval_step(params, batch)`` -> :func:`metric_sums` of the batch (replicated on a ``layout``;
    the inputs keep the shardings they were placed with)."""

    def eval_step(params, batch):
        return metric_sums(model, params, batch, None, deterministic=True)

    if layout is None:
        return jax.jit(eval_step)
    replicated = jax.sharding.NamedSharding(layout.mesh, jax.sharding.PartitionSpec())
    return _on_layout(layout, jax.jit(eval_step, out_shardings=replicated))


_STEP_CACHE: Dict[Any, Tuple[Any, Any, Any]] = {}
_STEP_CACHE_SIZE = 4


def step_functions(model, optimizer, optimizer_config, num_steps: int, layout=None, shardings=None):
    """``(init, train_step, eval_step)``, jitted; shared by runs of one model, optimizer and schedule.

    ``init(example, seed)`` is the fresh :class:`TrainState`. Tests, notebooks
    and sweeps that train the same config several times in one process then
    compile once. The key (``model.spec``, the optimizer config, ``num_steps``)
    determines everything these functions compute; on a mesh, so do the ``layout`` and the batch's
    structure (``shardings = (state, batch)`` shardings of :func:`make_train_step`).
    """
    def build():
        init = jax.jit(lambda example, seed: _init_state(model, optimizer, example, seed))
        return init, make_train_step(model, optimizer, layout, shardings), make_eval_step(model, layout)

    key = (model.spec, optimizer_config.to_json(sort_keys=True), int(num_steps))
    if layout is not None:
        batch = jax.tree_util.tree_structure(shardings[1])
        key += (layout, str(batch), tuple(s.spec for s in jax.tree_util.tree_leaves(shardings[1])))
    try:
        hash(key)
    except TypeError:  # an unhashable mixer option: no sharing
        return build()
    if key not in _STEP_CACHE:
        while len(_STEP_CACHE) >= _STEP_CACHE_SIZE:
            _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
        _STEP_CACHE[key] = build()
    return _STEP_CACHE[key]


def _init_state(model, optimizer, example, seed) -> TrainState:
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_rng, example["inputs"], **model_inputs(example))
    params = variables["params"]
    return TrainState(jnp.array(0, jnp.int32), params, optimizer.init(params), train_rng)


def state_shardings(abstract_state, mesh, layout=None):
    """Where each leaf of the train state lives: the one place that decides it.

    Fresh and restored states are both placed here, so they compile alike.
    Without a mesh every leaf is on the first device; on a ``layout``
    (:class:`sequax.parallel.sharding.Layout`) parameters and optimizer state
    follow the logical-axis rules (FSDP over ``fsdp``, tensor parallelism over
    ``tensor``) and the rest is replicated.
    """
    if layout is not None:  # parameters and optimizer state by their logical-axis rules
        return layout.state_shardings(abstract_state)
    if mesh is None:
        where = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    else:
        where = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.tree_util.tree_map(lambda _: where, abstract_state)


def _tokens_per_batch(batch) -> int:
    return int(np.prod(batch["inputs"].shape))


class _LogWindow:
    """Sums of the step metrics since the last log line (their means are what gets logged).

    Steps' metrics are kept as the device arrays the step returned and read
    back together when a mean is needed, so the loop never waits for the
    device between log lines (the host dispatches the next steps while the
    device runs). Stored in checkpoints, so a run resumed in the middle of a
    window logs the same means as an uninterrupted one.
    """

    def __init__(self, sums: Optional[Dict[str, float]] = None, count: int = 0):
        self.sums, self.count = dict(sums or {}), int(count)
        self._pending: List[Dict[str, Any]] = []

    def add(self, metrics: Dict[str, Any]) -> None:
        self._pending.append(metrics)
        self.count += 1

    def _read_pending(self) -> None:
        for metrics in jax.device_get(self._pending):
            for key, value in metrics.items():
                self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self._pending = []

    def mean(self) -> Dict[str, float]:
        self._read_pending()
        return {key: value / self.count for key, value in self.sums.items()} if self.count else {}

    def take(self) -> Dict[str, float]:
        out = self.mean()
        self.sums, self.count = {}, 0
        return out

    def to_json(self) -> Dict[str, Any]:
        self._read_pending()
        return {"sums": self.sums, "count": self.count}


# ---------------------------------------------------------------------------- 1. prepare


@dataclasses.dataclass
class _Run:
    """What the config resolves to, built before anything is written."""

    config: Any
    workdir: str
    num_steps: int
    model: Any
    optimizer: Any
    mesh: Any
    train_iter: TaskIterator
    example: Dict[str, Any]
    abstract: Any  # the train state's shapes, dtypes and shardings
    evaluations: List[Evaluation]
    checkpointer: Checkpointer
    layout: Any = None  # sequax.parallel.sharding.Layout on a mesh: rules, mixer, attention strategy


def _make_task(config, overrides: Dict[str, Any]):
    task = make_task(config.data.task, **{**dict(config.data.task_kwargs), **overrides})
    sizes = dict(config.data.get("split_sizes") or {})
    if not sizes:
        return task
    try:
        return FixedSizeSplits(task, sizes, seed=int(config.train.seed))
    except ValueError as error:
        raise ValueError(f"data.split_sizes: {error}") from None


def _check_task(config, task, where: str) -> None:
    c = config.model
    if task.vocab_size > c.vocab_size:
        raise ValueError(
            f"task {config.data.task!r} ({where}) uses {task.vocab_size} tokens but model.vocab_size is "
            f"{c.vocab_size}; raise model.vocab_size"
        )
    if task.kind == "classification" and c.num_classes < task.num_classes:
        raise ValueError(
            f"task {config.data.task!r} ({where}) has {task.num_classes} classes; set model.num_classes to it"
        )
    if c.position_embedding == "learned" and task.seq_len > c.max_length:
        raise ValueError(
            f"task {config.data.task!r} ({where}) has length {task.seq_len} but model.max_length is "
            f"{c.max_length}; raise model.max_length"
        )


def _prepare(config, workdir: str) -> _Run:
    """Check the config and build the task, model, optimizer and evaluations; ``ValueError`` if anything is off."""
    validate(config)
    num_steps = int(config.train.num_steps)
    if num_steps <= 0:
        raise ValueError(f"train.num_steps must be positive, got {num_steps}; set it to the steps to train")
    check_workdir(workdir)
    task = _make_task(config, {})
    _check_task(config, task, "data.task_kwargs")
    model = build_model(config.model)
    optimizer = make_optimizer(config.optimizer, num_steps)
    mesh = make_mesh(config.mesh)
    layout = layout_from_config(config, mesh)
    mesh_data = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]  # the batch's split
    batch_size = int(config.train.batch_size)
    if batch_size <= 0 or batch_size % mesh_data:
        raise ValueError(
            f"train.batch_size ({batch_size}) must be positive and divisible by mesh.data"
            f"{' x mesh.fsdp' if mesh is not None and mesh.shape['fsdp'] > 1 else ''} ({mesh_data})"
        )
    evaluations = evaluations_from_config(
        config, lambda overrides: _make_task(config, overrides),
        lambda t, where: _check_task(config, t, where), mesh_data,
    )
    train_iter = TaskIterator(task, batch_size, seed=config.train.seed, split="train")
    example = jax.tree_util.tree_map(jnp.asarray, train_iter.batch_at(0))
    abstract = jax.eval_shape(lambda: _init_state(model, optimizer, example, config.train.seed))
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        state_shardings(abstract, mesh, layout),
    )
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep, every=config.checkpoint.every
    )
    return _Run(config, workdir, num_steps, model, optimizer, mesh, train_iter, example, abstract,
                evaluations, checkpointer, layout)


# ---------------------------------------------------------------------------- 2. state


def _restore(run: _Run) -> Optional[Tuple[TrainState, _LogWindow]]:
    """The newest intact checkpoint's state (setting its data position) and log window; ``None`` if none."""
    restored = run.checkpointer.restore(run.abstract, parameter_shapes(run.abstract.params))
    if restored is None:
        return None
    _, state, meta = restored
    run.train_iter.position = int(meta["data_position"])
    window = meta.get("log_window") or {}
    return state, _LogWindow(window.get("sums"), window.get("count", 0))


def restore_state(config, workdir: str) -> Optional[TrainState]:
    """The train state of ``workdir``'s newest intact checkpoint, checked against ``config``; ``None`` if none.

    For reading a trained model back (sampling, evaluation) the way a resumed
    run would: the same config checks, shapes and shardings; nothing is written.
    """
    run = _prepare(config, workdir)
    try:
        restored = _restore(run)
    finally:
        run.checkpointer.close()
    return None if restored is None else restored[0]


def _fresh_state(run: _Run, init) -> Tuple[TrainState, _LogWindow]:
    """The initial state (``init`` from :func:`step_functions`), placed by :func:`state_shardings`."""
    state = init(run.example, int(run.config.train.seed))
    return jax.device_put(state, state_shardings(run.abstract, run.mesh, run.layout)), _LogWindow()


def _meta(run: _Run, state: TrainState, window: _LogWindow) -> Dict[str, Any]:
    return {
        "data_position": run.train_iter.position,
        "parameter_shapes": parameter_shapes(state.params),
        "model": run.config.model.to_dict(),
        "log_window": window.to_json(),
    }


# ---------------------------------------------------------------------------- 3. loop


@dataclasses.dataclass
class _Outputs:
    metrics: MetricsWriter
    progress: Progress

    def close(self):
        self.progress.close()
        self.metrics.close()


@dataclasses.dataclass
class _LoopResult:
    state: TrainState
    step: int
    last_train: Dict[str, float]
    last_evals: Dict[str, Dict[str, float]]
    tokens_per_second: float


def _evaluate(run: _Run, evaluation: Evaluation, eval_step, params, step: int, outputs: _Outputs):
    results = evaluation.run(eval_step, params, run.mesh)
    outputs.metrics.write(step, {f"{evaluation.name}/{k}": v for k, v in results.items()})
    outputs.progress.write(
        f"step {step}: {evaluation.name} loss {results['loss']:.4f} accuracy {results['accuracy']:.4f}"
    )
    return results


StopWhen = Callable[[int, Dict[str, Dict[str, float]]], bool]


def _train_loop(run: _Run, state: TrainState, window: _LogWindow, outputs: _Outputs, train_step,
                eval_step, end: int, stop: StopSignals, stop_when: Optional[StopWhen] = None) -> _LoopResult:
    """Steps ``state.step + 1 ... end``; stops early (with a checkpoint) on a signal or ``stop_when``."""
    start = done = int(state.step)
    log_every = max(int(run.config.train.log_every), 1)
    last_train: Dict[str, float] = {}
    last_evals: Dict[str, Dict[str, float]] = {}
    # Training throughput: wall time from the end of the first step (which includes compilation),
    # less the time spent evaluating and checkpointing; the loop waits for the device only there and
    # at log lines, so the host prepares the next batches while the device computes.
    tokens_per_second, timed_tokens, paused = 0.0, 0, 0.0
    timer_start = None
    for step in range(start, end):
        if stop.signum is not None:
            break
        batch = next(run.train_iter)
        state, step_metrics = train_step(state, shard_batch(batch, run.mesh))
        if timer_start is None:
            jax.block_until_ready(step_metrics)
            timer_start = time.perf_counter()
        else:
            timed_tokens += _tokens_per_batch(batch)
        window.add(step_metrics)
        done = step + 1
        outputs.progress.advance(done)
        if done % log_every == 0 or done == run.num_steps:
            last_train = window.take()  # waits for the window's steps
            elapsed = time.perf_counter() - timer_start - paused
            if timed_tokens and elapsed > 0:
                tokens_per_second = timed_tokens / elapsed
            outputs.metrics.write(done, {f"train/{k}": v for k, v in last_train.items()})
            outputs.metrics.write(done, {"train/tokens_per_second": tokens_per_second})
            outputs.progress.log(done, last_train, tokens_per_second)
        due = [e for e in run.evaluations if e.due(done, run.num_steps)]
        force_save = done == end
        if not (due or force_save or run.checkpointer.due(done)):
            continue
        jax.block_until_ready(state.step)  # training up to here is not counted as paused
        tic = time.perf_counter()
        evaluated = {e.name: _evaluate(run, e, eval_step, state.params, done, outputs) for e in due}
        last_evals.update(evaluated)
        early = bool(evaluated) and stop_when is not None and bool(stop_when(done, evaluated))
        if force_save or early or run.checkpointer.due(done):  # (the metadata only when saving)
            run.checkpointer.save(done, state, _meta(run, state, window), force=True)
        paused += time.perf_counter() - tic
        if early:
            break
    if stop.signum is not None and done < end:
        run.checkpointer.save(done, state, _meta(run, state, window), force=True)
        run.checkpointer.close()
        outputs.close()
        raise TrainingInterrupted(done, stop.signum)
    if window.count:  # a run stopped (stop_at_step) inside a log window: its partial means
        last_train = window.mean()
    return _LoopResult(state, done, last_train, last_evals, tokens_per_second)


# ---------------------------------------------------------------------------- 4. summary


def _summarize(run: _Run, result: _LoopResult, outputs: _Outputs, eval_step) -> Dict[str, Any]:
    """The summary (also ``metrics.json``; ``curves.png``); evaluations not run yet run now (unlogged)."""
    history = outputs.metrics.history
    train = result.last_train or {
        k: history[f"train/{k}"][-1][1] for k in ("loss", "accuracy") if f"train/{k}" in history
    }
    tokens_per_second = result.tokens_per_second or (
        history["train/tokens_per_second"][-1][1] if "train/tokens_per_second" in history else 0.0
    )
    summary = {
        "step": result.step,
        "train_loss": train.get("loss", float("nan")),
        "train_accuracy": train.get("accuracy", float("nan")),
    }
    for evaluation in run.evaluations:
        results = result.last_evals.get(evaluation.name)
        if results is None:
            results = evaluation.run(eval_step, result.state.params, run.mesh)
        summary.update({f"{evaluation.name}_{k}": v for k, v in results.items()})
    summary["tokens_per_second"] = tokens_per_second
    outputs.metrics.save_summary(summary)
    outputs.metrics.save_plot()
    return summary


# ---------------------------------------------------------------------------- the run


def train_and_evaluate(config, workdir: str, *, stop_at_step: Optional[int] = None,
                       stop_when: Optional[StopWhen] = None) -> Dict[str, Any]:
    """Train ``config`` in ``workdir``; return the final summary (also in ``metrics.json``) and ``"state"``.

    Resumes from the newest intact checkpoint in ``workdir``; a finished
    workdir is left as it is (its summary is returned). ``stop_at_step`` ends
    the run early after that step, with a checkpoint, as a preempted job would
    (the schedule still follows ``train.num_steps``). ``stop_when(step,
    {evaluation: {"loss": ..., "accuracy": ...}})`` is called after each step
    that ran evaluations (with those results); when it returns True the run
    ends there the same way, e.g. ``lambda step, evals: evals["eval"]["accuracy"]
    >= 0.9`` for "train until solved". SIGINT/SIGTERM end it
    with a checkpoint and :class:`~sequax.train.interrupt.TrainingInterrupted`.
    Bad config values raise ``ValueError``; OS errors on the workdir
    :class:`~sequax.train.workdir.WorkdirError`, each one line.
    """
    distributed.initialize(config)  # a multi-process run (config.distributed or the environment)
    run = _prepare(config, workdir)
    try:
        with StopSignals() as stop:
            return _run(run, stop_at_step, stop, stop_when)
    except Exception as error:  # noqa: BLE001 - only OS errors are converted, the rest re-raised
        converted = os_error(error, workdir)
        if converted is None or converted is error:
            raise
        raise converted from error


def _run(run: _Run, stop_at_step: Optional[int], stop: StopSignals,
         stop_when: Optional[StopWhen] = None) -> Dict[str, Any]:
    workdir = run.workdir
    restored = _restore(run)
    if restored is not None and int(restored[0].step) >= run.num_steps:
        summary = read_summary(workdir)
        if summary is not None and summary.get("step") == int(restored[0].step):
            print(f"{workdir} is finished (step {summary['step']} of {run.num_steps}); nothing to do, its "
                  f"summary is in {os.path.join(workdir, SUMMARY)}", flush=True)
            summary.pop("history", None)
            return {**summary, "state": restored[0]}
    os.makedirs(workdir, exist_ok=True)
    if distributed.is_primary():
        write_text(os.path.join(workdir, "config.json"), run.config.to_json_best_effort(indent=1))
    shardings = None if run.layout is None else (
        jax.tree_util.tree_map(lambda a: a.sharding, run.abstract), run.layout.batch_shardings(run.example))
    init, train_step, eval_step = step_functions(run.model, run.optimizer, run.config.optimizer, run.num_steps,
                                                 run.layout, shardings)
    state, window = restored or _fresh_state(run, init)
    start = int(state.step)
    end = run.num_steps if stop_at_step is None else min(run.num_steps, int(stop_at_step))
    print(f"resuming from step {start} of {run.num_steps} in {workdir}" if start else f"starting {workdir}",
          flush=True)
    if distributed.is_primary():
        outputs = _Outputs(MetricsWriter(workdir, resume_step=start), Progress(start, run.num_steps))
    else:  # process 0 writes the run's files
        outputs = _Outputs(distributed.QuietMetrics(), distributed.QuietProgress())
    result = _train_loop(run, state, window, outputs, train_step, eval_step, end, stop, stop_when)
    outputs.progress.close()
    run.checkpointer.close()
    summary = _summarize(run, result, outputs, eval_step)
    outputs.close()
    return {**summary, "state": result.state}
