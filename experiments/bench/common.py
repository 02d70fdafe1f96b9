"""Shared benchmark helpers: device timing, forward+backward, compiled memory, JSON lines.

Every figure a benchmark prints is a ratio measured in the same process (our
kernel vs the pure-JAX path vs cuDNN / a PyTorch peer run by the same script):
one JSON line per case, written with :func:`emit`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp


def emit(**record) -> None:
    """Print one JSON line (flushed at once, so a killed run keeps what it measured)."""
    print(json.dumps(record, default=str), flush=True)


def device_kind() -> str:
    return jax.devices()[0].device_kind


def time_ms(fn: Callable, *args, warmup: int = 2, iters: int = 10) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds, synchronised on the result."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - tic) * 1e3)
    return statistics.median(times)


def fwd_bwd(f: Callable, argnums):
    """``(forward, forward+backward)`` jitted: the backward sums the outputs against a fixed cotangent.

    The forward+backward returns the loss beside the gradients, as a training step does: with the
    gradients alone XLA drops every forward kernel whose outputs the backward does not read (a
    custom VJP that recomputes from the inputs), and the figure would be the backward's alone.
    """
    fwd = jax.jit(f)

    def loss(*args):
        out = f(*args)
        leaves = jax.tree_util.tree_leaves(out)
        return sum(jnp.sum(x.astype(jnp.float32) * 1e-3) for x in leaves)

    both = jax.jit(jax.value_and_grad(loss, argnums=argnums))
    return fwd, both


def temp_bytes(jitted: Callable, *args) -> Optional[int]:
    """Compiled temporary memory of ``jitted`` on ``args`` (None where XLA does not say)."""
    try:
        return int(jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - some backends report nothing
        return None


def run_case(name: str, measure: Callable[[], Dict], **info) -> None:
    """Run ``measure()`` (returning a dict of figures) and emit it, or the error, as one line."""
    try:
        emit(case=name, device=device_kind(), **info, **measure())
    except Exception as e:  # noqa: BLE001 - one failed case must not stop the others
        emit(case=name, device=device_kind(), **info, error=f"{type(e).__name__}: {str(e)[:400]}")
        traceback.print_exc(file=sys.stderr)


def layer_fwd_bwd(mixer: str, length: int, d_model: int = 1024, **mixer_kwargs) -> Dict:
    """One ``sequax.mixers`` layer (batch 1, bf16) forward + backward at ``length`` tokens.

    Returns ``fwd_bwd_ms``, ``us_per_token`` and the compiled temporaries.
    """
    from sequax.mixers import get

    module = get(mixer)(d_model=d_model, dtype=jnp.bfloat16, **mixer_kwargs)
    x = jax.random.normal(jax.random.PRNGKey(0), (1, length, d_model), jnp.bfloat16)
    params = jax.jit(module.init)(jax.random.PRNGKey(1), x[:, :64])

    def loss(params, x):
        return jnp.sum(module.apply(params, x).astype(jnp.float32) * 1e-3)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))  # the loss too: see fwd_bwd
    ms = time_ms(step, params, x, warmup=1, iters=3 if length >= 262144 else 10)
    return dict(fwd_bwd_ms=ms, us_per_token=ms * 1e3 / length, temp_bytes=temp_bytes(step, params, x),
                backend=getattr(module, "backend", None))


def run_peer(script: str, args, case: str, timeout_s: float):
    """Run the PyTorch peer ``script`` (a file beside this one) in its own process: its JSON lines,
    those printed before a timeout, and one ``{"case": case, "error": ...}`` line if it failed."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), script)
    try:
        done = subprocess.run([sys.executable, path, *args], capture_output=True, text=True, timeout=timeout_s)
        stdout, error = done.stdout, None if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-600:]}"
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        error = f"timed out after {timeout_s} s"
    lines = []
    for raw in stdout.splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            continue
    if error is not None or not lines:
        lines.append(dict(case=case, error=error or "no output"))
    return lines
