"""pallas_kernels.selective_scan against sequax.ops.ssm.selective_scan's pure-JAX path.

Marked `gpu`: interpreted on CPU, compiled on a GPU (`JAX_PLATFORMS=cuda pytest -m gpu`).
Interpreted kernels compile slowly, so each case checks the forward and every
gradient in one jitted call, with small tiles (2 steps, boundaries every 4)
that still exercise the tile, chunk, ragged-length and masked-channel paths.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.selective_scan import api, pallas_gpu, pallas_tpu
from sequax.ops.ssm import selective_scan
from sequax.ops.ssm.selective import SELECTIVE_SCAN
from tests.pallas_kernels.compare import assert_close_to_scale as _close

pytestmark = pytest.mark.gpu

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
    """Tiles of 2 steps, boundaries every 4, 16 channels per program (GPU kernel)."""
    sizes = dict(channels=16, min_channels=16, min_programs=1, time=2, chunk=4, num_warps=4, split_below=0)
    monkeypatch.setattr(api, "block_sizes", lambda **kw: sizes)


def _inputs(batch, length, channels, state, groups, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    seg = np.cumsum(rng.uniform(size=(batch, length)) < 0.2, axis=1)
    seg[:, length // 2] += 5  # a one-token segment
    return dict(
        u=normal(batch, length, channels).astype(dtype),
        delta=(0.5 * normal(batch, length, channels)).astype(dtype),
        A=-jnp.asarray(rng.uniform(0.2, 3.0, (channels, state)), jnp.float32),
        B=normal(batch, length, groups, state).astype(dtype),
        C=normal(batch, length, groups, state).astype(dtype),
        D=normal(channels),
        z=normal(batch, length, channels).astype(dtype),
        delta_bias=0.3 * normal(channels),
        initial_state=normal(batch, channels, state),
        segment_ids=jnp.asarray(seg),
    )


def _value_and_grads(backend, x, options):
    """Jitted ``(y, final), grads`` of a loss touching every output, w.r.t. every array input."""
    present = [n for n in NAMES if n in x]
    mode = "sequential" if backend == "xla" else None

    def loss(*arrays):
        kw = dict(zip(present, arrays))
        u, delta, A, B, C = (kw.pop(n) for n in NAMES[:5])
        out = selective_scan(u, delta, A, B, C, **kw, **options, mode=mode, backend=backend)
        y, final = out if options.get("return_state") else (out, jnp.zeros(()))
        total = jnp.sum(jnp.sin(y.astype(jnp.float32) * 1.3)) + jnp.sum(jnp.cos(final))
        return total, (y, final)

    argnums = tuple(range(len(present)))
    f = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))
    (_, outs), grads = f(*[x[n] for n in present])
    return outs, dict(zip(present, grads))


CASES = {
    # every option, groups, masked channel block (20 of 16+16), padded state 5 -> 16, ragged length
    "everything": (dict(batch=2, length=19, channels=40, state=5, groups=2),
                   dict(D=1, z=1, delta_bias=1, initial_state=1, segment_ids=1),
                   dict(delta_softplus=True, return_state=True)),
    # nothing optional; B/C shared by all channels and given as [batch, length, state]
    "bare": (dict(batch=1, length=16, channels=32, state=16, groups=1), {}, {}),
    # one group per channel (B/C per channel); bias without softplus; segments and a state out
    "per_channel_bc": (dict(batch=1, length=11, channels=4, state=4, groups=4),
                       dict(delta_bias=1, segment_ids=1), dict(return_state=True)),
    "state_in_and_out": (dict(batch=2, length=8, channels=24, state=16, groups=3),
                         dict(initial_state=1), dict(return_state=True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_every_gradient_match_reference(case):
    _check_case(case)


def test_tpu_kernels_interpreted_match_reference(monkeypatch):
    """The Mosaic TPU kernels' bodies, interpreted, on every option (a partial channel block of
    the 20 channels per group, a partial last time block)."""
    monkeypatch.setattr(api, "_kernel_platform", lambda: "tpu")
    monkeypatch.setattr(api, "_interpret", lambda: True)  # also on a GPU
    _check_case("everything")


@pytest.mark.parametrize("case", ["everything", "per_channel_bc", "state_in_and_out"])
def test_sequence_cut_into_pieces_matches_reference(monkeypatch, case):
    """Too few programs: the sequence is scanned as pieces side by side (4 pieces of 6 steps
    for 19, padded to 24; 2 pieces for 11 and for 8) and the pieces' states chained; every
    gradient too."""
    sizes = dict(channels=16, min_channels=16, min_programs=1, time=2, chunk=4, num_warps=4,
                 split_below=64, split_programs=64, min_piece=4)
    monkeypatch.setattr(api, "block_sizes", lambda **kw: sizes)
    calls = []
    split = api._split_scan
    monkeypatch.setattr(api, "_split_scan", lambda *a: calls.append(a[-1]) or split(*a))
    _check_case(case)
    assert calls and calls[0] > 1


def test_h200_row_cuts_only_small_batches(monkeypatch):
    """The H200 row: Mamba's B8 x 2048 channels (1,024 programs) runs uncut; at B1 the sequence
    is cut into 128 pieces (the measured best at L16K), never shorter than 128 steps."""
    from pallas_kernels.selective_scan.block_sizes import TABLE

    row = {**TABLE["default"], **TABLE["nvidia h200"]}
    monkeypatch.setattr(api, "block_sizes", lambda **kw: row)
    monkeypatch.setattr(api, "_kernel_platform", lambda: "gpu")
    flags = dict.fromkeys(("has_z", "has_D", "has_bias", "softplus", "has_keep", "has_h0"), False)
    cfg = lambda b, l: api._config(b, l, 1, 2048, 16, flags)  # noqa: E731
    assert api._pieces(8, 1, 2048, 2048, cfg(8, 2048)) == 1
    assert api._pieces(1, 1, 2048, 16384, cfg(1, 16384)) == 128
    assert api._pieces(1, 1, 2048, 1 << 20, cfg(1, 1 << 20)) == 128
    assert api._pieces(1, 1, 2048, 1000, cfg(1, 1000)) == 7
    assert api._pieces(1, 1, 2048, 100, cfg(1, 100)) == 1


def _check_case(case):
    shape, present, options = CASES[case]
    x = _inputs(**shape)
    x = {k: v for k, v in x.items() if k in NAMES[:5] or k in present}
    if case == "bare":
        x["B"], x["C"] = x["B"][:, :, 0], x["C"][:, :, 0]
    if not options.get("delta_softplus"):
        x["delta"] = jnp.abs(x["delta"])  # a stable scan without softplus
    if "segment_ids" in x:
        options = dict(options, segment_ids=x.pop("segment_ids"))
    (y, final), grads = _value_and_grads("pallas", x, options)
    (y_ref, final_ref), grads_ref = _value_and_grads("xla", x, options)
    _close(y, y_ref, "y")
    _close(final, final_ref, "final state")
    for name in grads_ref:
        _close(grads[name], grads_ref[name], f"d{name}")


def test_bfloat16_inputs_are_as_accurate_as_the_reference():
    """bf16 u, delta, z, B, C: the kernel's error vs the float32 result stays within the
    reference's own (both do float32 math on the same rounded inputs)."""
    shape = dict(batch=2, length=13, channels=32, state=16, groups=1)
    present = ("D", "z", "delta_bias")
    options = dict(delta_softplus=True, return_state=True)
    pick = lambda x: {k: v for k, v in x.items() if k in NAMES[:5] or k in present}  # noqa: E731
    x32 = pick(_inputs(**shape))
    x16 = pick(_inputs(**shape, dtype=jnp.bfloat16))
    (y32, _), g32 = _value_and_grads("xla", x32, options)
    (y_ref, _), g_ref = _value_and_grads("xla", x16, options)
    (y, final), g = _value_and_grads("pallas", x16, options)
    assert y.dtype == jnp.bfloat16 and final.dtype == jnp.float32
    assert g["u"].dtype == g["z"].dtype == jnp.bfloat16

    def err(a, b):
        return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))

    for name, got, ref, exact in [("y", y, y_ref, y32)] + [(n, g[n], g_ref[n], g32[n]) for n in g]:
        own = err(ref, exact)  # the reference's own bf16 error
        assert own > 0
        # <= the reference's error plus one bf16 rounding of the largest value
        assert err(got, exact) <= 1.05 * own + 2**-8 * float(jnp.max(jnp.abs(exact))), name


