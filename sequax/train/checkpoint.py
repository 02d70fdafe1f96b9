"""Checkpoints with orbax: the train state plus JSON metadata (data position, model config).

- **Atomic saves.** Orbax writes a step into ``<step>.orbax-checkpoint-tmp``
  and renames it to ``<step>`` only when every file is written, so a kill
  during a save leaves the previous steps as they were and a temporary
  directory that is never read (and is removed by the next run). Saves are
  synchronous: a step directory is complete before training goes on. Old steps
  are deleted (beyond ``keep``) only after the new one is committed.
- **Checked restores.** After each save, ``sequax_manifest.json`` in the step
  records every file's size and CRC-32. Restoring starts at the newest step:
  a step whose files do not match, or that orbax cannot read, is reported in
  one line (step and file), set aside as ``<step>.unreadable`` (renamed, never
  deleted) and the next older one is tried. With none left, :class:`CheckpointError`
  says what to do.
- **The right model.** The stored parameter and state shapes are compared with
  the current model's before the state is read, so a workdir holding another
  model (or optimizer) is refused with a ``ValueError`` and left as it was.
- **Several processes, other meshes.** Every process saves and restores its
  own shards (orbax); process 0 alone writes manifests and sets steps aside.
  Restoring takes an explicit abstract target whose shardings are the current
  mesh's, so a checkpoint written on one mesh (or process count) restores onto
  another.
"""

from __future__ import annotations

import json
import os
import re
import sys
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import orbax.checkpoint as ocp

MANIFEST = "sequax_manifest.json"
SET_ASIDE = ".unreadable"
_ITEMS = ("state", "meta")


class CheckpointError(ValueError):
    """No checkpoint in the directory can be read (the unreadable ones were set aside)."""


