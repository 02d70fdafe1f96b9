"""Checkpoints with orbax: the train state plus JSON metadata (data position, model config).

Restoring always goes through an explicit abstract target built from the
current model, and the stored parameter shapes are compared first, so a
workdir holding a different model is refused before anything is read into
memory or written.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import jax
import orbax.checkpoint as ocp


def parameter_shapes(params) -> Dict[str, list]:
    """``{"block_0/mixer/query/kernel": [64, 4, 16], ...}`` for a params pytree."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {
        "/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape) for path, leaf in flat
    }


class Checkpointer:
    """Saves every ``every`` steps and keeps the newest ``keep``; resumes from the latest."""

    def __init__(self, directory: str, *, keep: int, every: int):
        self.directory = os.path.abspath(directory)
        self.every = every
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max(keep, 1), create=True),
            item_names=("state", "meta"),
        )

    @staticmethod
    def exists(directory: str) -> bool:
        return os.path.isdir(directory) and bool(
            [d for d in os.listdir(directory) if d.isdigit()]
        )

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def check_compatible(self, params_shapes: Dict[str, list]) -> None:
        """``ValueError`` if the latest checkpoint holds other parameter shapes."""
        step = self.latest_step()
        if step is None:
            return
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        stored = meta.get("parameter_shapes", {})
        if stored != params_shapes:
            first = min(
                k for k in set(stored) | set(params_shapes) if stored.get(k) != params_shapes.get(k)
            )
            raise ValueError(
                f"the checkpoint in {self.directory} (step {step}) was written by a model with other "
                f"parameters (first difference: {first}: {stored.get(first)} there, "
                f"{params_shapes.get(first)} now); use another --workdir or the model config it was "
                "trained with"
            )

    def restore(self, abstract_state) -> Tuple[Any, Dict[str, Any]]:
        step = self.latest_step()
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def save(self, step: int, state, meta: Dict[str, Any], *, force: bool = False) -> bool:
        if not force and (self.every <= 0 or step % self.every):
            return False
        if self.latest_step() == step:
            return False
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        return True

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
