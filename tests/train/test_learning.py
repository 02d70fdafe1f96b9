"""Slow: the shipped configs actually learn MQAR (run in CI; a few minutes in all)."""

import time

import pytest

from configs.mixers import deltanet, gla
from configs.quickstart import get_config as quickstart_config
from sequax.train import train_and_evaluate


@pytest.mark.slow
def test_quickstart_reaches_099(tmp_path):
    tic = time.perf_counter()
    summary = train_and_evaluate(quickstart_config(), str(tmp_path))
    print(f"quickstart: eval accuracy {summary['eval_accuracy']:.4f} in {time.perf_counter() - tic:.0f} s")
    assert summary["eval_accuracy"] >= 0.99


@pytest.mark.slow
@pytest.mark.parametrize(
    "get_config, num_steps", [(deltanet.get_config, 300), (gla.get_config, 400)], ids=["deltanet", "gla"]
)
def test_linear_attention_learns_mqar(get_config, num_steps, tmp_path):
    config = get_config()
    config.train.num_steps = num_steps
    config.eval.every = 0
    config.checkpoint.every = 0
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary["eval_accuracy"] >= 0.9