def _key(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def parameter_shapes(params) -> Dict[str, list]:
    """``{"block_0/mixer/query/kernel": [64, 4, 16], ...}`` for a params pytree."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {_key(path): list(leaf.shape) for path, leaf in flat}


def state_layout(state) -> Dict[str, str]:
    """``{leaf path: "float32[64,4,16]"}`` for a whole train state (params, optimizer state, ...)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {
        _key(path): f"{jax.numpy.dtype(leaf.dtype).name}{list(leaf.shape)}".replace(" ", "")
        for path, leaf in flat
    }


def _first_difference(stored: Dict, current: Dict) -> str:
    key = min(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    return f"{key}: {stored.get(key)} there, {current.get(key)} now"


def _file_record(path: str) -> List[int]:
    crc = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(block, crc)
    return [os.path.getsize(path), crc]


def _files(step_dir: str) -> List[str]:
    out = []
    for base, _, names in os.walk(step_dir):
        out.extend(os.path.relpath(os.path.join(base, n), step_dir) for n in names)
    return sorted(f for f in out if not f.startswith(MANIFEST))


class Checkpointer:
    """Saves every ``every`` steps (and when forced), keeps the newest ``keep``; restores the newest intact.

    Nothing is read or written on construction.
    """

    def __init__(self, directory: str, *, keep: int, every: int,
                 report: Optional[Callable[[str], None]] = None):
        self.directory = os.path.abspath(directory)
        self.keep, self.every = max(int(keep), 1), int(every)
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self._writer = None

    def steps(self) -> List[int]:
        """Committed steps in the directory, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(int(d) for d in os.listdir(self.directory) if d.isdigit())

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    # ------------------------------------------------------------------ restore

    def restore(self, abstract_state, expected_shapes: Dict[str, list]
                ) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
        """``(step, state, meta)`` from the newest readable step, or ``None`` if there is no step.

        ``abstract_state`` is the target (shapes, dtypes, shardings);
        ``expected_shapes`` the current model's :func:`parameter_shapes`.
        """
        steps = self.steps()
        if not steps:
            return None
        reader = ocp.CheckpointManager(  # writes nothing: no directory creation, no cleanup
            self.directory, options=ocp.CheckpointManagerOptions(create=False), item_names=_ITEMS
        )
        try:
            return self._restore_newest(reader, steps, abstract_state, expected_shapes)
        finally:
            reader.close()

    def _restore_newest(self, reader, steps, abstract_state, expected_shapes):
        set_aside = []
        for step in reversed(steps):
            problem = self.verify(step)
            if problem is None:
                try:
                    meta = reader.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                except Exception as error:  # noqa: BLE001 - any failure to read is reported below
                    problem = self._locate(step, error)
            if problem is None:
                self._check_compatible(step, meta, abstract_state, expected_shapes)
                try:
                    state = reader.restore(
                        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                    )["state"]
                    return step, state, meta
                except Exception as error:  # noqa: BLE001
                    problem = self._locate(step, error)
            set_aside.append(step)
            self._set_aside(step, problem)
        raise CheckpointError(
            f"no readable checkpoint left in {self.directory}: step(s) "
            f"{', '.join(map(str, set_aside))} could not be read and were set aside as <step>{SET_ASIDE}; "
            "rerun to start again from step 0, or pass another --workdir"
        )

    def _check_compatible(self, step, meta, abstract_state, expected_shapes) -> None:
        stored = meta.get("parameter_shapes", {})
        if stored != expected_shapes:
            raise ValueError(
                f"the checkpoint in {self.directory} (step {step}) was written by a model with other "
                f"parameters (first difference: {_first_difference(stored, expected_shapes)}); use "
                "another --workdir or the model config it was trained with"
            )
        stored, current = meta.get("state_layout"), state_layout(abstract_state)
        if stored is not None and stored != current:
            raise ValueError(
                f"the checkpoint in {self.directory} (step {step}) holds a train state of another layout "
                f"(first difference: {_first_difference(stored, current)}); use the optimizer config it "
                "was trained with, or another --workdir"
            )

    def verify(self, step: int) -> Optional[str]:
        """``None`` if step ``step``'s files match its manifest (or it has none), else what is wrong."""
        step_dir = self.step_dir(step)
        manifest_path = os.path.join(step_dir, MANIFEST)
        if not os.path.exists(manifest_path):
            return None
        try:
            with open(manifest_path) as f:
                records = json.load(f)["files"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"{MANIFEST}: unreadable ({type(error).__name__})"
        for name, (size, crc) in sorted(records.items()):
            path = os.path.join(step_dir, name)
            if not os.path.isfile(path):
                return f"{name}: missing"
            actual_size, actual_crc = _file_record(path)
            if actual_size < size:
                return f"{name}: truncated to {actual_size} of its {size} bytes"
            if actual_size != size:
                return f"{name}: {actual_size} bytes, {size} when written"
            if actual_crc != crc:
                return f"{name}: contents changed since written (checksum mismatch)"
        return None

    def _locate(self, step: int, error: Exception) -> str:
        """Which file of step ``step`` made ``error``, as ``"FILE: reason"``."""
        if isinstance(error, PermissionError) or "permission denied" in str(error).lower():
            raise error  # the disk, not the checkpoint, is at fault: an OS error for the caller
        step_dir = self.step_dir(step)
        files = _files(step_dir)
        for name in files:
            if os.path.getsize(os.path.join(step_dir, name)) == 0:
                return f"{name}: empty"
        for name in files:  # orbax's metadata files are JSON; array data lives under d/ folders
            if "d" in name.split(os.sep)[:-1]:
                continue
            with open(os.path.join(step_dir, name), "rb") as f:
                if f.read(1) not in (b"{", b"["):
                    continue
                f.seek(0)
                try:
                    json.load(f)
                except ValueError:
                    return f"{name}: not valid JSON"
        text = str(error)
        named = [m for m in re.findall(re.escape(step_dir) + r"/[^\s\"',]*", text)]
        reason = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
        reason = reason.split(". See ")[0]  # TensorStore appends its whole spec
        reason = reason[:160] + ("..." if len(reason) > 160 else "")
        where = os.path.relpath(max(named, key=len), step_dir) if named else "."
        return f"{where}: {type(error).__name__}: {reason}"

    def _set_aside(self, step: int, problem: str) -> None:
        if jax.process_index() != 0:  # several processes read one directory: process 0 renames and reports
            return
        target, n = self.step_dir(step) + SET_ASIDE, 1
        while os.path.exists(target):
            n += 1
            target = f"{self.step_dir(step)}{SET_ASIDE}-{n}"
        os.rename(self.step_dir(step), target)
        self.report(
            f"checkpoint step {step} in {self.directory} cannot be read ({problem}); "
            f"set aside as {os.path.basename(target)}, trying an older one"
        )

    # ------------------------------------------------------------------ save

    def due(self, step: int) -> bool:
        """Whether step ``step`` is one ``every`` asks to save."""
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state, meta: Dict[str, Any], *, force: bool = False) -> bool:
        """Save ``state`` and ``meta`` as step ``step`` if it is due (or ``force``); ``True`` if saved."""
        if not force and not self.due(step):
            return False
        if step in self.steps():
            return False
        if self._writer is None:
            self._writer = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.keep, create=True, enable_async_checkpointing=False,
                    cleanup_tmp_directories=True,
                ),
                item_names=_ITEMS,
            )
        meta = {**meta, "state_layout": state_layout(state)}
        self._writer.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self._writer.wait_until_finished()
        if jax.process_index() == 0:  # every process wrote its shards; one records the files
            self._write_manifest(step)
        return True

    def _write_manifest(self, step: int) -> None:
        step_dir = self.step_dir(step)
        records = {name: _file_record(os.path.join(step_dir, name)) for name in _files(step_dir)}
        tmp = os.path.join(step_dir, f"{MANIFEST}.tmp")
        with open(tmp, "w") as f:
            json.dump({"files": records}, f)
        os.replace(tmp, os.path.join(step_dir, MANIFEST))

    def close(self):
        if self._writer is not None:
            self._writer.wait_until_finished()
            self._writer.close()
            self._writer = None
