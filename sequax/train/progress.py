"""Training progress on stdout: a live bar on a terminal, plain log lines otherwise.

On a terminal, a tqdm bar shows the step, loss, accuracy and tokens/s. When
stdout is not a terminal (a redirected log, a job scheduler, a notebook), each
``train.log_every`` steps print one line and nothing else is written, so logs
hold no carriage returns::

    step 50/1000: loss 3.1416 accuracy 0.2500 tokens/s 31,211 eta 0:01:35
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Dict, Optional, TextIO


def _terminal_columns(stream) -> int:
    """The width of the terminal ``stream`` writes to; 0 if it is none (or one of unknown size)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (AttributeError, OSError, ValueError):
        return 0


def _eta(seconds: Optional[float]) -> str:
    return "?" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Progress of steps ``start + 1 ... total`` on ``stream`` (stdout by default)."""

    def __init__(self, start: int, total: int, stream: Optional[TextIO] = None):
        self.stream = stream or sys.stdout
        self.start, self.total = start, total
        self.live = _terminal_columns(self.stream) > 0
        self.bar = None
        if self.live:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", file=self.stream, dynamic_ncols=True)
        self._clock = None  # (time, step) after the run's first step, which includes compilation

    def advance(self, step: int) -> None:
        """Step ``step`` is done."""
        if self._clock is None:
            self._clock = (time.perf_counter(), step)
        if self.bar is not None:
            self.bar.update(1)

    def seconds_left(self, step: int) -> Optional[float]:
        if self._clock is None or step <= self._clock[1]:
            return None
        per_step = (time.perf_counter() - self._clock[0]) / (step - self._clock[1])
        return per_step * (self.total - step)

    def log(self, step: int, metrics: Dict[str, float], tokens_per_second: float) -> None:
        """The training metrics logged at ``step``."""
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{metrics['loss']:.4f}", acc=f"{metrics['accuracy']:.3f}",
                tok_s=f"{tokens_per_second:,.0f}",
            )
            return
        self.write(
            f"step {step}/{self.total}: loss {metrics['loss']:.4f} accuracy {metrics['accuracy']:.4f} "
            f"tokens/s {tokens_per_second:,.0f} eta {_eta(self.seconds_left(step))}"
        )

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
