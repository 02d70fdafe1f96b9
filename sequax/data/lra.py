"""The Long Range Arena's data-backed tasks: Text, Retrieval and Image.

- ``lra_text``: byte-level IMDB sentiment (2 classes), from the TFDS dataset
  ``imdb_reviews`` (25K train / 25K test); reviews cut to ``max_length`` bytes
  (4096, as S4 and S5). The LRA has no separate validation set for Text; the
  validation split is the test split, as in the published runs.
- ``lra_retrieval``: byte-level ACL Anthology Network citation matching (2
  classes), from the LRA release's ``new_aan_pairs.{train,eval,test}.tsv``
  (AAN is no TFDS dataset); each document cut to ``max_length`` (4000) bytes;
  ``inputs`` ``[batch, 2, max_length]`` for the two-tower ``retrieval`` head.
- ``lra_image``: CIFAR-10 in grayscale as 1024 pixel tokens (10 classes), from
  the TFDS dataset ``cifar10``: the first 45K training images train, the last
  5K validate, the 10K test images test. Grayscale as the LRA:
  ``round(0.2989 R + 0.5870 G + 0.1140 B)``.

Bytes and pixels are the tokens (``vocab_size`` 256); text is 0-padded (byte
0 never occurs in text) and ``lengths`` holds the real lengths. Data is read
with plain numpy (:mod:`sequax.data.tfds_sources`; no TensorFlow at training
time) and decoded once into the local cache (:mod:`sequax.data.cache`).
Missing data raises :class:`~sequax.data.tfds_sources.MissingDataError` (a
``ValueError``) with one line naming the download step.
"""

from __future__ import annotations

import io
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from sequax.data import cache, tfds_sources
from sequax.data.registry import register_task

VERSION = 1
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
LRA_RELEASE = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
TFDS_STEP = ("prepare it once with: pip install tensorflow-datasets tensorflow-cpu && "
             "tfds build {name} --data_dir {root} (TensorFlow is needed for that step only)")


def encode_bytes(texts: Sequence[bytes], max_length: int) -> (np.ndarray, np.ndarray):
    """Texts -> ``inputs`` uint8 ``[n, max_length]`` (0-padded, cut at ``max_length``) and ``lengths`` ``[n]``."""
    inputs = np.zeros((len(texts), max_length), np.uint8)
    lengths = np.zeros(len(texts), np.int32)
    for i, text in enumerate(texts):
        row = np.frombuffer(text[:max_length], np.uint8)
        inputs[i, :len(row)] = row
        lengths[i] = max(len(row), 1)  # an empty text still pools one (padding) position
    return inputs, lengths


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[..., 3]`` -> uint8 ``[...]`` with the LRA's weights, rounded."""
    gray = rgb.astype(np.float64) @ np.array(GRAY_WEIGHTS)
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _source_params(path: str) -> Dict[str, int]:
    """Names and sizes of the files under ``path``: a changed source gets a new cache entry."""
    return {name: os.path.getsize(os.path.join(path, name)) for name in sorted(os.listdir(path))
            if os.path.isfile(os.path.join(path, name))}


@register_task("lra_text")
class Text(cache.CachedClassification):
    """Byte-level IMDB: ``inputs`` int32 ``[batch, max_length]``, ``label`` 0/1, ``lengths`` ``[batch]``."""

    num_classes = 2
    vocab_size = 256

    def __init__(self, max_length: int = 4096, data_dir: Optional[str] = None, cache_dir: Optional[str] = None):
        self.check_positive(max_length=max_length)
        self.seq_len = int(max_length)
        root = tfds_sources.data_dir(data_dir)
        path = tfds_sources.find_dataset(
            "imdb_reviews", "plain_text", root, TFDS_STEP.format(name="imdb_reviews", root=root))
        params = dict(source=path, files=_source_params(path), max_length=self.seq_len)

        def build():
            splits = {}
            for split in ("train", "test"):
                data = tfds_sources.read_split(path, split, ("text", "label"))
                inputs, lengths = encode_bytes(data["text"], self.seq_len)
                splits[split] = {"inputs": inputs, "label": np.asarray(data["label"], np.uint8),
                                 "lengths": lengths}
            return splits

        splits = cache.cached_splits("lra_text", VERSION, params, build, cache_dir)
        self.splits = {**splits, "validation": splits["test"]}


