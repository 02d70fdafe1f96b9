"""Multi-GPU scaling (issue 15): sequence parallelism, FSDP, and the cost of the sequence-parallel path on one GPU.

    python experiments/benchmark_scaling.py --bench weak      # 1, 2, 4, ... GPUs at 32K tokens per GPU
    python experiments/benchmark_scaling.py --bench strong    # 1M tokens on every visible GPU (and fewer)
    python experiments/benchmark_scaling.py --bench fsdp      # a 1B-parameter model at 32K context, fsdp = all GPUs
    python experiments/benchmark_scaling.py --bench overhead  # one GPU: trainer path at mesh.sequence=1 vs
                                                              # the sequence-parallel code forced on 1 device
    python experiments/benchmark_scaling.py --bench all
    python experiments/benchmark_scaling.py --smoke --bench all   # tiny sizes on 8 simulated CPU devices

A case is one train step (forward, backward, AdamW update; bf16 compute,
float32 parameters) of the backbone, 12 layers of d_model 1024 unless said,
with the mixer and strategy named: ``ring`` (causal attention, zigzag ring),
``all_to_all`` (Ulysses), ``gla``, ``deltanet``, ``mamba``, ``mamba2``
(state passing, :mod:`sequax.parallel.sequence`). Every case prints one JSON
line (``experiments.bench.common.emit``): step time (median), tokens/s,
weak-scaling efficiency ``tokens/s(N) / (N tokens/s(1))``, compiled memory per
device, the bytes each device sends per step in the sequence-parallel ops
(traced) plus the gradient all-reduce of the replicated parameters
(analytic), and that traffic's time at ``--link_gb_per_second`` (take the
``ppermute`` bandwidth the ``bandwidth`` case measures) as ``predicted_comm_ms``,
to set against the step time. Keep the NCCL variables that disable NVLink
multicast as the machine sets them.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

if "--smoke" in sys.argv:  # before jax starts: 8 simulated CPU devices
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from experiments.bench.common import device_kind, emit  # noqa: E402
from sequax.models import build_model  # noqa: E402
from sequax.parallel import sequence as sp_ops  # noqa: E402
from sequax.parallel.context import SequenceParallel, use_sequence_parallel  # noqa: E402
from sequax.parallel.mesh import make_mesh, shard_batch  # noqa: E402
from sequax.parallel.sharding import layout_from_config  # noqa: E402
from sequax.train.config import default_config  # noqa: E402
from sequax.train.optim import make_optimizer  # noqa: E402
from sequax.train.trainer import TrainState, make_train_step  # noqa: E402

STRATEGIES = {  # name -> (mixer, mixer_kwargs, model.sequence_parallel)
    "ring": ("attention", {}, "ring"),
    "all_to_all": ("attention", {}, "all_to_all"),
    "gla": ("gla", {}, "ring"),
    "deltanet": ("deltanet", {}, "ring"),
    "mamba": ("mamba", {}, "ring"),
    "mamba2": ("mamba2", {"head_dim": 64}, "ring"),
}
H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s per H200 (NVIDIA datasheet)


def model_config(strategy, length, *, layers, d_model, heads, mesh, batch=1, mlp_ratio=2.0):
    mixer, kwargs, attention = STRATEGIES[strategy]
    config = default_config()
    config.model.mixer, config.model.mixer_kwargs = mixer, dict(kwargs)
    config.model.sequence_parallel = attention
    config.model.d_model, config.model.num_layers, config.model.num_heads = d_model, layers, heads
    config.model.mlp_ratio, config.model.dtype, config.model.vocab_size = mlp_ratio, "bfloat16", 256
    config.train.batch_size = batch
    config.data.task_kwargs = dict(seq_len=length)
    for axis, size in mesh.items():
        config.mesh[axis] = size
    return config


def _batch(config, length):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size, (config.train.batch_size, length + 1)).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
            "loss_mask": np.ones((config.train.batch_size, length), np.float32)}


def _param_count(params):
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def train_step_case(config, length, devices, *, steps, warmup=2):
    """Compile and time one train step of ``config`` at ``length`` on the first ``devices`` devices."""
    mesh = make_mesh(config.mesh, jax.devices()[:devices])
    layout = layout_from_config(config, mesh)
    model = build_model(config.model)
    optimizer = make_optimizer(config.optimizer, 1000)
    batch = _batch(config, length)

    def init():
        params = model.init(jax.random.PRNGKey(0), jnp.asarray(batch["inputs"][:, :8]))["params"]
        return TrainState(jnp.array(0, jnp.int32), params, optimizer.init(params), jax.random.PRNGKey(1))

    abstract = jax.eval_shape(init)
    shardings = None if layout is None else (layout.state_shardings(abstract), layout.batch_shardings(batch))
    state = jax.jit(init, out_shardings=None if layout is None else shardings[0])()
    placed = shard_batch(batch, mesh)
    step = make_train_step(model, optimizer, layout, shardings)
    jitted = step if layout is None else step.jitted
    tic = time.perf_counter()
    if layout is None:
        compiled = jitted.lower(state, placed).compile()
    else:
        with layout.context():
            compiled = jitted.lower(state, placed).compile()
    compile_s = time.perf_counter() - tic
    for _ in range(warmup):
        state, metrics = step(state, placed)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        state, metrics = step(state, placed)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - tic)
    seconds = statistics.median(times)
    memory = compiled.memory_analysis()
    per_device = None if memory is None else int(
        memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes)
    params = _param_count(abstract.params)
    tokens = config.train.batch_size * length
    sent = {}
    if layout is not None:
        with layout.context():
            sent = sp_ops.communicated_bytes(jitted, state, placed)
    grad_allreduce = 0
    if mesh is not None and mesh.shape["fsdp"] == 1 and devices > 1:  # replicated parameters: ring all-reduce
        grad_allreduce = int(2 * (devices - 1) / devices * 4 * params)
    return dict(
        devices=devices, tokens=tokens, step_ms=1e3 * seconds, tokens_per_second=tokens / seconds,
        tokens_per_second_per_device=tokens / seconds / devices, compile_s=compile_s, params=params,
        memory_per_device_gb=None if per_device is None else per_device / 2**30,
        sequence_parallel_bytes_per_device=sum(sent.values()), sent_by_collective=sent,
        grad_allreduce_bytes_per_device=grad_allreduce, loss=float(metrics["loss"]),
    )


LINK = {"gb_per_second": 200.0}  # --link_gb_per_second: the bandwidth predicted communication times use


def _emit(case, **record):
    if "sequence_parallel_bytes_per_device" in record:  # the analysis' time for what the step sends
        sent = record["sequence_parallel_bytes_per_device"] + record["grad_allreduce_bytes_per_device"]
        record["predicted_comm_ms"] = sent / (LINK["gb_per_second"] * 1e9) * 1e3
    emit(case=case, device=device_kind(), **record)


def _run(case, fn, **info):
    try:
        _emit(case, **info, **fn())
    except Exception as error:  # noqa: BLE001 - one failed case (e.g. out of memory) must not stop the others
        _emit(case, **info, error=f"{type(error).__name__}: {str(error)[:300]}")


def bandwidth(devices, megabytes):
    """Measured ``ppermute`` bandwidth around a ring of ``devices`` (GB/s each device sends)."""
    mesh = make_mesh(dict(data=1, fsdp=1, tensor=1, sequence=devices), jax.devices()[:devices])
    n = megabytes * 2**20 // 2
    x = jax.device_put(jnp.ones((devices * n,), jnp.bfloat16), NamedSharding(mesh, P("sequence")))
    perm = [(i, (i + 1) % devices) for i in range(devices)]
    f = jax.jit(jax.shard_map(lambda a: jax.lax.ppermute(a, "sequence", perm), mesh=mesh,
                              in_specs=P("sequence"), out_specs=P("sequence")))
    jax.block_until_ready(f(x))
    times = []
    for _ in range(10):
        tic = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - tic)
    return dict(devices=devices, megabytes=megabytes, gb_per_second=2 * n / statistics.median(times) / 1e9)


def device_counts(limit):
    counts, n = [], 1
    while n <= limit:
        counts.append(n)
        n *= 2
    return counts


def weak(args, size):
    """Fixed tokens per device, 1 -> N devices; efficiency against the 1-device run of the same case."""
    base = {}
    for strategy in args.strategies:
        for n in device_counts(len(jax.devices())):
            length = args.tokens_per_device * n
            config = model_config(strategy, length, mesh=dict(sequence=n), **size)
            info = dict(strategy=strategy, length=length)
            try:
                record = train_step_case(config, length, n, steps=args.steps)
            except Exception as error:  # noqa: BLE001
                _emit("weak", **info, devices=n, error=f"{type(error).__name__}: {str(error)[:300]}")
                continue
            if n == 1:
                base[strategy] = record["tokens_per_second"]
            if strategy in base:
                record["efficiency"] = record["tokens_per_second"] / (n * base[strategy])
            _emit("weak", **info, **record)


def strong(args, size):
    """A fixed sequence (1M tokens) over 1 .. N devices (what fits)."""
    for strategy in args.strategies:
        for n in device_counts(len(jax.devices()))[::-1]:
            config = model_config(strategy, args.strong_length, mesh=dict(sequence=n), **size)
            _run("strong", lambda: train_step_case(config, args.strong_length, n, steps=args.steps),
                 strategy=strategy, length=args.strong_length)


def fsdp(args):
    """A ~1B-parameter attention model (d_model 2048, 24 layers) at 32K context, fsdp over every device."""
    n = len(jax.devices())
    size = dict(layers=args.fsdp_layers, d_model=args.fsdp_d_model, heads=args.fsdp_d_model // 128)
    config = model_config("ring", args.fsdp_length, mesh=dict(fsdp=n), batch=n, **size)

    def measure():
        record = train_step_case(config, args.fsdp_length, n, steps=args.steps)
        layers, d, length = size["layers"], size["d_model"], args.fsdp_length
        # Model FLOPs: 6 per parameter and token, plus causal attention 6 L^2 d per layer and sequence.
        flops = 6 * record["params"] * record["tokens"] + 6 * layers * d * length * length * config.train.batch_size
        record["model_flops_per_step"] = flops
        record["mfu"] = flops / (record["step_ms"] / 1e3) / (n * H200_BF16_PEAK)
        return record

    _run("fsdp", measure, strategy="ring", length=args.fsdp_length)


def overhead(args, size):
    """One device: the trainer's path at mesh.sequence=1 (the single-device code itself: the split is
    never active) beside the sequence-parallel code forced onto a 1-device sequence axis (its state
    summary pass and shard_map plumbing, without communication)."""
    one = Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1, 1), ("data", "fsdp", "tensor", "sequence"))
    for strategy in args.strategies:
        length = args.tokens_per_device
        config = model_config(strategy, length, mesh={}, **size)

        def measure():
            plain = train_step_case(config, length, 1, steps=args.steps)
            with use_sequence_parallel(SequenceParallel(one, attention=STRATEGIES[strategy][2])):
                forced = train_step_case(config, length, 1, steps=args.steps)
            return dict(mesh_sequence_1_ms=plain["step_ms"], forced_sequence_parallel_ms=forced["step_ms"],
                        forced_overhead=forced["step_ms"] / plain["step_ms"] - 1)

        _run("overhead", measure, strategy=strategy, length=length)


# ----------------------------------------------------------------------------- analysis


def analysis(d=1024, heads=16, d_inner=2048, state=16, conv=4, chunk=64):
    """The communication-vs-compute table of BENCHMARKS.md ("Scale-out"), from the formulas there.

    Per layer, per device and train step (forward + backward), batch 1, bf16 activations, float32
    states. Link bandwidth: 200 GB/s at 8 devices (NVLink, one host), 50 GB/s beyond (400 Gb/s
    InfiniBand per GPU); compute at 700 TFLOP/s (about 70% of an H200's dense bf16 peak).
    """
    dh = d // heads
    rows = []
    for p in (8, 64, 512):
        link = 200e9 if p <= 8 else 50e9
        for n in (1 << 17, 1 << 20, 1 << 22):
            local = n / p
            dense = 6 * 10 * d * d * local  # projections and MLP, 6 FLOPs per weight and token
            ring_bytes = n * (16 * d + 8) + 8 * local * 2 * d
            ring_flops = 7 * n * n * d / p + dense
            ulysses_bytes = 2 * local * 4 * d * 2 * (p - 1) / p
            gla_state = heads * dh * dh * 4 + heads * dh * 4
            halo = 2 * (conv - 1) * 3 * d * 2
            gla_bytes = 2 * (p - 1) * gla_state + halo
            gla_doubling = 2 * 2 * math.ceil(math.log2(p)) * gla_state + halo
            gla_flops = 3 * local * heads * (2 * chunk * 2 * dh + 4 * dh * dh) + dense
            mamba_state = 2 * d_inner * state * 4
            mamba_bytes = 2 * (p - 1) * mamba_state + 2 * (conv - 1) * d_inner * 2
            for name, sent, flops in (
                ("ring", ring_bytes, ring_flops), ("all_to_all", ulysses_bytes, ring_flops),
                ("gla (all_gather)", gla_bytes, gla_flops), ("gla (doubling)", gla_doubling, gla_flops),
                ("mamba (all_gather)", mamba_bytes, dense),
            ):
                rows.append(dict(devices=p, tokens=n, strategy=name, mb_per_device=sent / 2**20,
                                 compute_ms=flops / 700e12 * 1e3, comm_ms=sent / link * 1e3,
                                 compute_over_comm=(flops / 700e12) / (sent / link)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="weak", choices=("weak", "strong", "fsdp", "overhead", "bandwidth", "analysis", "all"))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--tokens_per_device", type=int, default=32768)
    parser.add_argument("--strong_length", type=int, default=1 << 20)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d_model", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--fsdp_layers", type=int, default=24)
    parser.add_argument("--fsdp_d_model", type=int, default=2048)
    parser.add_argument("--fsdp_length", type=int, default=32768)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--link_gb_per_second", type=float, default=200.0,
                        help="per-device link bandwidth for predicted_comm_ms (take --bench bandwidth's figure)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (8 simulated CPU devices): a run check")
    args = parser.parse_args()
    if args.smoke:
        args.tokens_per_device, args.strong_length, args.layers, args.d_model, args.heads = 64, 256, 1, 32, 8
        args.fsdp_layers, args.fsdp_d_model, args.fsdp_length, args.steps = 1, 256, 64, 1
    args.strategies = [s for s in args.strategies.split(",") if s]
    LINK["gb_per_second"] = args.link_gb_per_second
    size = dict(layers=args.layers, d_model=args.d_model, heads=args.heads)
    benches = ("bandwidth", "overhead", "weak", "strong", "fsdp") if args.bench == "all" else (args.bench,)
    for bench in benches:
        if bench == "analysis":
            for row in analysis():
                emit(case="analysis", **row)
        elif bench == "bandwidth":
            for n in device_counts(len(jax.devices()))[1:]:
                _run("bandwidth", lambda: bandwidth(n, 4 if args.smoke else 256))
        elif bench == "fsdp":
            fsdp(args)
        else:
            {"weak": weak, "strong": strong, "overhead": overhead}[bench](args, size)


if __name__ == "__main__":
    main()
