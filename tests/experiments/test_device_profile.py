"""The device-time profile reader (experiments/bench/device_profile.py), on synthetic traces and HLO text."""

import jax
import jax.numpy as jnp

from experiments.bench import device_profile as profile


def _meta(pid, tid, process, thread):
    return [dict(ph="M", pid=pid, name="process_name", args=dict(name=process)),
            dict(ph="M", pid=pid, tid=tid, name="thread_name", args=dict(name=thread))]


def test_device_events_count_each_kernel_once_and_skip_the_host():
    events = (_meta(1, 10, "/host:CPU", "python") + _meta(2, 20, "/device:GPU:0", "Stream #7(Compute)")
              + [dict(ph="M", pid=2, tid=21, name="thread_name", args=dict(name="XLA Modules"))])
    events += [dict(ph="X", pid=1, tid=10, name="PjitFunction", dur=500.0),
               dict(ph="X", pid=2, tid=20, name="fusion_1", dur=30.0, args=dict(hlo_op="fusion.1")),
               dict(ph="X", pid=2, tid=21, name="jit_step", dur=100.0)]
    kept = profile._device_events(dict(traceEvents=events))
    assert [e["name"] for e in kept] == ["fusion_1"]


def test_xla_ops_lines_win_where_a_trace_has_them():
    events = _meta(3, 30, "/device:TPU:0", "XLA Ops") + [
        dict(ph="M", pid=3, tid=31, name="thread_name", args=dict(name="Steps")),
        dict(ph="X", pid=3, tid=30, name="dot.2", dur=7.0), dict(ph="X", pid=3, tid=31, name="1", dur=50.0)]
    assert [e["name"] for e in profile._device_events(dict(traceEvents=events))] == ["dot.2"]


def test_module_paths_drop_wrappers_layer_indices_and_the_primitive():
    name = "jit(train_step)/transpose(jvp(SequenceModel))/blocks_3/GLA_0/gk_up/dot_general"
    assert profile.module_path(name) == "blocks/GLA/gk_up"
    assert profile.module_path(name, depth=1) == "gk_up"
    assert profile.module_path("fusion.3") == "fusion.3"


def test_op_names_come_from_compiled_hlo_metadata():
    f = jax.jit(lambda x: jnp.sin(x) @ x)
    names = profile.op_names(f.lower(jnp.ones((4, 4))).compile().as_text())
    assert any(v.endswith("/sin") for v in names.values())
    assert any(v.endswith("/dot_general") for v in names.values())


def test_a_cpu_run_has_no_device_tracks():
    r = profile.device_op_times(jax.jit(lambda x: x * 2), jnp.ones(8), iters=1)
    assert r["device_ms_per_iter"] == 0 and r["ops"] == [] and r["modules"] == []


def test_times_add_up_per_op_and_per_module_over_the_iterations():
    events = _meta(2, 20, "/device:GPU:0", "Stream #7(Compute)") + [
        dict(ph="X", pid=2, tid=20, name="k", dur=d, args=dict(hlo_op=op))
        for op, d in [("fusion.1", 1000.0), ("fusion.1", 1000.0), ("dot.2", 3000.0), ("dot.3", 2000.0)]]
    names = {"fusion.1": "jit(f)/blocks_0/GLA_0/o_norm/mul", "dot.2": "jit(f)/blocks_0/GLA_0/q_proj/dot_general",
             "dot.3": "jit(f)/blocks_1/GLA_0/q_proj/dot_general"}
    r = profile.summarize(dict(traceEvents=events), names, iters=2, depth=2)
    assert r["device_ms_per_iter"] == 3.5
    assert r["ops"][0] == dict(op="dot.2", ms=1.5, fraction=round(1.5 / 3.5, 4),
                               name="jit(f)/blocks_0/GLA_0/q_proj/dot_general")
    assert [(m["module"], m["ms"]) for m in r["modules"]] == [("GLA/q_proj", 2.5), ("GLA/o_norm", 1.0)]
