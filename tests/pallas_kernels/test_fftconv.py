"""pallas_kernels.fftconv against sequax.ops.fftconv.fft_conv's jnp.fft path (and numpy).

Marked `gpu`: interpreted on CPU, compiled on a GPU (`JAX_PLATFORMS=cuda pytest -m gpu`).
Tolerances: the kernels' matmuls are split-bf16 (hi/lo parts, float32 accumulation),
~1e-5 relative error per DFT stage (measured in test_split_bf16_precision), so float32
results must agree with the float32 jnp.fft reference to 3e-5 in relative norm.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.fftconv import api, convolve, plan, tile_fft, why_not
from sequax.ops.fftconv import FFT_CONV, fft_conv

pytestmark = pytest.mark.gpu

RNG = np.random.default_rng(0)
REL = 3e-5  # relative-norm tolerance of a float32 result (split-bf16 matmuls)


def _inputs(batch, length, channels, taps, dtype=jnp.float32):
    u = jnp.asarray(RNG.normal(size=(batch, length, channels)), dtype)
    k = jnp.asarray(RNG.normal(size=(taps, channels)) / np.sqrt(taps), jnp.float32)
    bias = jnp.asarray(RNG.normal(size=(channels,)), jnp.float32)
    return u, k, bias


def _close(out, ref, rel=REL):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    assert np.all(np.isfinite(out))
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert err < rel, f"relative error {err:.2e} >= {rel:.0e}"
    assert np.max(np.abs(out - ref)) < 10 * rel * np.max(np.abs(ref))


def _np_conv(u, k, causal):
    """numpy.convolve per (batch, channel): the definition, independent of any FFT."""
    u, k = np.asarray(u, np.float64), np.asarray(k, np.float64)
    batch, length, channels = u.shape
    out = np.zeros_like(u)
    c = (k.shape[0] - 1) // 2
    for b in range(batch):
        for ch in range(channels):
            full = np.convolve(u[b, :, ch], k[:, ch])
            out[b, :, ch] = full[:length] if causal else full[c : c + length]
    return out


# (batch, length, channels, taps, causal, overrides): the plans they exercise.
CASES = {
    # one pass (N=256 as 16x16 on chip), odd batch (a half-empty pair), a partial channel tile
    "one_pass_causal_short_kernel": (3, 37, 5, 10, True, {}),
    # two-sided, kernel longer than the sequence, two levels (32 x 32, dense)
    "two_level_two_sided_long_kernel": (2, 150, 6, 401, False, dict(max_size=64)),
    # three levels of 16 (column twiddles), one unpaired sequence
    "three_level_single_sequence": (1, 1500, 3, 700, True, dict(max_size=16, dense_max=16)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_reference(name):
    batch, length, channels, taps, causal, overrides = CASES[name]
    u, k, bias = _inputs(batch, length, channels, taps)
    ref = fft_conv(u, k, causal=causal, bias=bias, backend="xla")
    if overrides:
        out = convolve(u, k, causal=causal, bias=bias, **overrides)
    else:
        out = fft_conv(u, k, causal=causal, bias=bias, backend="pallas")
    _close(out, ref)
    if name == "one_pass_causal_short_kernel":  # and against the definition, without bias
        _close(fft_conv(u, k, causal=causal, backend="pallas"), _np_conv(u, k, causal))


GRAD_CASES = {
    # one pass; 2 pairs in 2 groups (partial filter gradients summed)
    "one_pass": (4, 40, 20, 13, True, {}),
    # two levels (dense 16 x two-stage 16x16), two-sided, odd batch, 2 pairs in 2 groups
    "two_level": (3, 1100, 2, 1999, False, dict(max_size=256)),
}


def _check_vjp(conv, u, k, bias, causal):
    """Output and every gradient of ``conv`` against the jnp.fft reference (one vjp each)."""
    w = jnp.asarray(RNG.normal(size=u.shape), jnp.float32)
    y, vjp = jax.vjp(conv, u, k, bias)
    y_ref, vjp_ref = jax.vjp(lambda u, k, b: fft_conv(u, k, causal=causal, bias=b, backend="xla"), u, k, bias)
    _close(y, y_ref)
    for g, r in zip(vjp(w), vjp_ref(w)):
        _close(g, r)


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradients_match_reference(name):
    batch, length, channels, taps, causal, overrides = GRAD_CASES[name]
    u, k, bias = _inputs(batch, length, channels, taps)
    _check_vjp(lambda u, k, b: convolve(u, k, causal=causal, bias=b, **overrides), u, k, bias, causal)


def test_bf16_input_within_the_references_own_rounding():
    u, k, bias = _inputs(3, 64, 24, 64)
    u16 = u.astype(jnp.bfloat16)
    ref32 = fft_conv(u16.astype(jnp.float32), k, bias=bias, backend="xla")
    ref16 = fft_conv(u16, k, bias=bias, backend="xla")
    out16 = fft_conv(u16, k, bias=bias, backend="pallas")
    assert out16.dtype == jnp.bfloat16
    own = float(jnp.max(jnp.abs(ref16.astype(jnp.float32) - ref32)))
    err = float(jnp.max(jnp.abs(out16.astype(jnp.float32) - ref32)))
    # Both round the same float32 value to bf16; ours differs from it by ~1e-5 relative first.
    assert err <= own + 1e-4 * float(jnp.max(jnp.abs(ref32)))


def test_split_bf16_precision():
    """The precision the kernels are built on: a 1024-point two-stage DFT round trip."""
    level = plan.Level(size=1024, a=32, b=32, cols=4)
    x = RNG.normal(size=(1024, 4)) + 1j * RNG.normal(size=(1024, 4))
    errors = {}
    for precision in plan.PRECISIONS:
        mats_a = mats_b = plan.dft_operands(32, precision)
        tw = plan.stage_twiddle(level)
        tile = tuple(jnp.asarray(v, jnp.float32).reshape(32, 32, 4) for v in (x.real, x.imag))
        z = tile_fft.forward(tile, level, mats_a, mats_b, tw, precision=precision)
        rows, cols = (np.broadcast_to(np.asarray(i), z[0].shape) for i in tile_fft.freq_index(level, 4))
        spectrum = np.fft.fft(x, axis=0)[rows, cols]
        fwd = np.asarray(z[0]) + 1j * np.asarray(z[1])
        back = tile_fft.inverse(z, level, mats_a, mats_b, tw, precision=precision)
        back = (np.asarray(back[0]) + 1j * np.asarray(back[1])).reshape(1024, 4) / 1024
        errors[precision] = (np.linalg.norm(fwd - spectrum) / np.linalg.norm(spectrum),
                             np.linalg.norm(back - x) / np.linalg.norm(x))
    assert max(errors["f32"]) < 1e-6
    assert max(errors["bf16x3"]) < 2e-5  # ~16 significant bits per operand
    assert 1e-3 < min(errors["bf16"]) and max(errors["bf16"]) < 2e-2  # what a plain bf16 FFT would cost


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the TPU kernel bodies are interpreted on CPU "
                    "(interpreted on the H200 they were 2.3e-3 off: GPU float32 arithmetic, not the TPU's)")
def test_tpu_kernels_interpreted():
    # Two dense levels of 16 (the TPU plan is dense only), channels padded to 128 lanes.
    u, k, bias = _inputs(3, 100, 5, 100)
    _check_vjp(lambda u, k, b: convolve(u, k, causal=True, bias=b, platform="tpu", max_size=16), u, k, bias, True)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_kernels_lower_without_hardware(platform, monkeypatch):
    """Realistic sizes: B8 L16K C1024 float32 (two levels) and B8 L1K bf16 (one pass), forward + backward."""
    monkeypatch.setattr(api, "_platform", lambda: "tpu" if platform == "tpu" else "gpu")

    def f(u_long, k_long, u_short, k_short, bias):
        def loss(*args):
            y1 = convolve(args[0], args[1], causal=True, bias=args[4])
            y2 = convolve(args[2], args[3], causal=False)
            return jnp.sum(y1) + jnp.sum(y2.astype(jnp.float32))

        return jax.grad(loss, argnums=(0, 1, 2, 3, 4))(u_long, k_long, u_short, k_short, bias)

    args = (jax.ShapeDtypeStruct((8, 16384, 1024), jnp.float32), jax.ShapeDtypeStruct((16384, 1024), jnp.float32),
            jax.ShapeDtypeStruct((8, 1024, 1024), jnp.bfloat16), jax.ShapeDtypeStruct((1023, 1024), jnp.float32),
            jax.ShapeDtypeStruct((1024,), jnp.float32))
    jax.jit(f).trace(*args).lower(lowering_platforms=(platform,))


def test_plans():
    cfg = dict(max_size=2048, dense_max=64, tile=8192, precision="bf16x3", num_warps=8)
    sizes = {n: [lv.size for lv in plan.make_plan(n, 1024, **cfg).levels] for n in (256, 2048, 1 << 15, 1 << 21)}
    assert sizes == {256: [256], 2048: [2048], 1 << 15: [32, 1024], 1 << 21: [1024, 2048]}
    tpu = plan.make_plan(1 << 15, 1024, **dict(cfg, max_size=256, dense_max=256), two_stage=False)
    assert [(lv.size, lv.dense) for lv in tpu.levels] == [(128, True), (256, True)]
    assert plan.fft_size(37) == 256 and plan.fft_size(32769) == 1 << 16


def test_backward_warps_are_their_own_table_key():
    fwd, bwd = api._plans(16384, 16384, 1024, "gpu", dict(num_warps=8, num_warps_bwd=4))
    assert (fwd.num_warps, bwd.num_warps) == (8, 4)
    fwd, bwd = api._plans(16384, 16384, 1024, "gpu", dict(num_warps=8))
    assert bwd.num_warps == 8  # None: the forward's


def test_dispatch_refuses_what_the_kernel_cannot_do():
    f64 = jax.ShapeDtypeStruct((2, 64, 4), jnp.float64)
    assert "float32" in why_not(f64, jax.ShapeDtypeStruct((8, 4), jnp.float32))
    huge = jax.ShapeDtypeStruct((1, 1 << 23, 1), jnp.float32)
    assert "FFT size" in why_not(huge, jax.ShapeDtypeStruct((1 << 23, 1), jnp.float32))
    u, k, _ = _inputs(1, 16, 2, 3)
    assert why_not(u, k, causal=True) is None
    if jax.default_backend() == "cpu":  # auto stays on the XLA path on a CPU
        assert FFT_CONV.resolve("auto", u=u, k=k, causal=True, bias=None) == "xla"
