"""Byte-level language modelling: train the runs of a ``configs/lm/<name>`` config, report bits per byte.

Bits per byte of an evaluation is its loss (nats per predicted byte) / ln 2.
``metrics.json`` lists each run's final bits per byte per evaluation;
``bits_per_byte.png`` draws them against the step, one line per run and
evaluation. Sample from a trained run with ``experiments/sample.py``
(:mod:`sequax.experiments.sampling`).
"""

from __future__ import annotations

import math
from typing import Any, Dict

from sequax.experiments.runner import Report, train_runs
from sequax.train.evaluation import DEFAULT_NAME
from sequax.train.metrics import read_log


def bits_per_byte(loss: float) -> float:
    """Nats per byte -> bits per byte."""
    return loss / math.log(2)


def run(config, workdir: str) -> Dict[str, Any]:
    """Train the runs; ``metrics.json`` with ``bits_per_byte`` per run and evaluation, ``bits_per_byte.png``."""
    import os

    results = train_runs(config, workdir)
    report = Report(workdir, "lm")
    for name, summary in results.items():
        run_config = summary["config"]
        evals = list(run_config.evals) or [DEFAULT_NAME]
        report.add_run(name, summary, bits_per_byte={e: bits_per_byte(summary[f"{e}_loss"]) for e in evals})
        for record in read_log(os.path.join(workdir, name)):
            for e in evals:
                if f"{e}/loss" in record:
                    report.add_point("bits_per_byte", f"{name}/{e}", record["step"],
                                     bits_per_byte(record[f"{e}/loss"]))
    report.plot("bits_per_byte", "step", "bits per byte", title="byte-level LM")
    return report.write()
