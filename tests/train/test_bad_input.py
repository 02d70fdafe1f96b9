"""Bad input ends in one clear error line and leaves the workdir as it was."""

import os
import subprocess
import sys

import pytest

from sequax.train import train_and_evaluate
from tests.train.test_trainer import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def snapshot(directory):
    """Every file under ``directory`` with its size and modification time."""
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            stat = os.stat(path)
            out[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained")
    train_and_evaluate(tiny_config(num_steps=2), str(workdir))
    return workdir


def _with(**changes):
    config = tiny_config(num_steps=2)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    return config


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(model__mixer="transformerz"), "unknown mixer 'transformerz'; choose one of"),
        (dict(data__task="mqarr"), "unknown task 'mqarr'; choose one of"),
        (dict(optimizer__name="adamq"), "unknown optimizer 'adamq'; choose one of"),
        (dict(model__num_heads=3), r"model.num_heads \(3\) must divide model.d_model \(32\)"),
        (dict(model__mixer_kwargs=dict(num_kv_heads=3, positional="rope")),
         r"num_kv_heads \(3\) must divide num_heads"),
        (dict(model__mixer_kwargs=dict(colour="red")), "mixer 'attention' has no option"),
        (dict(model__d_model=64), "was written by a model with other parameters"),
    ],
)
def test_bad_input_raises_and_leaves_workdir(trained_workdir, changes, message):
    before = snapshot(trained_workdir)
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(_with(**changes), str(trained_workdir))
    assert snapshot(trained_workdir) == before


def test_unknown_config_key_is_refused(trained_workdir):
    config = tiny_config()
    config.train.num_stepz = 3  # a typo in a config file
    before = snapshot(trained_workdir)
    with pytest.raises(ValueError, match="unknown config key.*train.num_stepz"):
        train_and_evaluate(config, str(trained_workdir))
    assert snapshot(trained_workdir) == before


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.model.mixer=nope", "error: unknown mixer 'nope'; choose one of"),
        ("--config.model.widht=3", "error: a --config override does not fit the config"),
    ],
)
def test_script_prints_one_line(tmp_path, flag, message):
    result = subprocess.run(
        [sys.executable, "experiments/train.py", "--config", "configs/quickstart.py",
         "--workdir", str(tmp_path / "w"), flag],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()
