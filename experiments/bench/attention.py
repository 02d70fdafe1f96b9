"""Attention benchmark cases: the Pallas flash kernel beside cuDNN, XLA, the blockwise path and tokamax.

One JSON line per case (``experiments.bench.common``), every ratio taken
against an anchor measured earlier in the same run. bf16 inputs,
``[batch, length, heads, head_dim]``.

Figures of merit (per (B, H, L, D), F = 4 B H L^2 D):
- FLOPs, counted as the issue does: forward F (non-causal) or F / 2 (causal,
  and every causal variant: segment ids, sinks + window, softcap,
  block-sparse are counted as dense causal, so skipping masked tiles shows up
  as TFLOP/s); forward + backward 3.5x the forward.
  (4, 16, 8192, 128): F = 2.20e12 (causal fwd 1.10 TFLOP, fwd+bwd 3.85 TFLOP);
  (2, 16, 32768, 128): F = 1.76e13; (16, 16, 2048, 64): F = 2.75e11;
  (1, 16, 131072, 128): F = 1.41e14 (causal fwd+bwd 2.46e14).
- Minimal bytes: the forward reads q, k, v and writes o (8 B L H D bytes in
  bf16: 537 MB at (4, 16, 8192, 128)); the backward also reads o, do and
  writes dq, dk, dv (16 B L H D bytes). At ~4.3 TB/s that is 0.13 / 0.25 ms
  against ~2 / ~7 ms of causal compute at ~550 TFLOP/s: attention is compute-bound,
  so TFLOP/s is the figure.

Targets (issue 11, H200): every masked causal variant fwd+bwd >= 0.8x cuDNN's
plain causal TFLOP/s (``vs_cudnn_plain``); plain >= 0.8x cuDNN; window 4096
at L = 32768 >= 3x faster than full causal (``speedup_vs_full_causal``);
L = 131072 with segment ids within 1.25x of cuDNN's plain causal time
(``time_vs_cudnn_causal``).
"""

from __future__ import annotations

from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.common import emit, fwd_bwd, run_case, time_ms
from sequax.ops.attention import attention, block_sparse_layout

SHAPES = [(4, 16, 8192, 128), (2, 16, 32768, 128), (16, 16, 2048, 64)]
LONG = (1, 16, 131072, 128)
DOCS = 4  # packed documents per row in the segment-id cases
SPARSE_BLOCK = 512
WINDOW_SHAPE, WINDOW = (2, 16, 32768, 128), 4096


