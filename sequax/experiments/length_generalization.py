"""Length generalisation: decoder-only models trained on short instances, scored on longer ones.

Each run of a ``configs/length_generalization/<name>`` config trains one task
(``copy``, ``reverse``, ``addition``, ``sort``) with one position scheme;
its evaluations set ``min_len = max_len = n`` for several ``n``. Every
evaluation is scored by exact match (:mod:`sequax.experiments.evaluate`).
Runs whose attention uses plain RoPE are also scored with each scaling in
``config.experiment.rope_scalings`` (``linear`` = position interpolation,
``ntk``), scale factor = evaluation length / training length (the same
parameters: RoPE has none).

``accuracy_vs_length.png``: exact match against ``n``, one panel per task,
one line per position scheme (``+ hint`` for task hinting's successor task).
"""

from __future__ import annotations

from typing import Any, Dict

from sequax.experiments.evaluate import eval_length, evaluate
from sequax.experiments.runner import Report, train_runs


def position_scheme(config) -> str:
    """A run's position scheme as a legend label: nope, rope, alibi, t5, learned (+ hint)."""
    kwargs = dict(config.model.mixer_kwargs)
    if config.model.position_embedding == "learned":
        label = "learned"
    elif config.model.mixer != "attention":
        label = config.model.mixer
    else:
        label = {"none": "nope"}.get(kwargs.get("positional", "rope"), kwargs.get("positional", "rope"))
        if kwargs.get("rope_scaling"):
            label += f"+{kwargs['rope_scaling']}"
    if float(dict(config.data.task_kwargs).get("hint_fraction", 0) or 0) > 0:
        label += " + hint"
    return label


def _uses_plain_rope(config) -> bool:
    kwargs = dict(config.model.mixer_kwargs)
    return (config.model.mixer == "attention" and config.model.position_embedding != "learned"
            and kwargs.get("positional", "rope") == "rope" and not kwargs.get("rope_scaling"))


def run(config, workdir: str) -> Dict[str, Any]:
    """Train the runs; ``metrics.json`` with exact match per run and length, ``accuracy_vs_length.png``."""
    results = train_runs(config, workdir)
    report = Report(workdir, "length_generalization")
    scalings = [s.strip() for s in config.experiment.rope_scalings.split(",") if s.strip()]
    for name, summary in results.items():
        run_config = summary["config"]
        params = summary["state"].params
        train_len = int(run_config.data.task_kwargs.get("max_len", 0) or 0)
        lengths = {n: eval_length(run_config, n, "max_len") for n in (run_config.evals or {"eval": {}})}
        variants = {position_scheme(run_config): evaluate(run_config, params)}
        if _uses_plain_rope(run_config):
            train_seq = _train_seq_len(run_config)
            for scaling in scalings:
                def overrides(task, scaling=scaling):
                    factor = max(task.seq_len / train_seq, 1.0)
                    return {"rope_scaling": scaling, "rope_scale_factor": factor}
                variants[f"{position_scheme(run_config)}+{scaling}"] = evaluate(run_config, params, overrides)
        report.add_run(name, summary, task=run_config.data.task, train_max_len=train_len,
                       exact_match={label: {n: s["exact_match"] for n, s in scores.items()}
                                    for label, scores in variants.items()})
        for label, scores in variants.items():
            for eval_name, score in scores.items():
                if lengths.get(eval_name) is not None:
                    report.add_point(f"exact_match_{run_config.data.task}", label, lengths[eval_name],
                                     score["exact_match"])
    panels = {k.split("exact_match_", 1)[1]: v for k, v in sorted(report.curves.items())}
    if panels:
        report.plot("accuracy_vs_length", "instance length n", "exact match", panels=panels)
    return report.write()


def _train_seq_len(config) -> int:
    from sequax.experiments.evaluate import make_config_task

    return int(make_config_task(config, {}).seq_len)
