"""Training sharded over meshes: the same step as on one device, checkpoints across meshes and processes."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from sequax.train import train_and_evaluate
from tests.parallel.sharded_config import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESHES = {"data2_sequence4": dict(data=2, sequence=4), "fsdp4_tensor2": dict(fsdp=4, tensor=2)}


def params_of(summary):
    return jax.tree_util.tree_map(np.asarray, summary["state"].params)


def assert_close(got, want, **tolerance):
    tolerance = tolerance or dict(rtol=1e-5, atol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **tolerance), got, want)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two steps on one device and on each mesh of 8; their workdirs keep the final checkpoint."""
    root = tmp_path_factory.mktemp("sharded")
    out = {"single": (train_and_evaluate(tiny_config(), str(root / "single")), root / "single")}
    for name, mesh in MESHES.items():
        out[name] = (train_and_evaluate(tiny_config(**mesh), str(root / name)), root / name)
    return out


@pytest.mark.parametrize("mesh", sorted(MESHES))
def test_train_step_on_a_mesh_matches_one_device(runs, mesh):
    summary, _ = runs[mesh]
    assert_close(params_of(summary), params_of(runs["single"][0]))
    assert summary["train_loss"] == pytest.approx(runs["single"][0]["train_loss"], rel=1e-5)
    if mesh == "fsdp4_tensor2":  # FSDP and tensor parallelism really split the parameters
        kernel = summary["state"].params["block_0"]["mixer"]["query"]["kernel"]
        assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
        assert kernel.addressable_shards[0].data.shape == (8, 1, 16)


@pytest.mark.parametrize("target", [{}, dict(data=2, sequence=4)], ids=["one_device", "data2_sequence4"])
def test_a_checkpoint_of_8_devices_restores_on_another_mesh(runs, target):
    written, workdir = runs["fsdp4_tensor2"]
    restored = train_and_evaluate(tiny_config(**target), str(workdir))  # finished: restore only
    jax.tree_util.tree_map(np.testing.assert_array_equal, params_of(restored), params_of(written))
    leaf = restored["state"].params["block_0"]["mixer"]["query"]["kernel"]
    assert len(leaf.sharding.device_set) == (8 if target else 1)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def two_processes(workdir, num_steps, kill_at=None):
    port = free_port()
    script = os.path.join(ROOT, "tests", "parallel", "two_process_train.py")
    args = [str(workdir), str(num_steps)] + ([] if kill_at is None else [str(kill_at)])
    procs = [subprocess.Popen([sys.executable, script, str(i), str(port)] + args, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    return [p.returncode for p in procs], outputs


@pytest.mark.slow
def test_two_processes_train_are_killed_and_resume(tmp_path):
    workdir = tmp_path / "two"
    codes, outputs = two_processes(workdir, 7, kill_at=5)
    assert codes[0] == -9, outputs[0][-2000:]  # killed after the checkpoint at step 5
    assert (workdir / "checkpoints" / "5").is_dir()
    codes, outputs = two_processes(workdir, 7)
    assert codes == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "resuming from step 5 of 7" in outputs[0]
    # The same run uninterrupted in this process, on the same (data=2, fsdp=2) mesh of 4 devices.
    straight = train_and_evaluate(tiny_config(7, data=2, fsdp=2), str(tmp_path / "straight"))
    resumed = train_and_evaluate(tiny_config(7), str(workdir))  # written by 2 processes, read by one
    assert_close(params_of(resumed), params_of(straight), rtol=1e-6, atol=1e-7)
