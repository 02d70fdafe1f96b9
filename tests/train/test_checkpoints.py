"""Checkpoints survive corruption and kills: set aside in one line, restored from the newest intact one."""

import glob
import os
import shutil
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.train.checkpoint import SET_ASIDE, Checkpointer, CheckpointError, parameter_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_state(step):
    return {
        "params": {"w": jnp.arange(256 * 64.0).reshape(256, 64) + step, "b": jnp.arange(32.0) + step},
        "opt_state": {"mu": jnp.full((256, 64), step / 2.0)},
        "rng": jax.random.PRNGKey(step),
    }


SHAPES = parameter_shapes(make_state(0)["params"])
ABSTRACT = jax.eval_shape(lambda: make_state(0))


def save_steps(directory, steps=(2, 4, 6)):
    checkpointer = Checkpointer(directory, keep=3, every=2)
    for step in steps:
        assert checkpointer.save(step, make_state(step), {"parameter_shapes": SHAPES, "step": step})
    checkpointer.close()


def restore(directory):
    lines = []
    restored = Checkpointer(directory, keep=3, every=2, report=lines.append).restore(ABSTRACT, SHAPES)
    return restored, lines


def largest_state_file(step_dir):
    """The largest array data file (TensorStore keeps them in ``d/`` folders)."""
    files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    return max(files, key=os.path.getsize)


def truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def flip_a_byte(path):
    content = bytearray(open(path, "rb").read())
    content[len(content) // 2] ^= 0xFF
    open(path, "wb").write(bytes(content))


def empty(path):
    open(path, "w").close()


CORRUPTIONS = {  # name: (damage the step directory, what the report names)
    "truncated data": (lambda d: truncate(largest_state_file(d)), "/d/"),
    "flipped byte": (lambda d: flip_a_byte(largest_state_file(d)), "checksum mismatch"),
    "empty meta": (lambda d: empty(os.path.join(d, "meta", "metadata")), "meta/metadata"),
    "empty _METADATA": (lambda d: empty(os.path.join(d, "state", "_METADATA")), "state/_METADATA"),
    # Without the manifest (a kill between the commit and the manifest): orbax's own errors.
    "no manifest, empty meta": (
        lambda d: (os.remove(os.path.join(d, "sequax_manifest.json")), empty(os.path.join(d, "meta", "metadata"))),
        "meta/metadata: empty",
    ),
    "no manifest, truncated data": (
        lambda d: (os.remove(os.path.join(d, "sequax_manifest.json")), truncate(largest_state_file(d))),
        "state",
    ),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_newest_is_set_aside_and_the_previous_restored(tmp_path, corruption):
    damage, named = CORRUPTIONS[corruption]
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    damage(os.path.join(directory, "6"))
    (step, state, meta), lines = restore(directory)
    assert step == 4 and meta["step"] == 4
    jax.tree_util.tree_map(np.testing.assert_array_equal, state, make_state(4))
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith(f"checkpoint step 6 in {directory} cannot be read (") and named in lines[0], lines
    assert sorted(os.listdir(directory)) == ["2", "4", "6" + SET_ASIDE]  # renamed, never deleted
    assert Checkpointer(directory, keep=3, every=2).steps() == [2, 4]


def test_no_intact_checkpoint_is_one_line_saying_what_to_do(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory, steps=(2, 4))
    for step in (2, 4):
        empty(os.path.join(directory, str(step), "meta", "metadata"))
    with pytest.raises(CheckpointError, match=r"no readable checkpoint left in .*: step\(s\) 4, 2 could not be "
                       r"read and were set aside as <step>\.unreadable; rerun to start again from step 0") as info:
        restore(directory)
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(directory)) == ["2" + SET_ASIDE, "4" + SET_ASIDE]


def test_another_model_is_refused_without_setting_anything_aside(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory, steps=(2,))
    other = {"w": jax.ShapeDtypeStruct((64, 16), jnp.float32), "b": jax.ShapeDtypeStruct((32,), jnp.float32)}
    with pytest.raises(ValueError, match=r"other parameters \(first difference: w: \[256, 64\] there, \[64, 16\]"):
        Checkpointer(directory, keep=3, every=2).restore(ABSTRACT, parameter_shapes(other))
    other_optimizer = {**ABSTRACT, "opt_state": {"nu": ABSTRACT["opt_state"]["mu"]}}
    with pytest.raises(ValueError, match="holds a train state of another layout .*optimizer config"):
        Checkpointer(directory, keep=3, every=2).restore(other_optimizer, SHAPES)
    assert os.listdir(directory) == ["2"]


def test_a_partly_written_step_is_ignored_and_rewritten(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory, steps=(2, 4))
    partial = os.path.join(directory, "6.orbax-checkpoint-tmp")
    shutil.copytree(os.path.join(directory, "4"), partial)
    truncate(largest_state_file(partial))
    (step, _, _), lines = restore(directory)
    assert step == 4 and not lines
    checkpointer = Checkpointer(directory, keep=3, every=2)
    assert checkpointer.save(6, make_state(6), {"parameter_shapes": SHAPES, "step": 6})
    checkpointer.close()
    assert sorted(os.listdir(directory)) == ["2", "4", "6"]
    (step, state, _), _ = restore(directory)
    assert step == 6
    jax.tree_util.tree_map(np.testing.assert_array_equal, state, make_state(6))


KILL_AT_COMMIT = """
import os, signal, sys
from orbax.checkpoint._src.path import atomicity
from tests.train.test_checkpoints import SHAPES, make_state
from sequax.train.checkpoint import Checkpointer

checkpointer = Checkpointer(sys.argv[1], keep=3, every=2)
checkpointer.save(2, make_state(2), {"parameter_shapes": SHAPES, "step": 2})
commit = atomicity.AtomicRenameTemporaryPath.finalize

async def finalize(self, *args, **kwargs):
    if self.get_final().name == "4":  # every file of step 4 is written; the rename would commit it
        os.kill(os.getpid(), signal.SIGKILL)
    return await commit(self, *args, **kwargs)

atomicity.AtomicRenameTemporaryPath.finalize = finalize
checkpointer.save(4, make_state(4), {"parameter_shapes": SHAPES, "step": 4})
"""


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_readable(tmp_path):
    directory = str(tmp_path / "checkpoints")
    result = subprocess.run([sys.executable, "-c", KILL_AT_COMMIT, directory], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert sorted(os.listdir(directory)) == ["2", "4.orbax-checkpoint-tmp"]
    (step, state, _), lines = restore(directory)
    assert step == 2 and not lines
    jax.tree_util.tree_map(np.testing.assert_array_equal, state, make_state(2))
    checkpointer = Checkpointer(directory, keep=3, every=2)
    assert checkpointer.save(4, make_state(4), {"parameter_shapes": SHAPES, "step": 4})
    checkpointer.close()
    assert sorted(os.listdir(directory)) == ["2", "4"]  # the unfinished save was cleaned up
