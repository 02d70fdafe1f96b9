"""experiments/recall.py: the MQAR width plot and the accuracy-vs-length plot at tiny sizes; the CLI."""

import json
import os
import subprocess
import sys

import configs
from sequax.experiments import recall
from tests.experiments.tiny import scalars, tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_induction_heads_train_at_one_length_and_are_scored_at_longer_ones(tmp_path):
    config = tiny(configs.get("recall/induction_heads", "attention"))
    config.data.task_kwargs.seq_len = 32
    config.evals = {"len_32": {"task_kwargs": {"seq_len": 32}, "num_batches": 1},
                    "len_128": {"task_kwargs": {"seq_len": 128}, "num_batches": 1, "batch_size": 2}}
    summary = recall.run(config, str(tmp_path))
    points = dict(summary["curves"]["accuracy_vs_length"]["attention"])
    assert sorted(points) == [32.0, 128.0]
    scores = summary["runs"]["attention"]["evaluations"]
    assert scores["len_128"]["seq_len"] == 128 and points[128.0] == scores["len_128"]["exact_match"]
    # One answer per sequence: exact match is token accuracy, and the trainer's own number.
    run = summary["runs"]["attention"]
    assert scores["len_32"]["exact_match"] == scores["len_32"]["token_accuracy"] == run["len_32_accuracy"]
    assert summary["plots"] == ["accuracy_vs_length.png"]


def test_recall_cli_sweeps_widths_and_plots_accuracy_against_width(tmp_path):
    """experiments/recall.py with a config name, its :ARG and --config overrides, end to end."""
    workdir = tmp_path / "mqar"
    script = os.path.join(ROOT, "experiments", "recall.py")
    overrides = ["--config.experiment.only=attention_T64_d64,attention_T64_d128", "--config.train.num_steps=2",
                 "--config.train.batch_size=4", "--config.eval.num_batches=1", "--config.eval.every=2",
                 "--config.checkpoint.every=2", "--config.model.num_layers=1"]
    done = subprocess.run([sys.executable, script, "--config", "recall/mqar_sweep:attention", "--workdir",
                           str(workdir), *overrides], capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"wrote {workdir}/metrics.json and mqar_width.png" in done.stdout
    report = json.load(open(workdir / "metrics.json"))
    assert sorted(report["runs"]) == ["attention_T64_d128", "attention_T64_d64"]
    points = dict(report["curves"]["width_T64"]["attention"])
    assert sorted(points) == [64.0, 128.0]
    for run in report["runs"].values():  # the plotted point is the run's own evaluation
        assert run["step"] == 2 and points[float(run["d_model"])] == run["eval_accuracy"]
    assert {x for x, _ in scalars(workdir / "report")["width_T64/attention"]} == {64, 128}
    assert os.path.getsize(workdir / "mqar_width.png") > 1000
    bad = subprocess.run([sys.executable, script, "--config", "recall/mqar_sweep:nosuchmixer", "--workdir",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no recall settings for ['nosuchmixer']" in bad.stderr
