"""Training subprocesses stopped by SIGTERM, SIGINT and SIGKILL (and a corrupted checkpoint) resume exactly.

Each run is ``experiments/train.py`` on the tiny 300-step config
(``tests/train/tiny_run_config.py``), stdout a pipe (so progress is plain log
lines). The runs share a JAX compilation cache, so only the first compiles.
Every interrupted workdir must end bit-equal to an uninterrupted run:
parameters, optimizer state, RNG, step, data position and metrics history.
"""

import glob
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sequax.train.trainer import TIMING_METRICS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "tests/train/tiny_run_config.py"
SLOW_COMMIT = "tests/train/slow_commit_train.py"
NUM_STEPS = 300
STEP_LINE = re.compile(r"step (\d+)/300: loss \d+\.\d{4} accuracy \d\.\d{4} tokens/s [\d,]+ eta (\d+:\d\d:\d\d|\?)")
INTERRUPTED = re.compile(r"interrupted at step (\d+); checkpoint saved; rerun the same command to resume")


_RUNS = itertools.count()


class Training:
    """One training subprocess: stdout read line by line, stderr to a file, killed after ``timeout`` s."""

    def __init__(self, workdir, env, script="experiments/train.py", timeout=240):
        self.workdir = workdir
        self.stderr_path = f"{workdir}.stderr.{next(_RUNS)}"
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, script, "--config", CONFIG, "--workdir", str(workdir)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr,  # bytes: any "\r" stays visible
            )
        self.watchdog = threading.Timer(timeout, self.proc.kill)
        self.watchdog.start()
        self.lines = []

    def read_until(self, predicate) -> str:
        for line in self.proc.stdout:
            line = line.decode()
            self.lines.append(line)
            if predicate(line.rstrip("\n")):
                return line.rstrip("\n")
        raise AssertionError(f"the run ended first: {''.join(self.lines[-5:])}{self.stderr_text()}")

    def until_step(self, step: int) -> int:
        """Read up to the first log line at ``step`` or later; its step."""
        def at_step(text):
            match = STEP_LINE.fullmatch(text)
            return match is not None and int(match.group(1)) >= step

        return int(STEP_LINE.fullmatch(self.read_until(at_step)).group(1))

    def finish(self) -> int:
        self.lines.extend(line.decode() for line in self.proc.stdout.readlines())
        code = self.proc.wait()
        self.watchdog.cancel()
        self.proc.stdout.close()
        return code

    def stdout_lines(self):
        return [line.rstrip("\n") for line in self.lines]

    def stderr_text(self) -> str:
        with open(self.stderr_path) as f:
            return f.read()


def committed_steps(workdir):
    return sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())


def final_checkpoint(workdir):
    step_dir = workdir / "checkpoints" / str(NUM_STEPS)
    state = ocp.StandardCheckpointer().restore(str(step_dir / "state"))
    with open(step_dir / "meta" / "metadata") as f:
        meta = json.load(f)
    return state, meta


def history_without_timing(workdir):
    with open(workdir / "metrics.json") as f:
        metrics = json.load(f)
    history = {name: values for name, values in metrics.pop("history").items() if name not in TIMING_METRICS}
    metrics.pop("tokens_per_second")
    return history, metrics


def assert_same_run(workdir, reference):
    state, meta = final_checkpoint(workdir)
    expected_state, expected_meta = final_checkpoint(reference)
    assert set(state) == {"step", "params", "opt_state", "rng"}
    jax.tree_util.tree_map(np.testing.assert_array_equal, state, expected_state)
    for key in ("data_position", "log_window", "parameter_shapes"):
        assert meta[key] == expected_meta[key], key
    history, summary = history_without_timing(workdir)
    expected_history, expected_summary = history_without_timing(reference)
    assert history == expected_history
    assert summary == expected_summary


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_compilation_cache")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory, env):
    """An uninterrupted run, and its process's output."""
    workdir = tmp_path_factory.mktemp("straight") / "w"
    run = Training(workdir, env)
    assert run.finish() == 0, run.stderr_text()
    return workdir, run


