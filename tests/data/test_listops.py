"""ListOps: the LRA recipe's statistics, answers checked by an independent evaluator, the cache."""

import json
import os

import numpy as np
import pytest

from sequax.data import cache, listops, make_task

TOKEN_NAMES = listops.TOKENS


def evaluate_tokens(tokens):
    """An evaluator written apart from the generator: a stack machine over the token names."""
    stack = []
    for token in tokens:
        name = TOKEN_NAMES[int(token)]
        if name.startswith("["):
            stack.append([name[1:]])
        elif name == "]":
            op, *args = stack.pop()
            if op == "MIN":
                value = min(args)
            elif op == "MAX":
                value = max(args)
            elif op == "MED":
                value = int(np.floor(np.median(args)))
            else:
                assert op == "SM"
                value = sum(args) % 10
            if not stack:
                return value
            stack[-1].append(value)
        else:
            digit = int(name)
            if not stack:
                return digit
            stack[-1].append(digit)
    raise AssertionError("unbalanced expression")


def depth_and_arity(tokens):
    depth = deepest = widest = 0
    counts = []
    for token in tokens:
        name = TOKEN_NAMES[int(token)]
        if name.startswith("["):
            if counts:
                counts[-1] += 1
            counts.append(0)
            depth += 1
            deepest = max(deepest, depth)
        elif name == "]":
            widest = max(widest, counts.pop())
            depth -= 1
        else:
            counts[-1] += 1
    return deepest, widest


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_task("listops", num_train=300, num_validation=20, num_test=20, seed=3, num_workers=1,
                     cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_examples_follow_the_lra_recipe(task):
    split = task.splits["train"]
    lengths = np.asarray(split["lengths"])
    assert lengths.min() > 500 and lengths.max() < 2000  # kept strictly between min and max length
    assert task.seq_len == 2000 and task.vocab_size == 16 and task.num_classes == 10
    depths, widths = zip(*(depth_and_arity(row[:n]) for row, n in zip(split["inputs"], lengths)))
    assert max(depths) <= 10 and min(depths) >= 2  # the root is depth 1 and operators nest
    assert max(widths) <= 10 and min(widths) >= 2
    assert max(widths) == 10  # arities reach the limit
    for row, n, label in zip(split["inputs"], lengths, split["label"]):
        assert (row[n:] == listops.PAD).all() and (row[:n] != listops.PAD).all()
        assert evaluate_tokens(row[:n]) == label
    # Every class occurs; the LRA data is skewed to 0 and 9 (MIN/MAX of many digits) but not degenerate.
    counts = np.bincount(split["label"], minlength=10) / len(split["label"])
    assert counts.min() > 0.02 and counts.max() < 0.3
    rows = {bytes(r[:n]) for r, n in zip(split["inputs"], lengths)}
    assert len(rows) == len(lengths)  # distinct trees, as the LRA's set


def test_batches_and_splits_are_disjoint(task):
    batch = task.examples("test", np.arange(4))
    assert batch["inputs"].dtype == np.int32 and batch["inputs"].shape == (4, 2000)
    assert batch["label"].shape == (4,) and batch["lengths"].shape == (4,)
    seen = {bytes(r) for s in ("train", "validation") for r in np.asarray(task.splits[s]["inputs"])}
    assert not any(bytes(r) in seen for r in np.asarray(task.splits["test"]["inputs"]))
    assert [task.num_examples(s) for s in ("train", "validation", "test")] == [300, 20, 20]


def test_cache_has_a_manifest_and_is_read_back_not_rebuilt(task, tmp_path, capsys):
    small = dict(num_train=20, num_validation=4, num_test=4, min_length=10, max_length=60, max_depth=4,
                 seed=1, num_workers=1, cache_dir=str(tmp_path))
    first = make_task("listops", **small)
    expected = np.array(first.splits["train"]["inputs"])  # a copy: the task's arrays map the cached file
    assert "building" in capsys.readouterr().out
    (path,) = [os.path.join(r, d) for r, ds, _ in os.walk(tmp_path) for d in ds if d.startswith("v")]
    manifest = json.load(open(os.path.join(path, cache.MANIFEST)))
    assert manifest["generator"] == "listops" and manifest["version"] == listops.VERSION
    assert manifest["params"]["seed"] == 1 and manifest["params"]["max_depth"] == 4
    assert manifest["arrays"]["train/inputs"]["shape"] == [20, 60]
    assert manifest["arrays"]["train/inputs"]["sha256"] == cache.array_sha256(expected)
    cache._LOADED.clear()
    again = make_task("listops", **small)
    assert "building" not in capsys.readouterr().out
    np.testing.assert_array_equal(again.splits["train"]["inputs"], expected)
    # A damaged copy fails its checksum and is rebuilt, identical.
    cache._LOADED.clear()
    inputs = os.path.join(path, "train.inputs.npy")
    data = bytearray(open(inputs, "rb").read())
    data[-1] ^= 0xFF
    open(inputs, "wb").write(bytes(data))
    rebuilt = make_task("listops", **small)
    assert "does not match its manifest" in capsys.readouterr().out
    np.testing.assert_array_equal(rebuilt.splits["train"]["inputs"], expected)
    # Another seed is another copy.
    cache._LOADED.clear()
    other = make_task("listops", **{**small, "seed": 2})
    assert not np.array_equal(other.splits["train"]["inputs"], expected)


def test_the_data_does_not_depend_on_the_worker_count(tmp_path):
    params = dict(sizes={"train": 600, "validation": 2, "test": 2}, seed=0, min_length=10, max_length=40,
                  max_depth=3, max_args=4)
    one = listops.build(num_workers=1, **params)
    two = listops.build(num_workers=2, **params)  # two spawned processes, chunks in order
    for split in one:
        for key in one[split]:
            np.testing.assert_array_equal(one[split][key], two[split][key])


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_train=0), "num_train must be a positive int"),
    (dict(max_args=1), "max_args must be at least 2"),
    (dict(min_length=1999), r"min_length \(1999\) must be >= 0 and below max_length - 1"),
    (dict(num_workers=-1), "num_workers must be >= 0"),
])
def test_bad_options_raise(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        make_task("listops", cache_dir=str(tmp_path), **kwargs)
