"""experiments/train.py's command line: config names, typed overrides, one-line errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import configs
from sequax.models import build_model
from sequax.train.overrides import apply_overrides, split_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "experiments", "train.py")
TINY = ["--config.model.num_layers=1", "--config.train.num_steps=1", "--config.train.batch_size=2",
        "--config.eval.num_batches=1", "--config.checkpoint.every=0"]


def test_every_config_file_has_a_name():
    files = sorted(
        os.path.relpath(os.path.join(base, f), os.path.join(ROOT, "configs"))[:-3]
        for base, _, names in os.walk(os.path.join(ROOT, "configs"))
        for f in names if f.endswith(".py") and not f.startswith("_")
    )
    assert configs.available() == files
    assert "quickstart" in files and "mixers/gla" in files
    for name in files:
        assert configs.path(name) == os.path.join(ROOT, "configs", name + ".py")


def test_config_names_accept_a_path_spelling_and_suggest():
    assert configs.canonical_name("configs/mixers/gla.py") == "mixers/gla"
    assert configs.get("mixers/gla").model.mixer == "gla"
    with pytest.raises(ValueError, match=r"no config named 'gla' \(did you mean mixers/gla\?\)"):
        configs.path("gla")


def test_split_overrides_forms():
    rest, overrides = split_overrides(
        ["prog", "--config", "quickstart", "--config.train.seed=3", "--config.model.mixer", "gla",
         "--noconfig.model.causal", "--workdir=/w", "--config.optimizer.learning_rate", "-1"]
    )
    assert rest == ["prog", "--config", "quickstart", "--workdir=/w"]
    assert overrides == [("train.seed", "3"), ("model.mixer", "gla"), ("model.causal", "false"),
                         ("optimizer.learning_rate", "-1")]
    with pytest.raises(ValueError, match="--config.train.seed needs a value"):
        split_overrides(["prog", "--config.train.seed"])


def test_overrides_get_the_keys_types():
    config = configs.get("quickstart")
    apply_overrides(config, [
        ("train.num_steps", "7"), ("optimizer.learning_rate", "1"), ("model.causal", "False"),
        ("model.mixer_kwargs.window", "(32, 0)"), ("model.mixer_kwargs.num_kv_heads", "2"),
        ("model.mixer_kwargs.softcap", "None"), ("model.mixer_kwargs.positional", "alibi"),
        ("data.task_kwargs.power_a", "1"), ("data.task_kwargs.num_kv_pairs", "4"),
    ])
    assert config.train.num_steps == 7 and type(config.train.num_steps) is int
    assert config.optimizer.learning_rate == 1.0 and type(config.optimizer.learning_rate) is float
    assert config.model.causal is False
    kwargs = config.model.mixer_kwargs
    assert kwargs.window == (32, 0) and kwargs.num_kv_heads == 2 and kwargs.softcap is None
    assert kwargs.positional == "alibi"
    assert config.data.task_kwargs.power_a == 1.0 and type(config.data.task_kwargs.power_a) is float
    assert config.data.task_kwargs.num_kv_pairs == 4 and config.data.task_kwargs.seq_len == 64
    apply_overrides(config, [("model.mixer_kwargs.window", "16")])  # an option may change type
    assert config.model.mixer_kwargs.window == 16


def test_mixer_option_reaches_the_module():
    """Options are checked against the mixer the run uses, whatever the order on the line."""
    config = configs.get("quickstart")
    apply_overrides(config, [("model.mixer_kwargs.d_state", "8"), ("model.mixer", "mamba")])
    model = build_model(config.model)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
    assert shapes["params"]["block_0"]["mixer"]["A_log"].shape[-1] == 8


def test_named_evaluations_and_split_sizes_from_the_command_line():
    config = configs.get("quickstart")
    apply_overrides(config, [
        ("evals.long.task_kwargs.seq_len", "128"), ("evals.long.split", "test"),
        ("evals.short.num_batches", "full"), ("evals.short.every", "0"),
        ("evals.whole", "{'split': 'validation', 'num_batches': 2}"), ("data.split_sizes.test", "64"),
    ])
    assert config.evals.long.to_dict() == {"task_kwargs": {"seq_len": 128}, "split": "test"}
    assert type(config.evals.long.task_kwargs.seq_len) is int
    assert config.evals.short.num_batches == "full" and config.evals.short.every == 0
    assert config.evals.whole.num_batches == 2 and config.data.split_sizes.test == 64
    with pytest.raises(ValueError, match=r"an evaluation takes split, .*\(did you mean split\?\)"):
        apply_overrides(configs.get("quickstart"), [("evals.long.splt", "test")])
    with pytest.raises(ValueError, match="task 'mqar' has no option 'seq_lenn'.*did you mean seq_len"):
        apply_overrides(configs.get("quickstart"), [("evals.long.task_kwargs.seq_lenn", "8")])
    with pytest.raises(ValueError, match="a split is one of train, validation, test"):
        apply_overrides(configs.get("quickstart"), [("data.split_sizes.tset", "8")])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([("train.num_stpes", "5")],
         "train.num_stpes is not a config key (did you mean train.num_steps?); "
         "the keys are documented in sequax/train/config.py"),
        ([("model.mixer", "mamba"), ("model.mixer_kwargs.d_stat", "8")],
         "mixer 'mamba' has no option 'd_stat' in model.mixer_kwargs (did you mean d_state?); "
         "its options, documented in sequax/mixers/mamba.py: d_state, "),
        ([("data.task_kwargs.num_kv_pair", "3")],
         "task 'mqar' has no option 'num_kv_pair' in data.task_kwargs (did you mean num_kv_pairs?); "
         "its options, documented in sequax/data/synthetic.py: vocab_size, "),
        ([("train.num_steps", "2.5")], "train.num_steps takes an integer, got '2.5'"),
        ([("model.causal", "maybe")], "model.causal takes true or false, got 'maybe'"),
        ([("model.mixer_kwargs.num_kv_heads", "two")],
         "model.mixer_kwargs.num_kv_heads takes an integer, got 'two'"),
        ([("train", "3")], "train is a section; override its keys one by one (train.KEY=VALUE)"),
        ([("model.mixer", "nope"), ("model.mixer_kwargs.x", "1")], "unknown mixer 'nope'; choose one of"),
    ],
)
def test_override_mistakes_are_one_line(overrides, message):
    with pytest.raises(ValueError) as error:
        apply_overrides(configs.get("quickstart"), overrides)
    text = str(error.value)
    assert text.startswith(message), text
    assert "\n" not in text and "\\'" not in text


def run_script(*args, cwd):
    return subprocess.run([sys.executable, TRAIN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_script_sets_a_mixer_option_from_any_directory(tmp_path):
    """A config name and a mixer option the config file does not set, run from outside the repo."""
    workdir = tmp_path / "run"
    result = run_script("--config", "quickstart", "--workdir", str(workdir),
                        "--config.model.mixer_kwargs.num_kv_heads=2", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["mixer_kwargs"] == {"num_kv_heads": 2}
    assert saved["train"]["num_steps"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "quickstart", "--config.model.mixer=mamba", "--config.model.mixer_kwargs.d_stat=8"],
         "error: a --config override does not fit the config: mixer 'mamba' has no option 'd_stat'"),
        (["--config", "gla"], "error: --config gla: not a file, and no config named 'gla' "
                              "(did you mean mixers/gla?)"),
    ],
)
def test_script_mistakes_are_one_line(tmp_path, args, message):
    result = run_script(*args, "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()
