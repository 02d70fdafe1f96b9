"""pallas_kernels.ssd against sequax.ops.ssm.ssd's pure-JAX path (the step-by-step reference).

Marked `gpu`: interpreted on CPU, compiled on a GPU (`JAX_PLATFORMS=cuda pytest -m gpu`).
Each case checks the forward and every gradient in one jitted call, with
chunks of 16 so that short sequences still span several chunks.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.ssd import api, pallas_gpu, pallas_tpu
from sequax.ops.ssm import ssd
from sequax.ops.ssm.ssd import SSD
from tests.pallas_kernels.compare import assert_close_to_scale as _close

pytestmark = pytest.mark.gpu

NAMES = ("x", "dt", "A", "B", "C", "D", "initial_state")


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    sizes = dict(chunk=16, head_block=16, heads_per_program=2, num_warps=4, num_stages=1, bwd_num_warps=4,
                 segsum=True)
    monkeypatch.setattr(api, "block_sizes", lambda **kw: sizes)


def _inputs(batch, length, heads, head_dim, groups, state, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return dict(
        x=normal(batch, length, heads, head_dim).astype(dtype),
        dt=jnp.asarray(rng.uniform(0.02, 0.4, (batch, length, heads)), jnp.float32),
        A=-jnp.asarray(rng.uniform(0.5, 4.0, (heads,)), jnp.float32),
        B=normal(batch, length, groups, state).astype(dtype),
        C=normal(batch, length, groups, state).astype(dtype),
        D=normal(heads),
        initial_state=normal(batch, heads, head_dim, state),
    )


def _value_and_grads(backend, x, return_state):
    present = [n for n in NAMES if n in x]
    mode = "naive" if backend == "xla" else None

    rng = np.random.default_rng(1)  # fixed cotangents: a linear loss does not amplify errors
    shape = x["x"].shape
    gy = jnp.asarray(rng.normal(size=shape), jnp.float32)
    gfinal = jnp.asarray(rng.normal(size=(shape[0], shape[2], shape[3], x["B"].shape[-1])), jnp.float32)

    def loss(*arrays):
        kw = dict(zip(present, arrays))
        args = [kw.pop(n) for n in NAMES[:5]]
        out = ssd(*args, **kw, return_state=return_state, mode=mode, backend=backend)
        y, final = out if return_state else (out, gfinal)
        return jnp.sum(y.astype(jnp.float32) * gy) + jnp.sum(final * gfinal), (y, final)

    f = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(len(present))), has_aux=True))
    (_, outs), grads = f(*[x[n] for n in present])
    return outs, dict(zip(present, grads))


CASES = {
    # ragged length (3 chunks of 16, the last with 5 rows), 2 groups, D, state in and out
    "everything": (dict(batch=2, length=37, heads=4, head_dim=16, groups=2, state=16),
                   ("D", "initial_state"), True),
    # strong decays (dt A down to -32 per step) in the first half of every chunk
    "bare_strong_decays": (dict(batch=1, length=32, heads=2, head_dim=16, groups=1, state=32), (), False),
    # head_dim 8 and state 12 padded to 16; one head per group
    "padded_dims": (dict(batch=1, length=20, heads=2, head_dim=8, groups=2, state=12), ("D",), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_every_gradient_match_reference(case):
    _check_case(case)


def test_tpu_kernels_interpreted_match_reference(monkeypatch):
    """The Mosaic TPU kernels' bodies, interpreted (ragged length, two groups, D, state in/out)."""
    monkeypatch.setattr(api, "_kernel_platform", lambda: "tpu")
    monkeypatch.setattr(api, "_interpret", lambda: True)  # also on a GPU
    _check_case("everything")


def _check_case(case):
    shape, present, return_state = CASES[case]
    x = {k: v for k, v in _inputs(**shape).items() if k in NAMES[:5] or k in present}
    if case == "bare_strong_decays":
        x["dt"] = jnp.where((jnp.arange(shape["length"]) % 16 < 8)[None, :, None], 8.0, x["dt"])
    (y, final), grads = _value_and_grads("pallas", x, return_state)
    (y_ref, final_ref), grads_ref = _value_and_grads("xla", x, return_state)
    _close(y, y_ref, "y")
    _close(final, final_ref, "final state")
    for name in grads_ref:
        _close(grads[name], grads_ref[name], f"d{name}")


def test_bfloat16_inputs_are_about_as_accurate_as_the_reference():
    """bf16 x, B, C: the kernel multiplies bf16 tiles on tensor cores (float32 accumulation);
    its error vs the float32 result stays within twice the reference's own bf16 error."""
    shape = dict(batch=1, length=40, heads=2, head_dim=16, groups=1, state=16)
    pick = lambda x: {k: v for k, v in x.items() if k != "initial_state"}  # noqa: E731
    x32 = pick(_inputs(**shape))
    x16 = pick(_inputs(**shape, dtype=jnp.bfloat16))
    (y32, _), g32 = _value_and_grads("xla", x32, True)
    (y_ref, _), g_ref = _value_and_grads("xla", x16, True)
    (y, final), g = _value_and_grads("pallas", x16, True)
    assert y.dtype == jnp.bfloat16 and final.dtype == jnp.float32 and g["x"].dtype == jnp.bfloat16

    def err(a, b):
        return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))

    for name, got, ref, exact in [("y", y, y_ref, y32)] + [(n, g[n], g_ref[n], g32[n]) for n in g]:
        own = err(ref, exact)
        assert own > 0
        assert err(got, exact) <= 2.0 * own + 2**-8 * float(jnp.max(jnp.abs(exact))), name


