"""Training end to end at tiny sizes: loss goes down, outputs are written, resume is exact."""

import json
import os
import shutil

import jax
import numpy as np

from configs.quickstart import get_config
from sequax.train import train_and_evaluate
from sequax.train.trainer import TIMING_METRICS


def snapshot(directory):
    """Every file under ``directory`` with its size and modification time."""
    out = {}
    for base, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(base, name)
            stat = os.stat(path)
            out[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return out


def tiny_config(**train):
    config = get_config()
    config.model.d_model = 32
    config.model.num_heads = 2
    config.data.task_kwargs = dict(vocab_size=32, seq_len=32, num_kv_pairs=4)
    config.model.vocab_size = 32
    config.train.batch_size = 8
    config.train.num_steps = 30
    config.train.log_every = 5
    config.eval.every = 10
    config.eval.num_batches = 1
    config.optimizer.warmup_steps = 5
    config.checkpoint.every = 10
    for key, value in train.items():
        config.train[key] = value
    return config


def test_training_reduces_loss_and_writes_outputs(tmp_path, capsys):
    config = tiny_config(num_steps=40)
    summary = train_and_evaluate(config, str(tmp_path))
    assert capsys.readouterr().out.startswith(f"starting {tmp_path}\n")
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    for key in ("step", "train_loss", "eval_loss", "eval_accuracy", "tokens_per_second"):
        assert key in metrics
    assert metrics["step"] == 40 and metrics["tokens_per_second"] > 0
    losses = [value for _, value in metrics["history"]["train/loss"]]
    assert losses[-1] < losses[0] - 0.3
    assert summary["eval_loss"] == metrics["eval_loss"]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))
    assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == "40"

    # Running a finished workdir again changes nothing and says so.
    before = snapshot(tmp_path)
    again = train_and_evaluate(config, str(tmp_path))
    assert capsys.readouterr().out == (
        f"{tmp_path} is finished (step 40 of 40); nothing to do, its summary is in {tmp_path}/metrics.json\n"
    )
    assert snapshot(tmp_path) == before
    assert {k: v for k, v in again.items() if k != "state"} == {k: v for k, v in summary.items() if k != "state"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, summary["state"], again["state"])


def history_without_timing(workdir):
    history = json.load(open(os.path.join(workdir, "metrics.json")))["history"]
    return {name: values for name, values in history.items() if name not in TIMING_METRICS}


def test_resume_after_interruption_is_exact(tmp_path):
    config = tiny_config(num_steps=12)
    config.checkpoint.every = 4
    config.model.dropout = 0.1  # the RNG must be restored too
    straight = train_and_evaluate(config, str(tmp_path / "straight"))
    expected_history = history_without_timing(tmp_path / "straight")
    assert [step for step, _ in expected_history["train/loss"]] == [5, 10, 12]

    # A graceful stop inside a log window (step 7), then the rest.
    first = train_and_evaluate(config, str(tmp_path / "resumed"), stop_at_step=7)
    assert int(first["state"].step) == 7
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
    assert int(resumed["state"].step) == 12
    # Parameters, optimizer state, step and RNG, bit for bit; the same history and summary.
    jax.tree_util.tree_map(np.testing.assert_array_equal, straight["state"], resumed["state"])
    assert history_without_timing(tmp_path / "resumed") == expected_history
    assert {k: v for k, v in resumed.items() if k not in ("state", "tokens_per_second")} == {
        k: v for k, v in straight.items() if k not in ("state", "tokens_per_second")
    }

    # A kill after step 7 before its checkpoint, in the middle of a metrics write: the rerun restores
    # step 4, drops the history logged after it (step 5) and the cut line, and redoes them.
    train_and_evaluate(config, str(tmp_path / "killed"), stop_at_step=7)
    shutil.rmtree(tmp_path / "killed" / "checkpoints" / "7")
    with open(tmp_path / "killed" / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "train/lo')
    killed = train_and_evaluate(config, str(tmp_path / "killed"))
    jax.tree_util.tree_map(np.testing.assert_array_equal, straight["state"], killed["state"])
    assert history_without_timing(tmp_path / "killed") == expected_history


def test_stop_when_ends_the_run_after_an_evaluation_with_a_checkpoint(tmp_path):
    config = tiny_config(num_steps=12)
    config.eval.every = 4
    calls = []

    def solved(step, evals):
        calls.append((step, sorted(evals), sorted(evals["eval"])))
        return step == 8

    stopped = train_and_evaluate(config, str(tmp_path), stop_when=solved)
    assert calls == [(4, ["eval"], ["accuracy", "loss"]), (8, ["eval"], ["accuracy", "loss"])]
    assert stopped["step"] == 8 and int(stopped["state"].step) == 8
    assert stopped["eval_accuracy"] == json.load(open(tmp_path / "metrics.json"))["history"]["eval/accuracy"][-1][1]
    assert "8" in os.listdir(tmp_path / "checkpoints")
    finished = train_and_evaluate(config, str(tmp_path))  # the rerun resumes at 8 and trains to the end
    assert finished["step"] == 12


def test_data_parallel_mesh_matches_single_device(tmp_path):
    assert len(jax.devices()) >= 2
    config = tiny_config(num_steps=3)
    single = train_and_evaluate(config, str(tmp_path / "one"))
    config.mesh.data = 2
    sharded = train_and_evaluate(config, str(tmp_path / "two"))
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        single["state"].params, sharded["state"].params,
    )
