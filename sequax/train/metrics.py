"""Where metrics go: TensorBoard event files, ``metrics.json`` and ``curves.png``."""

from __future__ import annotations

import json
import os
from typing import Dict, List

from tensorboardX import SummaryWriter


class MetricsWriter:
    """Writes scalars to TensorBoard (no TensorFlow needed) and keeps a history."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.writer = SummaryWriter(logdir=workdir)
        self.history: Dict[str, List[List[float]]] = {}

    def write(self, step: int, scalars: Dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, float(value), step)
            self.history.setdefault(name, []).append([int(step), float(value)])
        self.writer.flush()

    def close(self):
        self.writer.close()

    def save_summary(self, summary: Dict[str, float]) -> str:
        path = os.path.join(self.workdir, "metrics.json")
        with open(path, "w") as f:
            json.dump({**summary, "history": self.history}, f, indent=1)
        return path

    def save_plot(self) -> str:
        """``curves.png``: train/eval loss and eval accuracy against step."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
        for name in ("train/loss", "eval/loss"):
            if name in self.history:
                steps, values = zip(*self.history[name])
                ax_loss.plot(steps, values, label=name)
        for name in ("train/accuracy", "eval/accuracy"):
            if name in self.history:
                steps, values = zip(*self.history[name])
                ax_acc.plot(steps, values, label=name)
        ax_loss.set(xlabel="step", ylabel="loss", yscale="log", title="loss")
        ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = os.path.join(self.workdir, "curves.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
