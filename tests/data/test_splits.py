"""Splits: endless generator splits and finite dataset splits, read by training and by evaluations."""

import numpy as np
import pytest

from sequax import data


def array_dataset(n=10, length=6):
    inputs = np.arange(n * length, dtype=np.int32).reshape(n, length) % 50
    splits = {
        split: {"inputs": inputs + offset, "targets": inputs, "loss_mask": np.ones((n, length), np.float32),
                "id": np.arange(n)}
        for split, offset in (("train", 0), ("test", 1))
    }
    return data.ArrayDataset(splits, vocab_size=64, seq_len=length)


def test_full_evaluation_reads_each_example_once_and_pads_the_last_batch():
    task = array_dataset(n=10)
    batches = data.SplitBatches(task, "test", batch_size=4, seed=0, num_batches="full")
    assert len(batches) == 3
    masks = [b["example_mask"] for b in batches]
    np.testing.assert_array_equal(np.concatenate(masks), [1] * 10 + [0] * 2)
    ids = np.concatenate([b["id"][b["example_mask"] == 1] for b in batches])
    np.testing.assert_array_equal(ids, np.arange(10))  # every example once, in order
    last = batches[2]
    assert last["inputs"].shape == (4, 6) and last["example_mask"].dtype == np.float32
    np.testing.assert_array_equal(last["inputs"][2:], task.splits["test"]["inputs"][[9, 9]])  # real rows repeated
    np.testing.assert_array_equal(data.SplitBatches(task, "test", 4, 0, num_batches=2)[1]["id"], [4, 5, 6, 7])


def test_training_stream_over_a_dataset_shuffles_whole_epochs():
    task = array_dataset(n=10)
    stream = data.TaskIterator(task, batch_size=4, seed=3)
    ids = np.concatenate([next(stream)["id"] for _ in range(5)])  # 20 examples: two epochs
    np.testing.assert_array_equal(np.sort(ids[:10]), np.arange(10))
    np.testing.assert_array_equal(np.sort(ids[10:]), np.arange(10))
    assert not np.array_equal(ids[:10], ids[10:]) and not np.array_equal(ids[:10], np.arange(10))
    # A pure function of (seed, split, position): a resumed stream continues it exactly.
    np.testing.assert_array_equal(data.TaskIterator(task, 4, seed=3, position=3).batch_at(3)["id"], ids[12:16])
    other_seed = np.concatenate([data.TaskIterator(task, 4, seed=4).batch_at(p)["id"] for p in range(2)])
    assert not np.array_equal(other_seed, ids[:8])


def test_fixed_size_splits_are_the_same_whatever_the_batch_size():
    inner = data.make_task("mqar", vocab_size=32, seq_len=32, num_kv_pairs=4)
    task = data.FixedSizeSplits(inner, {"test": 7}, seed=0)
    assert task.num_examples("test") == 7 and task.num_examples("validation") is None
    by3 = [b for b in data.SplitBatches(task, "test", 3, seed=0)]
    by7 = data.SplitBatches(task, "test", 7, seed=0)[0]
    rows3 = np.concatenate([b["inputs"][b["example_mask"] == 1] for b in by3])
    np.testing.assert_array_equal(rows3, by7["inputs"])
    assert len({row.tobytes() for row in rows3}) == 7
    other = data.FixedSizeSplits(inner, {"test": 7}, seed=1).examples("test", np.arange(7))
    assert not np.array_equal(other["inputs"], by7["inputs"])
    # The generator splits are the wrapped task's, unchanged.
    np.testing.assert_array_equal(
        data.TaskIterator(task, 2, seed=0, split="validation").batch_at(5)["inputs"],
        data.TaskIterator(inner, 2, seed=0, split="validation").batch_at(5)["inputs"],
    )


def test_generator_evaluation_batches_are_the_validation_stream():
    task = data.make_task("induction_heads", seq_len=16)
    batches = data.SplitBatches(task, "validation", 4, seed=2, num_batches=3)
    stream = data.TaskIterator(task, 4, seed=2, split="validation")
    for i, batch in enumerate(batches):
        np.testing.assert_array_equal(batch["inputs"], stream.batch_at(i)["inputs"])
        assert "example_mask" not in batch
    train = data.TaskIterator(task, 4, seed=2, split="train").batch_at(0)["inputs"]
    assert not np.array_equal(train, batches[0]["inputs"])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t: data.SplitBatches(t, "validation", 4, 0, "full"), "needs a finite split"),
        (lambda t: data.SplitBatches(array_dataset(), "test", 4, 0, 4), "num_batches=4, but split 'test' has 10"),
        (lambda t: data.SplitBatches(t, "validation", 4, 0, 0), "num_batches must be a positive int or 'full'"),
        (lambda t: data.SplitBatches(array_dataset(), "validation", 4, 0), "no 'validation' split"),
        (lambda t: data.TaskIterator(t, 4, 0, split="eval"), "unknown split 'eval'"),
        (lambda t: data.FixedSizeSplits(t, {"test": 2.5}, 0), "must be a positive int"),
        (lambda t: data.ArrayDataset({"test": {"a": np.zeros(3), "b": np.zeros(4)}}, vocab_size=2, seq_len=1),
         "one common, positive leading size"),
    ],
)
def test_bad_split_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(data.make_task("mqar"))
