"""The runs of an experiment config, trained one by one, and the experiment's outputs.

``config.experiment.runs`` maps a run name to nested overrides of the config
(``{"mamba_d64": {"model": {"mixer": "mamba", "d_model": 64}}}``); no runs
means one run named ``run``. :func:`train_runs` trains each selected run
(``config.experiment.only``) with :func:`sequax.train.train_and_evaluate` in
``WORKDIR/<run>``, so every run resumes from its own checkpoints and a
finished one is only read back. :class:`Report` collects what the experiment
reports and writes ``WORKDIR/metrics.json``, TensorBoard scalars (``step`` is
the x value of a curve: a width, a length) and plots.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import ml_collections

from sequax.train import train_and_evaluate, validate
from sequax.train.overrides import apply_overrides
from sequax.train.workdir import check_workdir, write_json

DEFAULT_RUN = "run"


FREE_FORM_KEYS = ("mixer_kwargs", "task_kwargs", "split_sizes", "evals")


def _plain(value):
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def merge(config: ml_collections.ConfigDict, overrides: Dict[str, Any], where: str) -> None:
    """Set the nested ``overrides`` in ``config`` (in place); ``ValueError`` naming a bad key or value.

    A free-form section (``mixer_kwargs``, ``task_kwargs``, ``split_sizes``,
    ``evals``) given in ``overrides`` replaces the config's whole; other
    sections merge key by key and take only the schema's keys.
    """
    for key, value in dict(overrides).items():
        path = f"{where}.{key}"
        if key not in config:
            raise ValueError(f"{path} is not a config key; see sequax/train/config.py for the keys")
        if key in FREE_FORM_KEYS:
            config[key] = _plain(value)
        elif isinstance(config[key], ml_collections.ConfigDict):
            if not isinstance(value, (dict, ml_collections.ConfigDict)):
                raise ValueError(f"{path} is a section; give a dict of its keys")
            merge(config[key], dict(value), path)
        else:
            try:
                config[key] = value
            except TypeError:
                raise ValueError(f"{path} takes a {type(config[key]).__name__}, got {value!r}") from None


def command_line_overrides(config: ml_collections.ConfigDict) -> List[Tuple[str, str]]:
    """The ``(KEY, VALUE)`` overrides typed on the command line (``experiment.command_line``), less the
    ``experiment.*`` ones (they select runs; a run has none of its own)."""
    lines = [line for line in str(config.experiment.get("command_line", "")).split("\n") if line]
    pairs = [tuple(line.split("=", 1)) for line in lines]
    return [(key, text) for key, text in pairs if not key.startswith("experiment.")]


def run_configs(config: ml_collections.ConfigDict) -> Dict[str, ml_collections.ConfigDict]:
    """``{run name: its full config}``; each has no ``experiment.runs`` of its own.

    A run is the config with its overrides merged in, then the command line's
    overrides again (what is typed wins over what a run sets).
    """
    runs = dict(config.experiment.runs) or {DEFAULT_RUN: {}}
    typed = command_line_overrides(config)
    out = {}
    for name, overrides in runs.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"experiment.runs: {name!r} is no run name; use a word without '/'")
        run = copy.deepcopy(config)
        run.experiment.runs = ml_collections.ConfigDict()
        merge(run, dict(overrides or {}), f"experiment.runs.{name}")
        try:
            apply_overrides(run, typed)
        except ValueError as e:
            raise ValueError(f"run {name!r}: a --config override does not fit it after its own settings: "
                             f"{e}") from None
        validate(run)
        out[name] = run
    return out


def selected(names: List[str], only: str) -> List[str]:
    """The names ``only`` picks (comma-separated names or fnmatch patterns; '' picks all)."""
    if not only.strip():
        return list(names)
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"experiment.only={only!r} picks none of the runs: {', '.join(names)}")
    return chosen


def train_runs(config, workdir: str, log: Callable[[str], None] = print) -> Dict[str, Dict[str, Any]]:
    """Train (or read back) every selected run; ``{run: summary}``, each with its ``"state"`` and ``"config"``."""
    check_workdir(workdir)
    configs = run_configs(config)
    names = selected(list(configs), config.experiment.only)
    results = {}
    for i, name in enumerate(names, 1):
        log(f"[{i}/{len(names)}] {name}")
        summary = train_and_evaluate(configs[name], os.path.join(workdir, name))
        results[name] = {**summary, "config": configs[name]}
    return results


def get(config, dotted: str, default=None):
    """``config`` value at ``a.b.c`` (``default`` when a part is missing)."""
    node = config
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            return default
    return node


class Report:
    """The experiment's outputs in ``workdir``: ``metrics.json``, TensorBoard scalars, plots."""

    def __init__(self, workdir: str, experiment: str):
        self.workdir, self.experiment = workdir, experiment
        self.runs: Dict[str, Dict[str, Any]] = {}
        self.curves: Dict[str, Dict[str, List[List[float]]]] = {}  # plot -> line -> [[x, y], ...]
        self.plots: List[str] = []

    def add_run(self, name: str, summary: Dict[str, Any], **extra) -> None:
        """A run's scalar results (``state`` and ``config`` are left out)."""
        kept = {k: v for k, v in summary.items() if k not in ("state", "config", "history")}
        self.runs[name] = {**kept, **extra}

    def add_point(self, plot: str, line: str, x: float, y: float) -> None:
        self.curves.setdefault(plot, {}).setdefault(line, []).append([float(x), float(y)])

    def plot(self, name: str, xlabel: str, ylabel: str, title: str = "", logx: bool = False,
             panels: Optional[Dict[str, Dict[str, List[List[float]]]]] = None) -> str:
        """``<name>.png``: the lines of curve ``name`` (or several ``panels``), one per line name."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = panels or {title: self.curves.get(name, {})}
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
        for ax, (panel, lines) in zip(axes[0], panels.items()):
            for line, points in sorted(lines.items()):
                points = sorted(points)
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=line)
            ax.set(xlabel=xlabel, ylabel=ylabel, title=panel)
            if logx:
                ax.set_xscale("log", base=2)
            ax.grid(alpha=0.3)
            if lines:
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(self.workdir, f"{name}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        self.plots.append(os.path.basename(path))
        return path

    def write(self) -> Dict[str, Any]:
        """``metrics.json`` and TensorBoard scalars (``<curve>/<line>`` at step = x); returns the summary."""
        from tensorboardX import SummaryWriter

        os.makedirs(self.workdir, exist_ok=True)
        writer = SummaryWriter(logdir=os.path.join(self.workdir, "report"))
        for curve, lines in self.curves.items():
            for line, points in lines.items():
                for x, y in sorted(points):
                    writer.add_scalar(f"{curve}/{line}", y, int(round(x)))
        writer.close()
        summary = {"experiment": self.experiment, "runs": self.runs, "curves": self.curves, "plots": self.plots}
        write_json(os.path.join(self.workdir, "metrics.json"), summary)
        return summary


def read_report(workdir: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(workdir, "metrics.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
