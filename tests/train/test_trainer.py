"""Training end to end at tiny sizes: loss goes down, outputs are written, resume is exact."""

import json
import os

import jax
import numpy as np

from configs.quickstart import get_config
from sequax.train import train_and_evaluate


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


def test_training_reduces_loss_and_writes_outputs(tmp_path):
    config = tiny_config(num_steps=40)
    summary = train_and_evaluate(config, str(tmp_path))
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


def test_resume_after_interruption_is_exact(tmp_path):
    config = tiny_config(num_steps=12)
    config.checkpoint.every = 4
    config.model.dropout = 0.1  # the RNG must be restored too
    straight = train_and_evaluate(config, str(tmp_path / "straight"))
    first = train_and_evaluate(config, str(tmp_path / "resumed"), stop_at_step=4)
    assert int(first["state"].step) == 4
    resumed = train_and_evaluate(config, str(tmp_path / "resumed"))
    assert int(resumed["state"].step) == 12
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, straight["state"].params, resumed["state"].params
    )
    history = json.load(open(tmp_path / "resumed" / "metrics.json"))["history"]["train/loss"]
    assert [step for step, _ in history] == [5, 10, 12] or history[0][0] < 5


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
