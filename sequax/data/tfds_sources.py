"""Read prepared TensorFlow Datasets from disk with plain Python and numpy (no TensorFlow).

``tfds build NAME`` (or ``tfds.load(..., download=True)``) leaves a dataset in
``DATA_DIR/NAME[/CONFIG]/VERSION/``: ``dataset_info.json`` plus one file per
shard, ``NAME-SPLIT.tfrecord-00000-of-00004`` (or ``.array_record-...``),
each record a serialized ``tf.train.Example``. :func:`find_dataset` locates
the newest prepared version; :func:`read_split` returns a split's examples as
``{feature: list}`` in shard order. TFRecord shards are read here;
ArrayRecord shards need the ``array_record`` package (``pip install
array-record``), which reads them without TensorFlow too.

``DATA_DIR`` is the ``data_dir`` argument, else ``$TFDS_DATA_DIR``, else
``~/tensorflow_datasets``, as TFDS itself chooses.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, List, Optional, Sequence

from sequax.data import tfrecord

INFO = "dataset_info.json"


class MissingDataError(ValueError):
    """A dataset the task needs is not on disk; the message names the step that puts it there."""


def data_dir(path: Optional[str] = None) -> str:
    """``path``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.path.abspath(os.path.expanduser(
        path or os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    ))


def _version_key(name: str):
    return tuple(int(p) for p in re.findall(r"\d+", name))


def find_dataset(name: str, config: Optional[str], root: Optional[str], how_to_get: str) -> str:
    """The newest ``ROOT/NAME[/CONFIG]/VERSION`` holding ``dataset_info.json``; else :class:`MissingDataError`."""
    base = os.path.join(data_dir(root), name, *([config] if config else []))
    versions = [v for v in glob.glob(os.path.join(base, "*")) if os.path.isfile(os.path.join(v, INFO))]
    if not versions:
        raise MissingDataError(f"{name} is not prepared under {base}; {how_to_get}")
    return max(versions, key=lambda v: _version_key(os.path.basename(v)))


def shard_files(dataset_path: str, split: str) -> List[str]:
    """The shard files of ``split``, in order."""
    info = json.load(open(os.path.join(dataset_path, INFO)))
    name = info.get("name") or os.path.basename(os.path.dirname(dataset_path))
    files = []
    for pattern in (f"{name}-{split}.tfrecord-*", f"{name}-{split}.array_record-*"):
        files = sorted(glob.glob(os.path.join(dataset_path, pattern)))
        if files:
            break
    if not files:
        raise MissingDataError(f"{dataset_path} has no shards for split {split!r}; prepare the dataset again")
    return files


def _array_records(path: str) -> List[bytes]:
    try:
        from array_record.python.array_record_module import ArrayRecordReader
    except ImportError:
        raise MissingDataError(
            f"{path} is in ArrayRecord format; pip install array-record to read it "
            "(or prepare the dataset with --file_format=tfrecord)"
        ) from None
    reader = ArrayRecordReader(path)
    try:
        return list(reader.read_all())
    finally:
        reader.close()


def read_split(dataset_path: str, split: str, features: Sequence[str]) -> Dict[str, list]:
    """``{feature: [value per example]}`` of ``split``: bytes for bytes features, a scalar for ints/floats."""
    out: Dict[str, list] = {name: [] for name in features}
    for path in shard_files(dataset_path, split):
        records = _array_records(path) if ".array_record-" in path else tfrecord.read_records(path)
        for record in records:
            example = tfrecord.parse_example(record)
            for name in features:
                if name not in example:
                    raise ValueError(f"{path}: an example has no feature {name!r}; it has {sorted(example)}")
                value = example[name]
                out[name].append(value[0] if len(value) == 1 else value)
    return out


def write_split(dataset_path: str, name: str, split: str, examples: Sequence[dict], num_shards: int = 1) -> None:
    """Write ``examples`` as TFDS TFRecord shards of ``split`` (and ``dataset_info.json`` if missing).

    For fixtures and conversions: the layout and record format :func:`read_split` reads.
    """
    os.makedirs(dataset_path, exist_ok=True)
    info_path = os.path.join(dataset_path, INFO)
    info = json.load(open(info_path)) if os.path.exists(info_path) else {"name": name, "splits": [],
                                                                        "fileFormat": "tfrecord"}
    bounds = [len(examples) * i // num_shards for i in range(num_shards + 1)]
    shards = [examples[bounds[i]:bounds[i + 1]] for i in range(num_shards)]
    for index, shard in enumerate(shards):
        path = os.path.join(dataset_path, f"{name}-{split}.tfrecord-{index:05d}-of-{num_shards:05d}")
        tfrecord.write_records(path, [tfrecord.encode_example(e) for e in shard])
    info["splits"] = [s for s in info["splits"] if s["name"] != split] + [
        {"name": split, "shardLengths": [str(len(s)) for s in shards]}
    ]
    with open(info_path, "w") as f:
        json.dump(info, f, indent=1)