def test_split_sequence_continues_the_state():
    x = _inputs(batch=2, length=14, channels=16, state=8, groups=1)
    kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True, return_state=True)
    full, last = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], **kw, backend="xla")
    state = jnp.zeros_like(x["initial_state"])
    ys = []
    for part in (slice(0, 7), slice(7, 14)):  # equal halves: one compiled kernel
        cut = lambda v: v[:, part]  # noqa: E731
        y, state = selective_scan(cut(x["u"]), cut(x["delta"]), x["A"], cut(x["B"]), cut(x["C"]),
                                  **dict(kw, z=cut(x["z"])), initial_state=state, backend="pallas")
        ys.append(y)
    _close(jnp.concatenate(ys, axis=1), full, "y")
    _close(state, last, "final state")


def _lowering_arrays(b, l, g, c, n, dtype):
    """Zero inputs of every option for the lowering tests: ``(seq, arrays)``."""
    seq = jnp.zeros((b, l, g, c), dtype)
    arrays = dict(u=seq, delta=seq, z=seq, A=jnp.zeros((g, c, n)), B=jnp.zeros((b, l, g, n)),
                  C=jnp.zeros((b, l, g, n)), D=jnp.zeros((g, c)), bias=jnp.zeros((g, c)),
                  keep=jnp.zeros((b, l)), h0=jnp.zeros((b, g, c, n)))
    return seq, arrays


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_gpu_kernels_lower_to_triton(dtype):
    """Forward and backward kernels at the benchmark's tile sizes lower to Triton on a CPU."""
    cfg = pallas_gpu.Config(length=512, cpg=256, channels=32, state=16, time=8, chunk=128,
                            has_z=True, has_D=True, has_bias=True, softplus=True, has_keep=True,
                            has_h0=True, num_warps=4)
    b, l, g, c, n = 2, cfg.length, 1, cfg.cpg, cfg.state
    seq, arrays = _lowering_arrays(b, l, g, c, n, dtype)
    fwd = functools.partial(pallas_gpu.forward, cfg=cfg, save_bounds=True, return_final=True, interpret=False)
    jax.jit(fwd).trace(arrays).lower(lowering_platforms=("cuda",))
    bounds = jnp.zeros((b, cfg.chunks, g, c, n))
    bwd = functools.partial(pallas_gpu.backward, cfg=cfg, interpret=False)
    jax.jit(bwd).trace(arrays, bounds, seq, arrays["h0"]).lower(lowering_platforms=("cuda",))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_tpu_kernels_lower_to_mosaic(dtype):
    """TPU forward and backward at lane-sized blocks (128 channels, 128 steps), two groups."""
    cfg = pallas_gpu.Config(length=512, cpg=256, channels=128, state=16, time=128, chunk=128,
                            has_z=True, has_D=True, has_bias=True, softplus=True, has_keep=True,
                            has_h0=True, num_warps=1)
    b, l, g, c, n = 2, cfg.length, 2, cfg.cpg, cfg.state
    seq, arrays = _lowering_arrays(b, l, g, c, n, dtype)
    fwd = functools.partial(pallas_tpu.forward, cfg=cfg, save_bounds=True, return_final=True)
    jax.jit(fwd).trace(arrays).lower(lowering_platforms=("tpu",))
    bounds = jnp.zeros((b, l // cfg.time, g, n, c))
    bwd = functools.partial(pallas_tpu.backward, cfg=cfg)
    jax.jit(bwd).trace(arrays, bounds, seq, arrays["h0"]).lower(lowering_platforms=("tpu",))


def test_dispatch_refuses_what_the_kernel_cannot_do():
    x = _inputs(batch=1, length=4, channels=16, state=4, groups=1)
    args = [x[n] for n in NAMES[:5]]
    with pytest.raises(ValueError, match="mode=None"):
        selective_scan(*args, mode="chunked", backend="pallas")
    assert "mode=None" in api.why_not(*args, mode="associative")
    assert "complex" in api.why_not(*args[:2], args[2].astype(jnp.complex64), *args[3:])
    assert "future_option" in api.why_not(*args, future_option=1)
    assert api.why_not(*args, future_option=None) is None
    with pytest.raises(ValueError, match="future_option"):
        api.selective_scan(*args, future_option=True)
    assert api.why_not(*args, segment_ids=x["segment_ids"], delta_softplus=True) is None
    # auto never raises: an explicit mode falls back to the pure-JAX path.
    assert SELECTIVE_SCAN.resolve("auto", u=args[0], delta=args[1], A=args[2], B=args[3], C=args[4],
                                  mode="chunked") == "xla"
