"""Timing helpers for the PyTorch peer scripts (they run in their own process; no JAX here)."""

from __future__ import annotations

import json
import statistics


def emit(**record) -> None:
    """Print one JSON line, flushed at once."""
    print(json.dumps(record, default=str), flush=True)


def time_ms(torch, fn, warmup: int = 5, iters: int = 20) -> float:
    """Median CUDA-event time of ``fn()`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
