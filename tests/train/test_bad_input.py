"""Bad input ends in one clear error line and leaves the workdir as it was."""

import errno
import os
import re
import subprocess
import sys

import pytest

from sequax.train import train_and_evaluate, trainer
from sequax.train.workdir import WorkdirError, os_error
from tests.train.test_trainer import snapshot, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UNWRITABLE = "/sys/sequax_test_unwritable"  # no one can create anything there, root included (sysfs)


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
        ("--workdir_cannot_be_made", f"error: no permission to write {UNWRITABLE}; fix its permissions or pass"),
    ],
)
def test_script_prints_one_line(tmp_path, flag, message):
    workdir = tmp_path / "w"
    if flag == "--workdir_cannot_be_made":  # an OS error, not a ValueError
        workdir = os.path.join(UNWRITABLE, "w")
    flags = [flag] if flag.startswith("--config.") else []
    result = subprocess.run(
        [sys.executable, "experiments/train.py", "--config", "configs/quickstart.py",
         "--workdir", str(workdir), *flags],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.isdir(workdir)


@pytest.mark.parametrize("num_steps", [0, -5])
def test_no_steps_to_train_is_refused(tmp_path, num_steps):
    with pytest.raises(ValueError, match=f"train.num_steps must be positive, got {num_steps}; set it"):
        train_and_evaluate(tiny_config(num_steps=num_steps), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("file_at", ["w", "w/sub"])
def test_a_workdir_that_is_a_file_is_refused(tmp_path, file_at):
    (tmp_path / "w").write_text("a file")
    workdir = tmp_path / file_at
    with pytest.raises(ValueError, match="is a file, not a directory; pass a directory path for --workdir"):
        train_and_evaluate(tiny_config(num_steps=2), str(workdir))
    assert (tmp_path / "w").read_text() == "a file"


def test_a_workdir_that_cannot_be_created_is_one_line(tmp_path):
    with pytest.raises(WorkdirError, match=f"^no permission to write {UNWRITABLE}; fix its permissions or pass "
                       "a --workdir you can write to$"):
        train_and_evaluate(tiny_config(num_steps=2), os.path.join(UNWRITABLE, "w"))


@pytest.mark.parametrize(
    "code, message",
    [
        (errno.EACCES, "no permission to write {path}; fix its permissions or pass a --workdir you can write to"),
        (errno.ENOSPC, "no space left on the disk holding {path}; free some space or pass a --workdir on another"),
        (errno.EROFS, "{path} is on a read-only file system; pass a --workdir on a writable disk"),
    ],
)
def test_os_errors_writing_the_workdir_are_one_line(tmp_path, monkeypatch, code, message):
    """A read-only workdir, a full disk: the first write (config.json) fails, reported in one line."""
    path = str(tmp_path / "w" / "config.json")

    def failing_write(target, text):
        raise OSError(code, os.strerror(code), target)

    monkeypatch.setattr(trainer, "write_text", failing_write)
    with pytest.raises(WorkdirError, match="^" + re.escape(message.format(path=path))) as info:
        train_and_evaluate(tiny_config(num_steps=2), str(tmp_path / "w"))
    assert "\n" not in str(info.value)


def test_library_errors_naming_no_errno_are_recognised(tmp_path):
    """TensorStore reports a full disk as text: it still becomes the one-line error naming the path."""
    error = ValueError(f'RESOURCE_EXHAUSTED: Error writing "{tmp_path}/checkpoints/4/state/d/x": '
                       "No space left on device [source locations...]")
    converted = os_error(error, str(tmp_path))
    assert str(converted) == (f"no space left on the disk holding {tmp_path}/checkpoints/4/state/d/x; "
                              "free some space or pass a --workdir on another disk")
    assert os_error(ValueError("model.d_model must be positive"), str(tmp_path)) is None
