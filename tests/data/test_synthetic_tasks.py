"""Synthetic tasks: deterministic for a seed, answers checked by independent solvers."""

import numpy as np
import pytest

from sequax import data
from sequax.data.cache import CachedClassification

# Tasks that generate batches on the fly; the cached datasets (ListOps, Pathfinder, LRA's TFDS
# tasks) build or download their splits first and have tests of their own.
GENERATED = [name for name in data.available_tasks()
             if not issubclass(data.get_task(name), CachedClassification)]


def _batch(name, position=0, seed=0, batch_size=8, **kwargs):
    task = data.make_task(name, **kwargs)
    return task, data.TaskIterator(task, batch_size, seed=seed).batch_at(position)


@pytest.mark.parametrize("name", GENERATED)
def test_deterministic_for_a_seed(name):
    _, a = _batch(name, position=3, seed=1)
    _, b = _batch(name, position=3, seed=1)
    _, c = _batch(name, position=4, seed=1)
    _, d = _batch(name, position=3, seed=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["inputs"], c["inputs"])
    assert not np.array_equal(a["inputs"], d["inputs"])


@pytest.mark.parametrize("name", GENERATED)
def test_iterator_resumes_where_it_stopped(name):
    task = data.make_task(name)
    straight = data.TaskIterator(task, 2, seed=5)
    batches = [next(straight) for _ in range(5)]
    resumed = data.TaskIterator(task, 2, seed=5, position=3)
    np.testing.assert_array_equal(next(resumed)["inputs"], batches[3]["inputs"])
    assert resumed.position == 4


def test_mqar_answers():
    task, batch = _batch("mqar", vocab_size=64, seq_len=64, num_kv_pairs=8)
    half = 32
    for inputs, targets, mask in zip(batch["inputs"], batch["targets"], batch["loss_mask"]):
        # Solver: read the pairs from the context, answer every later occurrence of a key.
        context = {int(inputs[i]): int(inputs[i + 1]) for i in range(0, 16, 2)}
        assert len(context) == 8 and all(1 <= k < half for k in context)
        assert all(half <= v < 64 for v in context.values())
        expected = np.zeros_like(targets)
        expected_mask = np.zeros_like(mask)
        for pos in range(16, 64):
            token = int(inputs[pos])
            if token in context and (pos - 16) % 2 == 0:
                expected[pos] = context[token]
                expected_mask[pos] = 1
        np.testing.assert_array_equal(targets * mask, expected)
        np.testing.assert_array_equal(mask, expected_mask)
        assert mask.sum() == 8  # every key is queried exactly once


def test_mqar_power_law_prefers_short_gaps():
    task = data.make_task("mqar", vocab_size=512, seq_len=512, num_kv_pairs=8, power_a=0.1)
    batch = data.TaskIterator(task, 64, seed=0).batch_at(0)
    query_pos = np.nonzero(batch["loss_mask"])[1] - 16
    assert np.mean(query_pos < (512 - 16) / 2) > 0.6


def test_induction_heads_answers():
    _, batch = _batch("induction_heads", vocab_size=16, seq_len=64)
    for inputs, targets, mask in zip(batch["inputs"], batch["targets"], batch["loss_mask"]):
        triggers = np.nonzero(inputs == 1)[0]
        assert len(triggers) == 2 and triggers[-1] == 63
        assert targets[63] == inputs[triggers[0] + 1]
        assert mask.sum() == 1 and mask[63] == 1


def test_induction_heads_distance_curriculum_grows_to_the_plain_task():
    """Trigger distances start within ``min_distance`` of the end and reach the whole sequence."""
    kwargs = dict(vocab_size=16, seq_len=256, curriculum_steps=1000, min_distance=16)
    task = data.make_task("induction_heads", **kwargs)
    distances = [task.max_distance(p) for p in (0, 250, 500, 999, 1000, 5000)]
    assert distances[0] == 16 and distances[-2] == distances[-1] == 254
    assert distances == sorted(distances) and distances[2] == 64  # geometric: halfway = sqrt(16 * 254)
    for position, bound in ((0, 16), (500, 64)):
        _, batch = _batch("induction_heads", position=position, batch_size=64, **kwargs)
        first = np.argmax(batch["inputs"] == 1, axis=1)
        assert np.all(first >= 254 - bound) and np.all(first < 254)
        np.testing.assert_array_equal(batch["targets"][:, -1], batch["inputs"][np.arange(64), first + 1])
    late = np.argmax(_batch("induction_heads", position=1000, batch_size=256, **kwargs)[1]["inputs"] == 1, axis=1)
    assert late.min() < 64  # the plain task: anywhere in the sequence
    # evaluations (any split but train) see the plain task from their first batch
    held_out = data.TaskIterator(task, 256, seed=0, split="validation").batch_at(0)
    assert np.argmax(held_out["inputs"] == 1, axis=1).min() < 64
    with pytest.raises(ValueError, match="curriculum_steps"):
        data.make_task("induction_heads", curriculum_steps=-1)


def test_selective_copying_answers():
    task, batch = _batch("selective_copying", vocab_size=10, seq_len=40, num_tokens=6)
    assert task.seq_len == 46
    for inputs, targets, mask in zip(batch["inputs"], batch["targets"], batch["loss_mask"]):
        region = inputs[:40]
        data_tokens = region[region >= 2]
        assert len(data_tokens) == 6
        np.testing.assert_array_equal(targets[40:], data_tokens)
        assert np.all(inputs[40:] == 1) and mask[40:].all() and not mask[:40].any()


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("mqar", dict(vocab_size=16, num_kv_pairs=10), "num_kv_pairs"),
        ("mqar", dict(seq_len=20, num_kv_pairs=8), "seq_len"),
        ("mqar", dict(colour=3), "no option"),
        ("selective_copying", dict(seq_len=4, num_tokens=8), "num_tokens"),
        ("nope", {}, "unknown task"),
    ],
)
def test_bad_task_options(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.make_task(name, **kwargs)
