"""Every config in configs/ builds a model and takes a training step at a tiny size."""

import glob
import importlib.util
import os

import pytest

from sequax.train import train_and_evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(
    os.path.relpath(path, ROOT)
    for path in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    if not os.path.basename(path).startswith("_")
)


def load_config(relpath):
    spec = importlib.util.spec_from_file_location("config_under_test", os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_configs_exist():
    assert "configs/quickstart.py" in CONFIG_FILES


@pytest.mark.parametrize("relpath", CONFIG_FILES)
def test_config_trains_a_step(relpath, tmp_path):
    config = load_config(relpath)
    assert "python experiments/train.py --config " + relpath in (
        open(os.path.join(ROOT, relpath)).read()
    ), "the config's docstring gives its launch command"
    config.train.num_steps = 1
    config.train.batch_size = 2
    config.eval.num_batches = 1
    config.model.num_layers = 1
    config.checkpoint.every = 0
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["step"] == 1
    assert summary["train_loss"] == summary["train_loss"]  # not NaN
