"""Every experiment config resolves to valid runs whose models build, gives its launch command, and the
LRA recipes carry the published hyper-parameters."""

import inspect
import os

import numpy as np
import pytest

import configs
from configs.lra import _recipes
from sequax.data import get_task
from sequax.experiments.runner import run_configs
from sequax.models import build_model
from sequax.train import train_and_evaluate
from tests.experiments.tiny import tiny

EXPERIMENTS = ("lra", "recall", "length_generalization", "lm")
NAMES = [n for n in configs.available() if n.split("/")[0] in EXPERIMENTS]


def test_each_experiment_has_configs():
    assert {n.split("/")[0] for n in NAMES} == set(EXPERIMENTS)


@pytest.mark.parametrize("name", NAMES)
def test_config_runs_build_and_the_docstring_launches_it(name):
    experiment = name.split("/")[0]
    source = open(configs.path(name)).read()
    assert f"python experiments/{experiment}.py --config {name}" in source
    runs = run_configs(configs.get(name))
    assert runs
    for run in runs.values():
        build_model(run.model)  # every mixer option is one the mixer has
        task_options = inspect.signature(get_task(run.data.task).__init__).parameters
        assert set(run.data.task_kwargs) <= set(task_options)
        for entry in (run.evals or {}).values():
            assert set(entry.get("task_kwargs", {})) <= set(task_options)


@pytest.mark.parametrize("task", list(_recipes.TASKS))
def test_every_lra_mixer_has_a_recipe_for_every_task(task):
    runs = run_configs(configs.get(f"lra/{task}", "all"))
    assert sorted(runs) == sorted(f"{task}_{m}" for m in _recipes.MIXERS)
    for name, run in runs.items():
        assert run.evals.test.split == "test" and run.evals.test.num_batches == "full"
        bidirectional = name.rsplit("_", 1)[1] not in ("mamba", "gla")
        assert run.model.causal == (not bidirectional)


def test_s5_recipes_are_the_published_ones():
    """S5's depth / H / P / J, SSM lr, epochs and batch (ANCHORS.md; lindermanlab/S5's scripts)."""
    expected = {"listops": (8, 128, 16, 8, 1e-3, 40, 50, 96_000),
                "pathfinder": (6, 192, 256, 8, 9e-4, 200, 64, 160_000),
                "path_x": (6, 128, 256, 16, 6e-4, 75, 32, 160_000)}
    for task, (depth, h, p, j, ssm_lr, epochs, batch, n) in expected.items():
        (run,) = run_configs(configs.get(f"lra/{task}", "s5")).values()
        assert (run.model.num_layers, run.model.d_model) == (depth, h)
        assert (run.model.mixer_kwargs.state_size, run.model.mixer_kwargs.blocks) == (p, j)
        assert run.optimizer.ssm_learning_rate == ssm_lr and run.train.batch_size == batch
        assert run.train.num_steps == epochs * -(-n // batch)
        assert not run.model.causal
    (pathx,) = run_configs(configs.get("lra/path_x", "s5")).values()
    assert pathx.model.mixer_kwargs.dt_min == 1e-4 and pathx.data.task_kwargs.resolution == 128
    (transformer,) = run_configs(configs.get("lra/listops", "transformer")).values()
    assert (transformer.model.num_layers, transformer.model.d_model, transformer.model.num_heads) == (6, 512, 8)
    np.testing.assert_allclose(transformer.optimizer.learning_rate, 0.05 / np.sqrt(1000))  # rsqrt peak


@pytest.mark.parametrize("mixer", ["transformer"])  # s5: test_lra.py; each mixer's own step: test_configs.py
def test_lra_recipes_take_a_training_step_on_listops(mixer, tmp_path):
    """Bidirectional attention with learned positions on a tiny ListOps."""
    config = tiny(configs.get("lra/listops", mixer), steps=1, d_model=8)
    config.data.task_kwargs = dict(num_train=8, num_validation=4, num_test=4, min_length=8, max_length=32,
                                   max_depth=3, num_workers=1, cache_dir=str(tmp_path / "cache"))
    config.evals = {"test": {"split": "test", "num_batches": "full"}}
    (run,) = run_configs(config).values()
    kwargs = dict(run.model.mixer_kwargs)
    for key in ("max_length", "l_max"):
        if key in kwargs:
            kwargs[key] = 32
    run.model.mixer_kwargs = kwargs
    run.model.max_length = min(run.model.max_length, 32) if run.model.max_length else 0
    summary = train_and_evaluate(run, str(tmp_path / "w"))
    assert summary["step"] == 1 and np.isfinite(summary["train_loss"]) and 0 <= summary["test_accuracy"] <= 1
    assert os.path.exists(tmp_path / "w" / "metrics.json")


def test_the_command_line_wins_over_a_runs_own_settings():
    """``--config.optimizer.learning_rate`` holds for every run of a sweep, even runs that set a rate
    (``experiment.command_line``, recorded by the CLI); a typed option no run's mixer has is refused."""
    config = configs.get("recall/mqar_sweep", "gla,attention")
    assert {round(r.optimizer.learning_rate, 6) for r in run_configs(config).values()} == {1e-3, 3e-3}
    config.experiment.command_line = "optimizer.learning_rate=0.0005\ntrain.num_steps=7\nexperiment.only=gla_*"
    runs = run_configs(config)
    assert {r.optimizer.learning_rate for r in runs.values()} == {0.0005}
    assert {r.train.num_steps for r in runs.values()} == {7}
    config.experiment.command_line = "model.mixer_kwargs.d_state=8"
    with pytest.raises(ValueError, match="run '(gla|attention)_.*has no option 'd_state'"):
        run_configs(config)


def test_the_cli_records_what_was_typed():
    from absl import flags

    from sequax.experiments import cli

    try:
        cli.parse_flags(["prog", "--config", "recall/mqar_sweep:gla", "--workdir", "/tmp/unused",
                         "--config.optimizer.learning_rate=0.0005", "--config.experiment.only=gla_T64_*"])
        config = cli._CONFIG.value
        assert config.experiment.command_line == "optimizer.learning_rate=0.0005\nexperiment.only=gla_T64_*"
        assert {r.optimizer.learning_rate for r in run_configs(config).values()} == {0.0005}
    finally:
        flags.FLAGS.unparse_flags()  # absl's flags are process-wide
