"""LRA Text / Retrieval / Image read from disk without TensorFlow: the TFRecord and tf.train.Example
formats (checked against TensorBoard event files and protobuf itself), and tiny fixtures in the on-disk
layouts TFDS and the LRA release use."""

import io
import os

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from sequax.data import cache, lra, make_task, tfds_sources, tfrecord


def example_class():
    """``tf.train.Example`` built by protobuf from its schema: an encoder independent of ours."""
    f = descriptor_pb2.FileDescriptorProto(name="sequax_test_example.proto", package="sequax_test",
                                           syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", T.TYPE_BYTES), ("FloatList", T.TYPE_FLOAT), ("Int64List", T.TYPE_INT64)):
        f.message_type.add(name=name).field.add(name="value", number=1, type=kind, label=T.LABEL_REPEATED)
    feature = f.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (field, message) in enumerate(
            (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1):
        feature.field.add(name=field, number=number, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                          type_name=f".sequax_test.{message}", oneof_index=0)
    features = f.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                    type_name=".sequax_test.Feature")
    features.field.add(name="feature", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED,
                       type_name=".sequax_test.Features.FeatureEntry")
    f.message_type.add(name="Example").field.add(name="features", number=1, type=T.TYPE_MESSAGE,
                                                 label=T.LABEL_OPTIONAL, type_name=".sequax_test.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("sequax_test.Example"))


def test_tfrecord_framing_and_checksums_match_tensorboards_writer(tmp_path):
    from tensorboardX import SummaryWriter
    from tensorboardX.proto import event_pb2

    writer = SummaryWriter(logdir=str(tmp_path))
    for step in range(5):
        writer.add_scalar("x", step * 0.5, step)
    writer.close()
    (events,) = [os.path.join(tmp_path, f) for f in os.listdir(tmp_path) if f.startswith("events")]
    records = list(tfrecord.read_records(events, check_data_crc=True))
    values = [v.simple_value for r in records for v in event_pb2.Event.FromString(r).summary.value]
    assert values == [0.0, 0.5, 1.0, 1.5, 2.0]
    path = str(tmp_path / "copy.tfrecord")
    tfrecord.write_records(path, records)
    assert open(path, "rb").read() == open(events, "rb").read()  # byte for byte what TensorBoard wrote
    data = bytearray(open(path, "rb").read())
    data[9] ^= 1  # a length checksum byte
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="bad length checksum at byte 0"):
        list(tfrecord.read_records(path))
    open(path, "wb").write(open(events, "rb").read()[:-3])
    with pytest.raises(ValueError, match="truncated record"):
        list(tfrecord.read_records(path))


def test_examples_parse_as_protobuf_encodes_them_and_back():
    Example = example_class()
    message = Example()
    message.features.feature["text"].bytes_list.value.extend([b"a review", b""])
    message.features.feature["label"].int64_list.value.extend([1, -3, 2 ** 40])
    message.features.feature["w"].float_list.value.extend([1.5, -0.25])
    parsed = tfrecord.parse_example(message.SerializeToString())
    assert parsed["text"] == [b"a review", b""]
    np.testing.assert_array_equal(parsed["label"], [1, -3, 2 ** 40])
    np.testing.assert_array_equal(parsed["w"], np.array([1.5, -0.25], np.float32))
    ours = Example.FromString(tfrecord.encode_example({"text": "ünï", "label": [7, -1], "w": [0.5]}))
    assert list(ours.features.feature["text"].bytes_list.value) == ["ünï".encode()]
    assert list(ours.features.feature["label"].int64_list.value) == [7, -1]
    assert list(ours.features.feature["w"].float_list.value) == [0.5]


def png(rgb):
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def tfds_dir(tmp_path):
    root = tmp_path / "tfds"
    imdb = root / "imdb_reviews" / "plain_text" / "1.0.0"
    reviews = [(b"great film, loved it", 1), (b"dull", 0), (b"".join([b"x"] * 40), 1)]
    tfds_sources.write_split(str(imdb), "imdb_reviews", "train",
                             [{"text": t, "label": y} for t, y in reviews], num_shards=2)
    tfds_sources.write_split(str(imdb), "imdb_reviews", "test", [{"text": b"meh", "label": 0}])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    cifar = root / "cifar10" / "3.0.2"
    train = [{"image": png(im), "label": i % 10, "id": f"train_{i}"} for i, im in enumerate(images[:4])]
    tfds_sources.write_split(str(cifar), "cifar10", "train", train)
    tfds_sources.write_split(str(cifar), "cifar10", "test",
                             [{"image": png(im), "label": 9, "id": f"test_{i}"} for i, im in enumerate(images[4:])])
    return str(root), images


def test_text_reads_bytes_from_tfds_shards(tfds_dir, tmp_path):
    root, _ = tfds_dir
    task = make_task("lra_text", max_length=16, data_dir=root, cache_dir=str(tmp_path / "cache"))
    assert task.num_examples("train") == 3 and task.num_examples("validation") == task.num_examples("test") == 1
    batch = task.examples("train", np.arange(3))
    assert bytes(batch["inputs"][0][:batch["lengths"][0]].astype(np.uint8)) == b"great film, love"  # cut at 16
    assert bytes(batch["inputs"][1][:4].astype(np.uint8)) == b"dull" and (batch["inputs"][1][4:] == 0).all()
    np.testing.assert_array_equal(batch["lengths"], [16, 4, 16])
    np.testing.assert_array_equal(batch["label"], [1, 0, 1])
    assert task.vocab_size == 256 and task.num_classes == 2 and task.seq_len == 16


def test_image_is_grayscale_cifar_in_row_major_pixels(tfds_dir, tmp_path):
    root, images = tfds_dir
    task = make_task("lra_image", num_validation=1, data_dir=root, cache_dir=str(tmp_path / "cache"))
    assert [task.num_examples(s) for s in ("train", "validation", "test")] == [3, 1, 2]
    r, g, b = (images[..., c].astype(np.float64) for c in range(3))
    gray = np.round(0.2989 * r + 0.5870 * g + 0.1140 * b).astype(np.int32).reshape(6, 1024)
    np.testing.assert_array_equal(task.examples("train", np.arange(3))["inputs"], gray[:3])
    np.testing.assert_array_equal(task.examples("validation", [0])["inputs"], gray[3:4])
    np.testing.assert_array_equal(task.examples("test", [0, 1])["inputs"], gray[4:])
    np.testing.assert_array_equal(task.examples("train", np.arange(3))["label"], [0, 1, 2])


def test_retrieval_reads_the_lra_release_tsv_as_document_pairs(tmp_path):
    folder = tmp_path / "lra" / "lra_release" / "tsv_data"
    folder.mkdir(parents=True)
    rows = {"train": ["1.0\ta\tb\tfirst paper\tsecond one", "0.0\tc\td\tx\ty"],
            "eval": ["1.0\te\tf\tp\tq"], "test": ["0.0\tg\th\tr\ts"]}
    for split, lines in rows.items():
        (folder / f"new_aan_pairs.{split}.tsv").write_text("\n".join(lines) + "\n")
    task = make_task("lra_retrieval", max_length=8, data_dir=str(tmp_path / "lra"), cache_dir=str(tmp_path / "c"))
    batch = task.examples("train", np.arange(2))
    assert batch["inputs"].shape == (2, 2, 8) and batch["lengths"].shape == (2, 2)
    assert bytes(batch["inputs"][0, 0].astype(np.uint8)) == b"first pa"
    assert bytes(batch["inputs"][0, 1].astype(np.uint8)) == b"second o"
    np.testing.assert_array_equal(batch["lengths"], [[8, 8], [1, 1]])
    np.testing.assert_array_equal(batch["label"], [1, 0])
    assert task.num_examples("validation") == 1
    (folder / "new_aan_pairs.test.tsv").write_text("1.0\tonly three\tfields\n")
    cache._LOADED.clear()
    with pytest.raises(ValueError, match=r"new_aan_pairs.test.tsv:1: expected 5 tab-separated fields"):
        make_task("lra_retrieval", max_length=4, data_dir=str(tmp_path / "lra"), cache_dir=str(tmp_path / "c2"))


@pytest.mark.parametrize("task, step", [
    ("lra_text", "tfds build imdb_reviews"),
    ("lra_image", "tfds build cifar10"),
    ("lra_retrieval", "lra_release.gz"),
])
def test_missing_data_is_one_line_naming_the_download_step(task, step, tmp_path):
    with pytest.raises(tfds_sources.MissingDataError) as error:
        make_task(task, data_dir=str(tmp_path / "nothing"), cache_dir=str(tmp_path / "cache"))
    message = str(error.value)
    assert step in message and "\n" not in message
    assert isinstance(error.value, ValueError)  # experiments/*.py print it as one "error:" line


def test_grayscale_weights_are_the_lras():
    np.testing.assert_array_equal(lra.grayscale(np.array([[255, 0, 0], [0, 255, 0], [10, 20, 30]], np.uint8)),
                                  [76, 150, 18])


def test_array_record_shards_are_read_too(tmp_path):
    """TFDS's other on-disk format (needs ``pip install array-record``; skipped without it)."""
    module = pytest.importorskip("array_record.python.array_record_module")
    path = tmp_path / "imdb_reviews" / "plain_text" / "1.0.0"
    tfds_sources.write_split(str(path), "imdb_reviews", "test", [{"text": b"x", "label": 0}])
    writer = module.ArrayRecordWriter(str(path / "imdb_reviews-train.array_record-00000-of-00001"), "group_size:1")
    for text, label in ((b"good", 1), (b"bad", 0)):
        writer.write(tfrecord.encode_example({"text": text, "label": label}))
    writer.close()
    data = tfds_sources.read_split(str(path), "train", ("text", "label"))
    assert data == {"text": [b"good", b"bad"], "label": [1, 0]}
