"""Byte-level text: documents split by file, packing with segment ids, evaluation windows covering the
stream once, the Dataset Decomposition buckets and curriculum, and the default (offline) corpus."""

import numpy as np
import pytest

from sequax.data import TaskIterator, make_task, text


@pytest.fixture
def folder(tmp_path):
    for i in range(12):
        (tmp_path / f"doc{i:02d}.txt").write_bytes(bytes([65 + i]) * (50 + 10 * i))
    (tmp_path / "binary.bin").write_bytes(b"\0\1\2" * 100)
    (tmp_path / ".hidden.txt").write_bytes(b"z" * 500)
    return tmp_path


def test_documents_are_split_by_file_and_binaries_skipped(folder):
    task = make_task("byte_text", path=str(folder), seq_len=16, validation_every=6)
    assert [f.rsplit("/", 1)[1] for f in task.files] == [f"doc{i:02d}.txt" for i in range(12)]
    letters = {split: set(np.unique(task.streams[split][0]).tolist()) for split in task.streams}
    assert letters["validation"] == {65 + 5, 65 + 11} and letters["test"] == {65 + 4, 65 + 10}
    assert not letters["train"] & (letters["validation"] | letters["test"])


def test_packed_windows_mark_documents_and_never_predict_across_them(folder):
    task = make_task("byte_text", path=str(folder), seq_len=64, validation_every=6)
    batch = TaskIterator(task, 8, seed=0).batch_at(0)
    assert batch["inputs"].shape == batch["segment_ids"].shape == (8, 64)
    for inputs, targets, mask, segments in zip(batch["inputs"], batch["targets"], batch["loss_mask"],
                                               batch["segment_ids"]):
        same_letter = inputs[1:] == inputs[:-1]
        np.testing.assert_array_equal(same_letter, segments[1:] == segments[:-1])  # one letter per document
        np.testing.assert_array_equal(targets[mask == 1], inputs[mask == 1])  # within a document: same byte
        assert (mask[:-1][~same_letter] == 0).all()  # the byte before a boundary predicts nothing
    unpacked = make_task("byte_text", path=str(folder), seq_len=64, validation_every=6, packing=False)
    batch = unpacked.batch(np.random.default_rng(0), 8)
    assert "segment_ids" not in batch
    for inputs, mask in zip(batch["inputs"], batch["loss_mask"]):
        real = inputs[inputs > 0]
        assert len(set(real.tolist())) == 1  # one document per row, 0-padded
        # A short document: every byte but its last predicts; a window inside a long one: all 64.
        assert mask.sum() == len(real) - 1 or (len(real) == 64 and mask.sum() == 64)


def test_evaluation_windows_cover_the_split_once(folder):
    task = make_task("byte_text", path=str(folder), seq_len=16, validation_every=6)
    data, _ = task.streams["validation"]
    n = task.num_examples("validation")
    assert n == (len(data) - 1) // 16
    batch = task.examples("validation", np.arange(n))
    np.testing.assert_array_equal(batch["inputs"].reshape(-1), data[:n * 16])
    targets = np.where(batch["loss_mask"] == 1, batch["targets"], -1).reshape(-1)
    shifted = data[1:n * 16 + 1]
    counted = targets >= 0
    np.testing.assert_array_equal(targets[counted], shifted[counted])
    assert counted.sum() == n * 16 - 1  # every next byte but the one across the boundary


def test_decomposition_into_power_of_two_pieces():
    assert text.decompose(1000, 64, 256) == [256, 256, 256, 128, 64]
    assert text.decompose(40, 64, 256) == []
    assert sum(text.decompose(777, 1, 512)) == 777


def test_dataset_decomposition_batches_and_curriculum(folder):
    task = make_task("byte_text", path=str(folder), seq_len=64, validation_every=6, curriculum="dd",
                     min_bucket_len=8, curriculum_steps=100, curriculum_strength=3.0)
    early, late = task.bucket_weights(0), task.bucket_weights(100)
    assert sorted(early) == [8, 16, 32, 64]
    np.testing.assert_allclose(sum(early.values()), 1.0)
    assert early[8] > late[8] and early[64] < late[64]  # short pieces first
    natural = {k: len(v) * k for k, v in task.buckets.items()}
    np.testing.assert_allclose([late[k] for k in natural], np.array(list(natural.values())) / sum(natural.values()))
    tokens_per_step = set()
    for position in (0, 50, 99, 100):
        batch = TaskIterator(task, 4, seed=0).batch_at(position)
        rows, length = batch["inputs"].shape
        tokens_per_step.add(rows * length)
        for row in batch["inputs"]:
            assert len(set(row.tolist())) == 1  # a piece never mixes documents
        assert batch["loss_mask"][:, -1].sum() == 0
    assert tokens_per_step == {4 * 64}


def test_the_default_corpus_is_the_standard_library(tmp_path):
    task = make_task("byte_text", seq_len=128, max_bytes=200_000)
    assert all(f.startswith(text.stdlib_folder()) and f.endswith(".py") for f in task.files)
    assert sum(len(s[0]) for s in task.streams.values()) == 200_000


@pytest.mark.parametrize("kwargs, message", [
    (dict(path="/nonexistent/place"), "is neither a file nor a folder"),
    (dict(curriculum="grow"), "curriculum must be one of"),
    (dict(curriculum="dd", seq_len=100), "needs seq_len to be a power of two"),
    (dict(validation_every=2), "validation_every must be at least 3"),
    (dict(seq_len=10 ** 7, max_bytes=5000), "fewer than seq_len"),
])
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task("byte_text", **kwargs)
