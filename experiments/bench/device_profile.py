"""Where a jitted function spends its device time: per-op and per-module totals from a profile.

``device_op_times(jitted, *args)`` runs ``jitted`` a few times under
``jax.profiler`` and reads the trace it writes (the ``*.trace.json.gz`` file):
every event on a device track (``/device:GPU:0``, a TPU core) is summed by the
HLO op it executed, and each op is named by the JAX name stack recorded in the
compiled HLO's metadata (``jit(step)/jvp(GLA)/gk_up/dot_general``), so the
totals also group by module (``GLA/gk_up``) with the transformation wrappers
(``jit``, ``jvp``, ``transpose``) removed. On a CPU there are no device tracks
and the result is empty: this is for the GPU/TPU machines. On a GPU, run with
``XLA_FLAGS=--xla_gpu_enable_command_buffer=``: XLA otherwise records a step's
kernels into CUDA graphs, and the trace then shows one ``command_buffer`` event
per graph instead of its kernels.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Callable, Dict, List

import jax

_METADATA = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name=\"([^\"]+)\"")
_WRAPPER = re.compile(r"^(jit|jvp|transpose|vmap|pjit|remat|checkpoint|custom_jvp_call|custom_vjp_call)\((.*)\)$")
_DEVICE_TRACK = re.compile(r"/device:(GPU|TPU)|TPU:|GPU:", re.IGNORECASE)


def op_names(hlo_text: str) -> Dict[str, str]:
    """HLO instruction name -> its JAX ``op_name`` (name stack), from compiled HLO text."""
    names = {}
    for line in hlo_text.splitlines():
        m = _METADATA.match(line)
        if m:
            names.setdefault(m.group(1), m.group(2))
    return names


def module_path(op_name: str, depth: int = 3) -> str:
    """``jit(step)/transpose(jvp(SequenceModel))/blocks_3/GLA_0/gk_up/dot_general`` -> ``blocks/GLA/gk_up``:
    transformation wrappers unwrapped, the primitive (last component) and layer indices dropped,
    the last ``depth`` components kept (so the layers of one kind add up)."""
    parts = []
    for part in op_name.split("/"):
        m = _WRAPPER.match(part)
        while m:
            part = m.group(2)
            m = _WRAPPER.match(part)
        parts.append(re.sub(r"_\d+$", "", part))
    kept = [p for p in parts[:-1] if p and not p.startswith(("while", "body", "cond"))]
    return "/".join(kept[-depth:]) or (parts[-1] if parts else "?")


def _device_events(trace: dict) -> List[dict]:
    """Kernel events of the device tracks, each counted once: the ``XLA Ops`` lines where the trace
    has them (TPU), else the stream lines (GPU); summary lines (modules, steps) are left out."""
    events = trace.get("traceEvents", [])
    tracks = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
              and _DEVICE_TRACK.search(str(e.get("args", {}).get("name", "")))}
    threads = {(e["pid"], e.get("tid")): str(e.get("args", {}).get("name", "")) for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") in tracks}
    ops_lines = {k for k, v in threads.items() if v.startswith("XLA Ops")}
    keep = ops_lines or {k for k, v in threads.items() if "stream" in v.lower()} or None
    return [e for e in events if e.get("ph") == "X" and e.get("pid") in tracks
            and (keep is None or (e["pid"], e.get("tid")) in keep)]


def device_op_times(jitted: Callable, *args, iters: int = 3, top: int = 25, depth: int = 3) -> Dict:
    """``{"device_ms_per_iter", "ops": [{op, name, ms, fraction}], "modules": [{module, ms, fraction}],
    "sample_events"}`` for ``jitted(*args)`` (already jitted; compiled once and warmed up here first);
    ``sample_events``: the first two device events' names and argument keys, to see what a trace
    recorded when the names do not resolve."""
    compiled = jitted.lower(*args).compile()  # compiled once: run and named from the same executable
    jax.block_until_ready(compiled(*args))
    try:
        names = op_names(compiled.as_text())
    except Exception:  # noqa: BLE001 - names are a convenience; times still count
        names = {}
    with tempfile.TemporaryDirectory() as logdir:
        jax.profiler.start_trace(logdir, create_perfetto_trace=True)
        try:
            for _ in range(iters):
                jax.block_until_ready(compiled(*args))
        finally:
            jax.profiler.stop_trace()
        files = (glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
                 or glob.glob(os.path.join(logdir, "**", "perfetto_trace.json.gz"), recursive=True))
        if not files:
            return dict(device_ms_per_iter=0.0, ops=[], modules=[], note="no trace written")
        with gzip.open(files[0]) as f:
            trace = json.load(f)
    return summarize(trace, names, iters=iters, top=top, depth=depth)


def summarize(trace: dict, names: Dict[str, str], *, iters: int = 1, top: int = 25, depth: int = 3) -> Dict:
    """Device time per op and per module (see :func:`device_op_times`) of a loaded trace;
    ``names``: HLO op -> name stack (:func:`op_names`)."""
    events = _device_events(trace)
    by_op = collections.Counter()
    for e in events:
        args_ = e.get("args", {})
        op = args_.get("hlo_op") or e.get("name", "?")
        by_op[op] += float(e.get("dur", 0.0)) / 1e3 / iters
    total = sum(by_op.values())
    by_module = collections.Counter()
    for op, ms in by_op.items():
        by_module[module_path(names.get(op, op), depth)] += ms

    def rows(counter, key):
        return [{key: k, "ms": round(v, 4), "fraction": round(v / total, 4) if total else 0.0}
                for k, v in counter.most_common(top)]

    ops = rows(by_op, "op")
    for row in ops:
        row["name"] = names.get(row["op"], "")
    sample = [dict(name=e.get("name"), args=sorted(e.get("args", {}))) for e in events[:2]]
    return dict(device_ms_per_iter=total, ops=ops, modules=rows(by_module, "module"), sample_events=sample)
