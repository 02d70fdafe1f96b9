"""Where metrics go: TensorBoard event files, ``metrics.jsonl``, ``metrics.json`` and ``curves.png``.

``metrics.jsonl`` is the run's history, one JSON object per write
(``{"step": 50, "train/loss": 1.23, ...}``), appended and flushed as training
goes. A resumed run keeps the lines up to the step it restored and drops the
rest (and a line a kill cut short), then appends: so the history survives any
number of interruptions and equals an uninterrupted run's. TensorBoard is told
the same (``purge_step``) so it hides the dropped steps. ``metrics.json`` (the
summary plus the history) and ``curves.png`` are written when a run ends.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List

from tensorboardX import SummaryWriter

from sequax.train.workdir import write_json

LOG = "metrics.jsonl"
SUMMARY = "metrics.json"


def read_log(workdir: str) -> List[Dict[str, float]]:
    """The complete lines of ``workdir``'s ``metrics.jsonl`` (none if it is missing)."""
    path = os.path.join(workdir, LOG)
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


def history_of(records: List[Dict[str, float]]) -> Dict[str, List[List[float]]]:
    """``{name: [[step, value], ...]}`` from log records."""
    history: Dict[str, List[List[float]]] = {}
    for record in records:
        for name, value in record.items():
            if name != "step":
                history.setdefault(name, []).append([record["step"], value])
    return history


def read_summary(workdir: str):
    """``metrics.json`` as a dict, or ``None`` if it is missing or unreadable."""
    try:
        with open(os.path.join(workdir, SUMMARY)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class MetricsWriter:
    """Writes scalars to TensorBoard (no TensorFlow needed) and to the history log.

    ``resume_step`` is the step the run restored (0 for a fresh start): the
    history after it is dropped before anything is appended.
    """

    def __init__(self, workdir: str, *, resume_step: int = 0):
        self.workdir = workdir
        records = [r for r in read_log(workdir) if r["step"] <= resume_step]
        path = os.path.join(workdir, LOG)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(tmp, path)
        self.history = history_of(records)
        self.log = open(path, "a")
        self.writer = SummaryWriter(logdir=workdir, purge_step=resume_step + 1)

    def write(self, step: int, scalars: Dict[str, float]) -> None:
        record = {"step": int(step)}
        for name, value in scalars.items():
            self.writer.add_scalar(name, float(value), step)
            self.history.setdefault(name, []).append([int(step), float(value)])
            record[name] = float(value)
        self.log.write(json.dumps(record) + "\n")
        self.flush()

    def flush(self) -> None:
        self.log.flush()
        self.writer.flush()

    def close(self):
        self.log.close()
        self.writer.close()

    def save_summary(self, summary: Dict[str, float]) -> str:
        path = os.path.join(self.workdir, SUMMARY)
        write_json(path, {**summary, "history": self.history})
        return path

    def save_plot(self) -> str:
        """``curves.png``: every ``*/loss`` against step (left), every ``*/accuracy`` (right)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            for name in sorted(n for n in self.history if n.endswith("/" + metric)):
                steps, values = zip(*self.history[name])
                ax.plot(steps, values, label=name)
        ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
        ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        fig.tight_layout()
        path = os.path.join(self.workdir, "curves.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