def test_plain_log_lines_when_stdout_is_not_a_terminal(straight):
    workdir, run = straight
    lines = run.stdout_lines()
    assert lines[0] == f"starting {workdir}"
    steps = [int(m.group(1)) for m in map(STEP_LINE.fullmatch, lines) if m]
    assert steps == list(range(10, NUM_STEPS + 1, 10))  # one line every train.log_every steps
    assert [line.split(":")[0] for line in lines if " eval loss " in line] == ["step 100", "step 200", "step 300"]
    assert lines[-1].startswith("step=300 train_loss=")
    assert len(lines) == 1 + 30 + 3 + 1
    assert "\r" not in "".join(run.lines) + run.stderr_text()


def test_sigterm_then_sigint_twice_resume_exactly(straight, env, tmp_path):
    workdir = tmp_path / "w"
    # SIGTERM: the step finishes, a checkpoint is saved there, exit status 143.
    first = Training(workdir, env)
    reached = first.until_step(110)
    first.proc.send_signal(signal.SIGTERM)
    assert first.finish() == 143, first.stderr_text()
    stopped = INTERRUPTED.fullmatch(first.stdout_lines()[-1])
    assert stopped, first.stdout_lines()[-3:]
    stopped_at = int(stopped.group(1))
    assert stopped_at >= reached and committed_steps(workdir)[-1] == stopped_at
    assert "Traceback" not in first.stderr_text()

    # SIGINT, then a second SIGINT in the middle of the checkpoint save: the process ends at once.
    second = Training(workdir, env, script=SLOW_COMMIT)
    assert second.read_until(lambda line: True) == f"resuming from step {stopped_at} of {NUM_STEPS} in {workdir}"
    second.until_step(stopped_at + 60)
    second.proc.send_signal(signal.SIGINT)
    saving = int(second.read_until(lambda line: line.startswith("committing ")).split()[1])
    second.proc.send_signal(signal.SIGINT)
    assert second.finish() == -signal.SIGINT
    newest = committed_steps(workdir)[-1]
    assert newest < saving and os.path.isdir(workdir / "checkpoints" / f"{saving}.orbax-checkpoint-tmp")

    third = Training(workdir, env)
    assert third.finish() == 0, third.stderr_text()
    assert third.stdout_lines()[0] == f"resuming from step {newest} of {NUM_STEPS} in {workdir}"
    assert_same_run(workdir, straight[0])


def test_sigkill_at_three_random_points_and_a_corrupted_checkpoint(straight, env, tmp_path):
    workdir = tmp_path / "w"
    rng = random.Random(8)  # one random step in each of three spans (kills land just after its log line)
    targets = [rng.randrange(60, 140), rng.randrange(140, 220), rng.randrange(220, NUM_STEPS - 5)]
    corrupted = None
    for i, target in enumerate(targets):
        run = Training(workdir, env)
        run.until_step(target)
        run.proc.kill()
        assert run.finish() == -signal.SIGKILL
        if corrupted is not None:  # the run after the corruption set it aside and resumed before it
            report = [line for line in run.stderr_text().splitlines() if line.startswith("checkpoint step")]
            assert len(report) == 1 and f"checkpoint step {corrupted} in " in report[0], run.stderr_text()
            assert f"set aside as {corrupted}.unreadable" in report[0]
            assert run.stdout_lines()[0] == f"resuming from step {previous} of {NUM_STEPS} in {workdir}"
        if i == 1:  # corrupt the newest checkpoint, once: a data file cut short
            *_, previous, corrupted = committed_steps(workdir)
            data = glob.glob(str(workdir / "checkpoints" / str(corrupted) / "state" / "**" / "d" / "*"),
                             recursive=True)
            path = max(data, key=os.path.getsize)
            os.truncate(path, os.path.getsize(path) // 2)
    final = Training(workdir, env)
    assert final.finish() == 0, final.stderr_text()
    assert os.path.isdir(workdir / "checkpoints" / f"{corrupted}.unreadable")
    assert_same_run(workdir, straight[0])