def _inputs(batch, heads, length, dim, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    return tuple(jax.random.normal(key, (batch, length, heads, dim), jnp.bfloat16) for key in keys)


def _segments(batch, length):
    return jnp.broadcast_to((jnp.arange(length) * DOCS // length).astype(jnp.int32), (batch, length))


def variants(batch, length, causal):
    """Masked variants of one shape: name -> options of ``sequax.ops.attention.attention``."""
    out = {"plain": {}, "segments": dict(segment_ids=_segments(batch, length))}
    if causal:
        out["sinks_window"] = dict(num_sinks=4, window=2048)
        out["softcap"] = dict(softcap=30.0)
        layout = block_sparse_layout(length // SPARSE_BLOCK, local_blocks=2, global_blocks=1, stride=8)
        out["block_sparse"] = dict(block_mask=(layout, SPARSE_BLOCK))
    return {name: dict(causal=causal, **opts) for name, opts in out.items()}


def _flops(batch, heads, length, dim, causal):
    dense = 4.0 * batch * heads * length * length * dim
    return dense / 2 if causal else dense


def _timed(fn, args, flops, iters=10, fwd_only=False):
    fwd, both = fwd_bwd(fn, argnums=(0, 1, 2))
    out = {"fwd_ms": time_ms(fwd, *args, iters=iters)}
    out["fwd_tflops"] = flops / out["fwd_ms"] / 1e9
    if not fwd_only:
        out["fwd_bwd_ms"] = time_ms(both, *args, iters=iters)
        out["fwd_bwd_tflops"] = 3.5 * flops / out["fwd_bwd_ms"] / 1e9
    return out


def _cudnn(causal, window=None):
    def f(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, local_window_size=window,
                                            implementation="cudnn")
    return f


def _xla_dense(causal):
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")


def _ours(opts, block_sizes=None):
    """``attention(backend="pallas")`` (the kernels it picks: Mosaic GPU where preferred and serving,
    else Triton); with ``block_sizes``, the Triton kernels with those rows."""
    if block_sizes is None:
        return lambda q, k, v: attention(q, k, v, backend="pallas", **opts)
    return _triton(opts, block_sizes)


def _triton(opts, block_sizes=None):
    """The Triton kernels, whatever the device prefers."""
    from pallas_kernels.flash_attention import flash_attention

    kw = dict(opts)
    kw["bias_fn"] = kw.pop("bias", None)
    return lambda q, k, v: flash_attention(q, k, v, block_sizes=block_sizes, backend="triton", **kw)


def _mosaic_gpu(opts, backward="mosaic_gpu"):
    """Our Mosaic GPU (Hopper) kernels (``flash_attention(backend="mosaic_gpu")``); ``backward``: whose
    backward kernels run (``block_sizes.MOSAIC_GPU_BACKWARD``), fixed when the function is traced."""
    from pallas_kernels.flash_attention import block_sizes as table
    from pallas_kernels.flash_attention import flash_attention

    def f(q, k, v):
        with mock.patch.dict(table.MOSAIC_GPU_BACKWARD, {"default": backward}, clear=True):
            return flash_attention(q, k, v, backend="mosaic_gpu", **opts)

    return f


def _hopper():
    from pallas_kernels.flash_attention import mosaic_gpu

    return mosaic_gpu.supported_here()


def mosaic_gpu_cases(shape=(4, 16, 8192, 128)):
    """The Mosaic GPU kernels (with their own backward, and with the Triton backward) beside cuDNN's
    plain attention and the Triton kernels, same run, at ``shape``: causal plain and softcap 30,
    bidirectional plain; forward and forward+backward, ratios to cuDNN's plain case of the same
    causality."""
    args = _inputs(*shape)
    info = dict(B=shape[0], H=shape[1], L=shape[2], D=shape[3])
    anchors = {}
    for causal, name, extra in ((True, "plain", {}), (True, "softcap", dict(softcap=30.0)), (False, "plain", {})):
        tag = "causal" if causal else "bidirectional"
        flops = _flops(*shape, causal)
        opts = dict(causal=causal, **extra)
        if causal not in anchors:
            def cudnn_case(causal=causal, flops=flops):
                anchors[causal] = _timed(_cudnn(causal), args, flops)
                return anchors[causal]

            run_case(f"mosaic_gpu/{tag}/plain/cudnn", cudnn_case, **info)
        triton = _triton(opts)  # one function object: jit reuses its compilation for the checks
        for impl, f in (("triton", triton), ("mosaic_gpu", _mosaic_gpu(opts)),
                        ("mosaic_gpu_fwd_triton_bwd", _mosaic_gpu(opts, backward="triton"))):
            def case(f=f, impl=impl, triton=triton, causal=causal, flops=flops):
                r = _timed(f, args, flops)
                anchor = anchors.get(causal)
                if anchor:
                    r["fwd_vs_cudnn"] = r["fwd_tflops"] / anchor["fwd_tflops"]
                    r["fwd_bwd_vs_cudnn"] = r["fwd_bwd_tflops"] / anchor["fwd_bwd_tflops"]
                if impl != "triton":
                    r["max_abs_diff_vs_triton"] = _max_abs_diff(f, triton, args)
                return r

            run_case(f"mosaic_gpu/{tag}/{name}/{impl}", case, **info)


# Pipeline depths of the Mosaic GPU kernels (``mosaic_gpu_pipeline_cases``): the forward's key tile and
# shared-memory slots, then the backward kernels' slots; the first row is the modules' defaults.
MOSAIC_PIPELINES = [dict(), dict(fwd_stages=3), dict(fwd_block_k=64, fwd_stages=3), dict(fwd_block_k=64, fwd_stages=4),
                    dict(dq_stages=3), dict(dq_stages=4), dict(dkdv_stages=3), dict(dq_stages=3, dkdv_stages=3)]


def mosaic_gpu_pipeline_cases(shape=(4, 16, 8192, 128), rows=MOSAIC_PIPELINES):
    """Causal plain attention on the Mosaic GPU kernels under each row of ``rows`` (key tile and slot
    counts patched into the kernels' entry points), beside cuDNN in the same run."""
    import functools

    from pallas_kernels.flash_attention import mosaic_gpu, mosaic_gpu_bwd

    args = _inputs(*shape)
    flops = _flops(*shape, True)
    info = dict(B=shape[0], H=shape[1], L=shape[2], D=shape[3])
    anchor = {}
    run_case("mosaic_gpu_pipeline/cudnn", lambda: anchor.setdefault("r", _timed(_cudnn(True), args, flops)), **info)
    for row in rows:
        fwd_kw = {k[4:]: v for k, v in row.items() if k.startswith("fwd_")}
        patches = [mock.patch.object(mosaic_gpu, "forward", functools.partial(mosaic_gpu.forward, **fwd_kw)),
                   mock.patch.object(mosaic_gpu_bwd, "backward_dq", functools.partial(
                       mosaic_gpu_bwd.backward_dq, stages=row.get("dq_stages", mosaic_gpu_bwd.STAGES))),
                   mock.patch.object(mosaic_gpu_bwd, "backward_dkdv", functools.partial(
                       mosaic_gpu_bwd.backward_dkdv, stages=row.get("dkdv_stages", mosaic_gpu_bwd.STAGES)))]

        def case(patches=patches):
            for p in patches:
                p.start()
            try:
                r = _timed(_mosaic_gpu(dict(causal=True)), args, flops)
            finally:
                for p in patches:
                    p.stop()
            r["fwd_vs_cudnn"] = r["fwd_tflops"] / anchor["r"]["fwd_tflops"]
            r["fwd_bwd_vs_cudnn"] = r["fwd_bwd_tflops"] / anchor["r"]["fwd_bwd_tflops"]
            return r

        run_case("mosaic_gpu_pipeline/causal", case, **info, **row)


def _blockwise(opts):
    return lambda q, k, v: attention(q, k, v, backend="xla", mode="blockwise", **opts)


def _tokamax(causal, implementation):
    import tokamax  # noqa: PLC0415 - optional peer

    return lambda q, k, v: tokamax.dot_product_attention(q, k, v, is_causal=causal, implementation=implementation)


def _max_abs_diff(f, g, args):
    return float(jnp.max(jnp.abs(jax.jit(f)(*args).astype(jnp.float32) - jax.jit(g)(*args).astype(jnp.float32))))


class _Anchors:
    """cuDNN figures measured earlier in this run, for the ratios of later lines."""

    def __init__(self):
        self.values = {}

    def ratio(self, key, record, field="fwd_bwd_tflops"):
        anchor = self.values.get(key)
        if anchor is None or field not in record:
            return {}
        return {"vs_cudnn_plain": record[field] / anchor[field]}


def _shape_cases(shape, anchors, quick):
    batch, heads, length, dim = shape
    args = _inputs(*shape)
    info = dict(B=batch, H=heads, L=length, D=dim)
    for causal in (True, False):
        flops = _flops(*shape, causal)
        tag = "causal" if causal else "bidirectional"

        def cudnn_case(causal=causal, flops=flops):
            record = _timed(_cudnn(causal), args, flops)
            anchors.values[(shape, causal)] = record
            return record

        run_case(f"attention/{tag}/plain/cudnn", cudnn_case, **info)
        for name, opts in variants(batch, length, causal).items():
            def ours_case(opts=opts, name=name, causal=causal, flops=flops):
                record = _timed(_ours(opts), args, flops)
                if name == "plain":  # a correctness check in the same run (cuDNN rounds p to bf16 too)
                    try:
                        record["max_abs_diff_vs_cudnn"] = _max_abs_diff(_ours(opts), _cudnn(causal), args)
                    except Exception as e:  # noqa: BLE001 - the timing stands without the check
                        record["check_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                return {**record, **anchors.ratio((shape, causal), record)}

            run_case(f"attention/{tag}/{name}/pallas", ours_case, **info)
            if not quick and length <= 32768 and (name != "plain" or length <= 8192):
                iters = 3 if length > 8192 else 10
                run_case(f"attention/{tag}/{name}/blockwise",
                         lambda opts=opts, flops=flops, iters=iters: _timed(_blockwise(opts), args, flops, iters=iters),
                         **info)
        if not quick and length <= 8192:
            run_case(f"attention/{tag}/plain/xla", lambda causal=causal, flops=flops: _timed(
                _xla_dense(causal), args, flops), **info)
        for name in ("plain", "softcap") if causal else ("plain",):
            def mgpu_case(causal=causal, flops=flops, name=name):
                opts = dict(causal=causal, **(dict(softcap=30.0) if name == "softcap" else {}))
                f = _mosaic_gpu(opts)
                record = _timed(f, args, flops)
                record["max_abs_diff_vs_triton"] = _max_abs_diff(f, _triton(opts), args)
                return {**record, **anchors.ratio((shape, causal), record)}

            if _hopper():
                run_case(f"attention/{tag}/{name}/mosaic_gpu", mgpu_case, **info)
        for impl in ("mosaic",) if quick else ("mosaic", "triton"):
            def tokamax_case(causal=causal, flops=flops, impl=impl):
                record = _timed(_tokamax(causal, impl), args, flops)
                return {**record, **anchors.ratio((shape, causal), record)}

            if causal or not quick:
                run_case(f"attention/{tag}/plain/tokamax_{impl}", tokamax_case, **info)


def _window_cases():
    """Sliding window ``WINDOW`` (4096) at L = 32768 against full causal, ours and cuDNN's, in time."""
    shape = WINDOW_SHAPE
    args = _inputs(*shape)
    info = dict(B=shape[0], H=shape[1], L=shape[2], D=shape[3], window=WINDOW)
    flops = _flops(*shape, True)
    full = {}

    def case(fn, key):
        record = _timed(fn, args, flops, iters=5)
        full.setdefault(key, record)
        return record

    run_case("attention/causal/full/pallas", lambda: case(_ours(dict(causal=True)), "pallas"), **info)
    run_case("attention/causal/full/cudnn", lambda: case(_cudnn(True), "cudnn"), **info)
    for key, fn in (("pallas", _ours(dict(causal=True, window=WINDOW))), ("cudnn", _cudnn(True, (WINDOW, 0)))):
        def window_case(key=key, fn=fn):
            record = _timed(fn, args, flops, iters=5)
            base = full.get(key)
            if base:
                record["speedup_vs_full_causal"] = base["fwd_bwd_ms"] / record["fwd_bwd_ms"]
            return record

        run_case(f"attention/causal/window/{key}", window_case, **info)


def _long_cases(quick):
    """L = 131072, B1 H16 D128: causal with segment ids (ours) against cuDNN's plain causal, in time."""
    shape = LONG
    args = _inputs(*shape)
    info = dict(B=shape[0], H=shape[1], L=shape[2], D=shape[3], docs=DOCS)
    flops = _flops(*shape, True)
    anchor = {}

    def cudnn_case():
        anchor.update(_timed(_cudnn(True), args, flops, iters=3))
        return dict(anchor)

    def ours_case():
        record = _timed(_ours(dict(causal=True, segment_ids=_segments(1, shape[2]))), args, flops, iters=3)
        if anchor:
            record["time_vs_cudnn_causal"] = record["fwd_bwd_ms"] / anchor["fwd_bwd_ms"]
        return record

    run_case("attention/causal/plain/cudnn", cudnn_case, **info)
    run_case("attention/causal/segments/pallas", ours_case, **info)
    run_case("attention/causal/plain/pallas", lambda: _timed(_ours(dict(causal=True)), args, flops, iters=3), **info)
    if not quick:
        run_case("attention/causal/segments/blockwise", lambda: _timed(
            _blockwise(dict(causal=True, segment_ids=_segments(1, shape[2]))), args, flops, iters=1), **info)


SWEEP = {
    "fwd": [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 32, 4, 4), (64, 128, 4, 3)],
    "dq": [(128, 64, 8, 2), (128, 64, 4, 3), (64, 64, 4, 3), (128, 32, 4, 3), (128, 128, 8, 2)],
    "dkdv": [(64, 128, 8, 2), (32, 128, 4, 3), (64, 64, 4, 3), (128, 128, 8, 2), (64, 128, 4, 3), (32, 64, 4, 4)],
}


SWEEP_SHAPE = (4, 16, 8192, 128)


def softcap_tanh_cases(shape=SWEEP_SHAPE, softcap=30.0):
    """Causal softcapped attention with the tanh written through exp2 and as PTX ``tanh.approx``,
    same run: time, and each one's largest difference from the float32 XLA reference."""
    from pallas_kernels.flash_attention import block_sizes as table

    args = _inputs(*shape)
    flops = _flops(*shape, True)
    opts = dict(causal=True, softcap=softcap)
    ref_args = tuple(x.astype(jnp.float32) for x in args)
    ref = jax.jit(lambda q, k, v: attention(q, k, v, backend="xla", mode="blockwise", **opts))(*ref_args)
    for form in ("exp2", "approx"):
        def case():
            f = _triton(opts)
            r = _timed(f, args, flops)
            r["max_abs_diff_vs_f32"] = float(jnp.max(jnp.abs(jax.jit(f)(*args).astype(jnp.float32) - ref)))
            return r

        with mock.patch.dict(table.SOFTCAP_TANH, {"default": form}, clear=True):  # every device row
            run_case(f"attention/softcap_tanh/{form}", case, B=shape[0], H=shape[1], L=shape[2], D=shape[3],
                     softcap=softcap)


def sweep():
    """The softcap's tanh forms, then block-size rows of the Triton kernels on plain causal attention at
    ``SWEEP_SHAPE``, one line each."""
    softcap_tanh_cases()
    shape = SWEEP_SHAPE
    args = _inputs(*shape)
    flops = _flops(*shape, True)
    for kernel, rows in SWEEP.items():
        for row in rows:
            run_case(f"attention/sweep/{kernel}", lambda kernel=kernel, row=row: _timed(
                _ours(dict(causal=True), {kernel: row}), args, flops, fwd_only=kernel == "fwd"),
                B=shape[0], H=shape[1], L=shape[2], D=shape[3], row=list(row))


def run(quick: bool) -> None:
    """All cases (``quick``: the (4, 16, 8192, 128) shape, the window and the long case, no slow baselines)."""
    emit(case="attention/setup", device=jax.devices()[0].device_kind, jax=jax.__version__, quick=quick,
         numpy=np.__version__)
    anchors = _Anchors()
    for shape in SHAPES[:1] if quick else SHAPES:
        _shape_cases(shape, anchors, quick)
    _window_cases()
    _long_cases(quick)

