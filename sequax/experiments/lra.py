"""Long Range Arena: train each run of a ``configs/lra/<task>`` config, report test accuracy.

Each run's config carries a ``test`` evaluation (the whole test split, at the
end) beside its validation one; ``metrics.json`` lists every run's test
accuracy with the published number beside it (:data:`PUBLISHED`, from
``ANCHORS.md``), and ``lra.png`` draws both.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from sequax.experiments.runner import Report, train_runs

# Published test accuracy (%): LRA paper (Transformer), S4 v2, S4D-LegS, S5, SGConv.
PUBLISHED = {
    "listops": {"transformer": 36.37, "s4": 59.60, "s4d": 60.47, "s5": 62.15, "sgconv": 61.45},
    "text": {"transformer": 64.27, "s4": 86.82, "s4d": 86.18, "s5": 89.31, "sgconv": 89.20},
    "retrieval": {"transformer": 57.46, "s4": 90.90, "s4d": 89.46, "s5": 91.40, "sgconv": 91.11},
    "image": {"transformer": 42.44, "s4": 88.65, "s4d": 88.19, "s5": 88.00, "sgconv": 87.97},
    "pathfinder": {"transformer": 71.40, "s4": 94.20, "s4d": 93.06, "s5": 95.33, "sgconv": 95.46},
    "path_x": {"transformer": 50.0, "s4": 96.35, "s4d": 91.95, "s5": 98.58, "sgconv": 97.83},  # Transformer: fails
}
TASK_NAMES = {"listops": "listops", "lra_text": "text", "lra_retrieval": "retrieval", "lra_image": "image"}


def lra_task(config) -> str:
    """The LRA task a config trains: listops, text, retrieval, image, pathfinder or path_x."""
    if config.data.task == "pathfinder":
        return "path_x" if int(config.data.task_kwargs.get("resolution", 32)) >= 128 else "pathfinder"
    return TASK_NAMES.get(config.data.task, config.data.task)


def model_name(config) -> str:
    return "transformer" if config.model.mixer == "attention" else config.model.mixer


def published(config) -> Optional[float]:
    return PUBLISHED.get(lra_task(config), {}).get(model_name(config))


def run(config, workdir: str) -> Dict[str, Any]:
    """Train the runs; ``metrics.json`` with ``test_accuracy`` and ``published`` (%) per run, ``lra.png``."""
    results = train_runs(config, workdir)
    report = Report(workdir, "lra")
    for name, summary in results.items():
        run_config = summary["config"]
        accuracy = summary.get("test_accuracy", summary.get("eval_accuracy"))
        report.add_run(name, summary, task=lra_task(run_config), model=model_name(run_config),
                       test_accuracy_percent=100 * accuracy, published_percent=published(run_config))
        report.add_point("test_accuracy", name, 0, accuracy)
    _bar_plot(report)
    return report.write()


def _bar_plot(report: Report) -> None:
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.runs)
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.6))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [report.runs[n]["test_accuracy_percent"] for n in names], 0.4, label="sequax")
    ax.bar([x + 0.2 for x in xs], [report.runs[n]["published_percent"] or 0 for n in names], 0.4,
           label="published")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy (%)", ylim=(0, 100), title="Long Range Arena")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(report.workdir, "lra.png"), dpi=100)
    plt.close(fig)
    report.plots.append("lra.png")
