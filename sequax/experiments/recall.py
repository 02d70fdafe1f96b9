"""Synthetic recall: MQAR width x length sweeps, induction heads, selective copying, passkey.

Every run of a ``configs/recall/<name>`` config is trained, then each of its
evaluations is scored per token and per sequence
(:func:`sequax.experiments.evaluate.evaluate`). Two plots, when the runs
call for them:

- ``mqar_width.png`` (Zoology's figure): the first evaluation's token
  accuracy against ``model.d_model``, one line per mixer, one panel per
  training ``seq_len`` -- drawn when the runs span several widths;
- ``accuracy_vs_length.png``: exact match against each evaluation's
  ``seq_len``, one line per run -- drawn when evaluations change ``seq_len``
  (induction heads trained at 256 and evaluated to 16K, passkey depths).
"""

from __future__ import annotations

from typing import Any, Dict

from sequax.experiments.evaluate import eval_length, evaluate
from sequax.experiments.runner import Report, get, train_runs


def run(config, workdir: str) -> Dict[str, Any]:
    """Train the runs; ``metrics.json`` with every evaluation's accuracies, and the plots above."""
    results = train_runs(config, workdir)
    report = Report(workdir, "recall")
    widths = {int(get(r["config"], "model.d_model")) for r in results.values()}
    for name, summary in results.items():
        run_config = summary["config"]
        scores = evaluate(run_config, summary["state"].params)
        report.add_run(name, summary, mixer=run_config.model.mixer, d_model=int(run_config.model.d_model),
                       seq_len=int(get(run_config, "data.task_kwargs.seq_len", 0) or 0), evaluations=scores)
        first = next(iter(scores))
        train_len = get(run_config, "data.task_kwargs.seq_len")
        report.add_point(f"width_T{train_len}", run_config.model.mixer, run_config.model.d_model,
                         scores[first]["token_accuracy"])
        lengths = {n: eval_length(run_config, n, "seq_len") for n in scores}
        if len(set(lengths.values())) > 1:
            for eval_name, score in scores.items():
                report.add_point("accuracy_vs_length", name, lengths[eval_name], score["exact_match"])
    if len(widths) > 1:
        panels = {f"T = {k.split('T', 1)[1]}": v for k, v in sorted(report.curves.items()) if k.startswith("width_T")}
        report.plot("mqar_width", "model dimension", "accuracy", logx=True, panels=panels)
    if "accuracy_vs_length" in report.curves:
        report.plot("accuracy_vs_length", "evaluation length", "exact match", title="recall", logx=True)
    return report.write()
