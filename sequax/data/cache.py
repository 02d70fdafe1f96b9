"""A local cache of generated or decoded datasets, written once, with a manifest.

A dataset is a dict ``{split: {key: array [N, ...]}}``. :func:`cached_splits`
returns it from ``<root>/<name>/<version>-<hash of params>/`` when that
directory holds a complete copy, else builds it (``build()``), writes it there
and returns it. The directory holds one ``<split>.<key>.npy`` per array and
``manifest.json``::

    {"generator": "listops", "version": 1, "params": {..., "seed": 0},
     "arrays": {"train/inputs": {"shape": [96000, 2000], "dtype": "uint8", "sha256": "..."}, ...},
     "created": "2026-12-01T10:00:00"}

Loading checks every array's shape, dtype and SHA-256 against the manifest; a
copy that fails (a truncated file, an edit) is rebuilt. Writes go to a
temporary directory renamed into place, so a killed build leaves nothing that
looks complete and concurrent builders never see each other's half-written
files. The root is ``cache_dir``, else ``$SEQUAX_CACHE``, else
``~/.cache/sequax``. Arrays load memory-mapped (read-only).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from sequax.data.base import Task

CACHE_ENV = "SEQUAX_CACHE"
MANIFEST = "manifest.json"
Splits = Dict[str, Dict[str, np.ndarray]]

_LOADED: Dict[str, Splits] = {}  # directory -> arrays, so one process checks a copy once


def cache_root(cache_dir: Optional[str] = None) -> str:
    """The cache root: ``cache_dir``, else ``$SEQUAX_CACHE``, else ``~/.cache/sequax``."""
    return os.path.abspath(os.path.expanduser(
        cache_dir or os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "sequax")
    ))


def params_hash(params: Mapping[str, Any]) -> str:
    """12 hex digits identifying ``params`` (JSON, sorted keys)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(name: str, version: int, params: Mapping[str, Any], cache_dir: Optional[str] = None) -> str:
    """Where the dataset ``name`` at ``version`` built from ``params`` lives."""
    return os.path.join(cache_root(cache_dir), name, f"v{version}-{params_hash(params)}")


def array_sha256(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    step = 1 << 26
    for start in range(0, flat.size, step):
        digest.update(flat[start:start + step])
    return digest.hexdigest()


def read_manifest(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_checked(path: str) -> Optional[Splits]:
    """The arrays under ``path`` if they match its manifest (shapes, dtypes, checksums), else ``None``."""
    manifest = read_manifest(path)
    if manifest is None:
        return None
    splits: Splits = {}
    for entry, meta in manifest.get("arrays", {}).items():
        split, key = entry.split("/", 1)
        try:
            array = np.load(os.path.join(path, f"{split}.{key}.npy"), mmap_mode="r")
        except (OSError, ValueError):
            return None
        if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"] \
                or array_sha256(array) != meta["sha256"]:
            return None
        splits.setdefault(split, {})[key] = array
    return splits or None


def write(path: str, splits: Splits, manifest: Dict[str, Any]) -> None:
    """Write ``splits`` and ``manifest`` (plus array entries) to ``path`` atomically."""
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=parent)
    try:
        arrays = {}
        for split, keyed in splits.items():
            for key, array in keyed.items():
                array = np.ascontiguousarray(array)
                np.save(os.path.join(tmp, f"{split}.{key}.npy"), array)
                arrays[f"{split}/{key}"] = {
                    "shape": list(array.shape), "dtype": str(array.dtype), "sha256": array_sha256(array)
                }
        manifest = {**manifest, "arrays": arrays,
                    "created": datetime.datetime.now().isoformat(timespec="seconds")}
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        if os.path.isdir(path):
            if load_checked(path) is not None:  # another process finished first: keep its copy
                shutil.rmtree(tmp, ignore_errors=True)
                return
            shutil.rmtree(path, ignore_errors=True)  # a broken copy
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_splits(name: str, version: int, params: Mapping[str, Any], build: Callable[[], Splits],
                  cache_dir: Optional[str] = None, log: Callable[[str], None] = print) -> Splits:
    """Dataset ``name`` (``{split: {key: array}}``) from the cache, built by ``build()`` when missing.

    ``params`` (JSON-able, including the seed) and ``version`` (bump it when
    the generator changes) name the copy; the manifest records both.
    """
    path = cache_path(name, version, params, cache_dir)
    if path in _LOADED:
        return _LOADED[path]
    splits = load_checked(path)
    if splits is None:
        if os.path.isdir(path):
            log(f"{name}: the cached copy in {path} does not match its manifest; rebuilding it")
        else:
            log(f"{name}: building {path} (once; later runs read it)")
        built = build()
        write(path, built, {"generator": name, "version": version, "params": dict(params)})
        splits = load_checked(path)
        if splits is None:
            raise ValueError(f"{name}: the copy written to {path} does not read back; check the disk")
    _LOADED[path] = splits
    return splits


def split_sizes(num_train: int, num_validation: int, num_test: int) -> Dict[str, int]:
    """``{split: N}`` with ``ValueError`` naming a size that is not a positive int."""
    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    for split, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            name = "num_" + split
            raise ValueError(f"{name} must be a positive int, got {size!r}")
    return {split: int(size) for split, size in sizes.items()}


def default_workers(num_workers: int) -> int:
    """``num_workers``, or the CPU count when it is 0."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (0: one per CPU), got {num_workers}")
    return num_workers or os.cpu_count() or 1


def parallel_map(fn: Callable, items, num_workers: int):
    """``[fn(item) for item in items]``, in order, over ``num_workers`` processes (1: in this one).

    Workers start fresh (``spawn``), so ``fn`` must be a module-level function
    (or a ``functools.partial`` of one); results do not depend on the worker count.
    """
    items = list(items)
    if num_workers <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(num_workers, len(items)), mp_context=context) as pool:
        return list(pool.map(fn, items))


class CachedClassification(Task):
    """A classification dataset whose splits are arrays ``inputs`` / ``label`` / ``lengths`` (``[N, ...]``)."""

    kind = "classification"
    splits: Splits

    def num_examples(self, split):
        super().num_examples(split)
        return len(self.splits[split]["label"])

    def examples(self, split, indices):
        arrays = self.splits[split]
        indices = np.asarray(indices)
        return {
            "inputs": np.asarray(arrays["inputs"][indices], np.int32),
            "label": np.asarray(arrays["label"][indices], np.int32),
            "lengths": np.asarray(arrays["lengths"][indices], np.int32),
        }
