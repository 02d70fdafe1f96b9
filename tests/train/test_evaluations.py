"""Named evaluations (config.evals): each logged under its name; a finite split read once in full."""

import glob
import json
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from sequax.data import FixedSizeSplits, make_task
from sequax.models import build_model
from sequax.train import train_and_evaluate
from sequax.train.trainer import loss_and_metrics
from tests.train.test_trainer import tiny_config


def tensorboard_scalars(workdir):
    """``{tag: [(step, value), ...]}`` read back from the TFRecord event files in ``workdir``."""
    out = {}
    for path in sorted(glob.glob(str(workdir / "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            record = data[offset + 12:offset + 12 + length]  # after the length and its CRC
            offset += 12 + length + 4  # the record and its CRC
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_named_evaluations_at_two_lengths_and_a_full_finite_split(tmp_path):
    config = tiny_config(num_steps=4)  # MQAR at seq_len 32
    config.eval.every = 2
    config.data.split_sizes = {"test": 10}
    config.evals = {
        "short": {"num_batches": 2},  # the validation split at the training length
        "long": {"num_batches": 1, "task_kwargs": {"seq_len": 64}, "every": 4},
        "test_full": {"split": "test", "num_batches": "full", "batch_size": 4},  # 3 batches, 2 rows padding
    }
    summary = train_and_evaluate(config, str(tmp_path))
    metrics = json.load(open(tmp_path / "metrics.json"))
    history = metrics["history"]
    expected_steps = {"short": [2, 4], "long": [4], "test_full": [2, 4]}
    scalars = tensorboard_scalars(tmp_path)
    for name, steps in expected_steps.items():
        for metric in ("loss", "accuracy"):
            tag = f"{name}/{metric}"
            assert [step for step, _ in history[tag]] == steps, tag
            assert [step for step, _ in scalars[tag]] == steps, tag
            np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in history[tag]], rtol=1e-6)
            assert metrics[f"{name}_{metric}"] == summary[f"{name}_{metric}"] == history[tag][-1][1]
    assert "eval/loss" not in history and "eval_loss" not in summary
    assert history["short/loss"][-1][1] != history["long/loss"][-1][1]

    # The full evaluation counts each of the 10 test examples once: it equals one batch of all 10.
    task = FixedSizeSplits(make_task("mqar", **dict(config.data.task_kwargs)), {"test": 10}, seed=0)
    every_example = task.examples("test", np.arange(10))
    _, reference = loss_and_metrics(
        build_model(config.model), summary["state"].params, every_example, None, deterministic=True
    )
    np.testing.assert_allclose(summary["test_full_loss"], float(reference["loss"]), rtol=1e-6)
    np.testing.assert_allclose(summary["test_full_accuracy"], float(reference["accuracy"]), rtol=1e-6)


@pytest.mark.parametrize(
    "evals, message",
    [
        ({"x": {"split": "holdout"}}, r"evals.x: unknown split 'holdout'"),
        ({"x": {"num_batches": "full"}}, r"evals.x: num_batches='full' needs a finite split"),
        ({"x": {"split": "test", "num_batches": 4}}, r"evals.x: num_batches=4, but split 'test' has 10"),
        ({"x": {"colour": 1}}, r"evals.x has no key\(s\) colour"),
        ({"x": {"task_kwargs": {"seq_len": 8}}}, r"evals.x.task_kwargs: seq_len \(8\) must be at least"),
        ({"x": {"task_kwargs": {"vocab_size": 64}}}, r"evals.x.task_kwargs\) uses 64 tokens"),
        ({"train": {}}, "other than 'train'"),
        ({"x": {"batch_size": 3}}, r"evals.x.batch_size \(3\) must be positive and divisible by mesh.data"),
    ],
)
def test_bad_evaluations_raise_before_anything_is_written(tmp_path, evals, message):
    config = tiny_config(num_steps=2)
    config.mesh.data = 2
    config.data.split_sizes = {"test": 10}
    config.evals = evals
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_bad_split_sizes_raise(tmp_path):
    config = tiny_config(num_steps=2)
    config.data.split_sizes = {"test": 0}
    with pytest.raises(ValueError, match="data.split_sizes: the size of split 'test' must be a positive int"):
        train_and_evaluate(config, str(tmp_path / "w"))
