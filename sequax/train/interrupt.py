"""SIGINT (Ctrl-C) and SIGTERM (preemption) during training: stop cleanly, then resume.

While :class:`StopSignals` is active, the first SIGINT or SIGTERM only records
itself: the trainer finishes the current step (and its scheduled logging and
evaluations), saves a checkpoint, flushes the metrics and raises
:class:`TrainingInterrupted`, which ``experiments/train.py`` turns into one line
and the exit status ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).
The first signal also restores the signals' default action, so a second one
ends the process at once, even inside a long compiled step; checkpoints are
committed by an atomic rename, so the newest one on disk stays readable.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by signal ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at ``step`` on signal ``signum``, after saving a checkpoint there."""

    def __init__(self, step: int, signum: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved; rerun the same command to resume")
        self.step, self.signum, self.exit_status = step, signum, exit_status(signum)


class StopSignals:
    """Context manager: ``signum`` is the first SIGINT/SIGTERM received while active (else ``None``).

    Handlers can only be installed from the main thread; elsewhere (a worker
    thread) the signals keep their usual behaviour and ``signum`` stays ``None``.
    A signal the process ignores (SIGINT of a background job) stays ignored.
    """

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:  # e.g. SIGINT of a background job
                    self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        for s in self._previous:  # a second signal takes the default action: the process ends at once
            signal.signal(s, signal.SIG_DFL)

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