@register_task("lra_image")
class Image(cache.CachedClassification):
    """Grayscale CIFAR-10: ``inputs`` int32 ``[batch, 1024]`` pixels (row-major), ``label`` 0-9."""

    num_classes = 10
    vocab_size = 256
    seq_len = 1024

    def __init__(self, num_validation: int = 5000, data_dir: Optional[str] = None,
                 cache_dir: Optional[str] = None):
        root = tfds_sources.data_dir(data_dir)
        path = tfds_sources.find_dataset("cifar10", None, root, TFDS_STEP.format(name="cifar10", root=root))
        params = dict(source=path, files=_source_params(path), num_validation=int(num_validation))

        def build():
            pixels: Dict[str, np.ndarray] = {}
            labels: Dict[str, np.ndarray] = {}
            for split in ("train", "test"):
                data = tfds_sources.read_split(path, split, ("image", "label"))
                pixels[split] = np.stack([grayscale(decode_png(png)).reshape(-1) for png in data["image"]])
                labels[split] = np.asarray(data["label"], np.uint8)
            train = len(labels["train"])
            if not 0 < num_validation < train:
                raise ValueError(f"num_validation must be between 1 and {train - 1}, got {num_validation}")
            keep = train - num_validation
            parts = {"train": (pixels["train"][:keep], labels["train"][:keep]),
                     "validation": (pixels["train"][keep:], labels["train"][keep:]),
                     "test": (pixels["test"], labels["test"])}
            return {split: {"inputs": x, "label": y, "lengths": np.full(len(y), self.seq_len, np.int32)}
                    for split, (x, y) in parts.items()}

        self.splits = cache.cached_splits("lra_image", VERSION, params, build, cache_dir)


AAN_FILES = {"train": "new_aan_pairs.train.tsv", "validation": "new_aan_pairs.eval.tsv",
             "test": "new_aan_pairs.test.tsv"}


def lra_data_dir(path: Optional[str] = None) -> str:
    """``path``, else ``$LRA_DATA_DIR``, else ``~/lra_release``: where the LRA release is unpacked."""
    return os.path.abspath(os.path.expanduser(
        path or os.environ.get("LRA_DATA_DIR") or os.path.join("~", "lra_release")))


def read_aan_tsv(path: str) -> Dict[str, List]:
    """The LRA's AAN pairs file: tab-separated ``label id1 id2 text1 text2`` per line, no header."""
    out: Dict[str, List] = {"label": [], "text1": [], "text2": []}
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            fields = line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != 5:
                raise ValueError(f"{path}:{number}: expected 5 tab-separated fields "
                                 f"(label id1 id2 text1 text2), got {len(fields)}")
            out["label"].append(int(float(fields[0])))
            out["text1"].append(fields[3])
            out["text2"].append(fields[4])
    return out


@register_task("lra_retrieval")
class Retrieval(cache.CachedClassification):
    """Byte-level AAN matching: ``inputs`` int32 ``[batch, 2, max_length]``, ``lengths`` ``[batch, 2]``,
    ``label`` 0/1 (the two papers are linked by a citation)."""

    num_classes = 2
    vocab_size = 256

    def __init__(self, max_length: int = 4000, data_dir: Optional[str] = None, cache_dir: Optional[str] = None):
        self.check_positive(max_length=max_length)
        self.seq_len = int(max_length)
        root = lra_data_dir(data_dir)
        folder = os.path.join(root, "lra_release", "tsv_data")
        if not os.path.isdir(folder):
            folder = os.path.join(root, "tsv_data")
        missing = [name for name in AAN_FILES.values() if not os.path.isfile(os.path.join(folder, name))]
        if missing:
            raise tfds_sources.MissingDataError(
                f"lra_retrieval needs the LRA release's {', '.join(missing)} in {folder}: download "
                f"{LRA_RELEASE} and unpack it into {root} (tar xzf lra_release.gz -C {root}), or pass data_dir"
            )
        params = dict(source=folder, files={n: os.path.getsize(os.path.join(folder, n)) for n in AAN_FILES.values()},
                      max_length=self.seq_len)

        def build():
            splits = {}
            for split, name in AAN_FILES.items():
                data = read_aan_tsv(os.path.join(folder, name))
                first, first_len = encode_bytes(data["text1"], self.seq_len)
                second, second_len = encode_bytes(data["text2"], self.seq_len)
                splits[split] = {"inputs": np.stack([first, second], 1),
                                 "label": np.asarray(data["label"], np.uint8),
                                 "lengths": np.stack([first_len, second_len], 1)}
            return splits

        self.splits = cache.cached_splits("lra_retrieval", VERSION, params, build, cache_dir)