def test_split_sequence_continues_the_state():
    x = _inputs(batch=2, length=40, heads=2, head_dim=16, groups=1, state=16)
    full, last = ssd(x["x"], x["dt"], x["A"], x["B"], x["C"], D=x["D"], return_state=True, backend="xla")
    state = jnp.zeros_like(x["initial_state"])
    ys = []
    for part in (slice(0, 20), slice(20, 40)):  # equal halves, not a multiple of the chunk
        args = [x[n][:, part] for n in ("x", "dt")] + [x["A"]] + [x[n][:, part] for n in ("B", "C")]
        y, state = ssd(*args, D=x["D"], initial_state=state, return_state=True, backend="pallas")
        ys.append(y)
    _close(jnp.concatenate(ys, axis=1), full, "y")
    _close(state, last, "final state")


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_gpu_kernels_lower_to_triton(dtype):
    """All four kernels at the benchmark's tile sizes lower to Triton on a CPU."""
    cfg = pallas_gpu.Config(length=300, heads=8, groups=1, head_dim=64, state=128, chunk=64, head_block=32,
                            heads_per_program=4, has_D=True, has_h0=True, segsum=True, mm_dtype=dtype, num_warps=4,
                            num_stages=2)
    b, l, h, p, n = 2, cfg.length, cfg.heads, cfg.head_dim, cfg.state
    x = jnp.zeros((b, l, h, p), dtype)
    dt, A, D = jnp.zeros((b, l, h)), jnp.zeros((h,)), jnp.zeros((h,))
    B, h0 = jnp.zeros((b, l, 1, n), dtype), jnp.zeros((b, h, p, n))
    H = jnp.zeros((b, cfg.chunks, h, p, n))
    kernels = [
        (pallas_gpu.chunk_states, (x, dt, A, B, h0)),
        (pallas_gpu.chunk_outputs, (x, dt, A, B, B, H, D)),
        (pallas_gpu.state_grads, (x, dt, A, B, H, h0)),
        (pallas_gpu.chunk_grads, (x, dt, A, B, B, H, H, jnp.zeros((b, cfg.chunks, h)), x, D)),
    ]
    for kernel, args in kernels:
        f = functools.partial(kernel, cfg=cfg, interpret=False)
        jax.jit(f).trace(*args).lower(lowering_platforms=("cuda",))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_tpu_kernels_lower_to_mosaic(dtype):
    """TPU forward and backward at chunk 128 (lanes), two groups, a partial last chunk."""
    cfg = pallas_gpu.Config(length=300, heads=8, groups=2, head_dim=64, state=128, chunk=128, head_block=64,
                            heads_per_program=1, has_D=True, has_h0=True, segsum=True, mm_dtype=dtype,
                            num_warps=1, num_stages=1)
    b, l, h, p, n = 2, cfg.length, cfg.heads, cfg.head_dim, cfg.state
    x = jnp.zeros((b, l, h, p), dtype)
    dt, A, D = jnp.zeros((b, l, h)), jnp.zeros((h,)), jnp.zeros((h,))
    B, h0 = jnp.zeros((b, l, 2, n), dtype), jnp.zeros((b, h, p, n))
    H = jnp.zeros((b, cfg.chunks, h, p, n))
    fwd = functools.partial(pallas_tpu.forward, cfg=cfg)
    jax.jit(fwd).trace(x, dt, A, B, B, D, h0).lower(lowering_platforms=("tpu",))
    bwd = functools.partial(pallas_tpu.backward, cfg=cfg)
    jax.jit(bwd).trace(x, dt, A, B, B, D, H, x, h0).lower(lowering_platforms=("tpu",))


def test_dispatch_refuses_what_the_kernel_cannot_do():
    x = _inputs(batch=1, length=4, heads=2, head_dim=16, groups=1, state=16)
    args = [x[n] for n in NAMES[:5]]
    with pytest.raises(ValueError, match="mode=None"):
        ssd(*args, mode="chunked", backend="pallas")
    assert "mode=None" in api.why_not(*args, mode="naive")
    assert "segment_ids" in api.why_not(*args, segment_ids=jnp.zeros((1, 4), jnp.int32))
    assert api.why_not(*args, segment_ids=None, chunk_size=64) is None
    assert "complex" in api.why_not(*args[:4], args[4].astype(jnp.complex64))
    with pytest.raises(ValueError, match="segment_ids"):
        api.ssd(*args, segment_ids=jnp.zeros((1, 4), jnp.int32))
    # auto never raises: an explicit mode falls back to the pure-JAX path.
    assert SSD.resolve("auto", x=args[0], dt=args[1], A=args[2], B=args[3], C=args[4], mode="naive") == "xla"
