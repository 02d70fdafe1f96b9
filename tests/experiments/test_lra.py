"""experiments/lra.py end to end on a tiny generated ListOps: metrics.json, the plot, TensorBoard, resume."""

import json
import os

import configs
from sequax.experiments import lra
from tests.experiments.tiny import scalars, tiny


def test_lra_experiment_reports_test_accuracy_beside_the_published_one(tmp_path, capsys):
    config = tiny(configs.get("lra/listops", "s5"), steps=2, d_model=8)
    config.data.task_kwargs = dict(num_train=16, num_validation=4, num_test=6, min_length=8, max_length=32,
                                   max_depth=3, num_workers=1, cache_dir=str(tmp_path / "cache"))
    config.model.mixer_kwargs = dict(state_size=4, blocks=2)
    workdir = str(tmp_path / "w")
    summary = lra.run(config, workdir)
    (run,) = summary["runs"].values()
    assert run["task"] == "listops" and run["model"] == "s5" and run["published_percent"] == 62.15
    assert 0 <= run["test_accuracy_percent"] <= 100 and run["step"] == 2
    assert run["test_accuracy_percent"] == 100 * run["test_accuracy"]
    on_disk = json.load(open(os.path.join(workdir, "metrics.json")))
    assert on_disk["runs"]["listops_s5"]["published_percent"] == 62.15 and on_disk["plots"] == ["lra.png"]
    assert os.path.getsize(os.path.join(workdir, "lra.png")) > 1000
    assert os.path.exists(os.path.join(workdir, "listops_s5", "checkpoints"))  # the run's own workdir
    assert "validation/accuracy" in scalars(os.path.join(workdir, "listops_s5"))
    assert scalars(os.path.join(workdir, "report"))["test_accuracy/listops_s5"][0][1] == run["test_accuracy"]
    capsys.readouterr()
    again = lra.run(config, workdir)  # finished: read back, not retrained
    assert "is finished" in capsys.readouterr().out
    assert again["runs"] == summary["runs"]
