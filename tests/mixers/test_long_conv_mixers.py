"""Hyena, SGConv and the regularised long convolution: decoding, causality, kernels.

Compilation dominates the runtime on CPU, so each model is compiled a few
times at most: one jitted function returns both the outputs and an input
gradient, decoding is one jitted scan, and shape-only checks use eval_shape.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.mixers import get
from sequax.mixers.decoding import decode as decode_steps
from sequax.mixers.hyena import decay_window, filter_positions
from sequax.ops.fftconv import multiscale_kernel, smooth_kernel, soft_threshold

B, D = 2, 8
T0 = 10  # the output position whose input gradient the causality checks inspect
KEY = jax.random.PRNGKey(1)


def _x(length, seed=0):
    return np.random.default_rng(seed).standard_normal((B, length, D)).astype(np.float32)


class Built:
    """A module, its variables and ``run(variables, x) -> (y, d sum(y[:, T0]) / dx)``."""

    def __init__(self, name, **kwargs):
        self.module = module = get(name)(d_model=D, **kwargs)
        self.variables = jax.jit(module.init)(KEY, _x(8))

        @jax.jit
        def run(variables, x):
            y, vjp = jax.vjp(lambda x: module.apply(variables, x), x)
            (grad,) = vjp(jnp.zeros_like(y).at[:, T0].set(1.0))
            return y, grad

        self.run = run

    def decode(self, x):
        """``step`` over every position of ``x``, inside one jitted scan."""
        return jax.jit(functools.partial(decode_steps, self.module))(self.variables, x)


def _check_decode_and_causality(built, x):
    y, grad = built.run(built.variables, x)
    np.testing.assert_allclose(built.decode(x), y, rtol=1e-4, atol=2e-5)
    g = np.abs(grad)
    # FFT round-off leaks ~1e-7 relative from the future; a real dependence is O(1).
    assert g[:, T0 + 1 :].max() < 1e-5 * g[:, : T0 + 1].max()
    assert g[:, T0].max() > 0


def _check_mirror_symmetry(built, length=20):
    """Bidirectional: swapping the forward and reverse kernels mirrors the layer in time."""
    params = dict(built.variables["params"])
    swapped = dict(params, kernel=params["kernel_reverse"], kernel_reverse=params["kernel"])
    x = _x(length, seed=5)
    x_last = x.copy()
    x_last[:, -1] += 1.0
    stack = lambda *trees: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    y, y_mirror, y_last = jax.jit(jax.vmap(built.module.apply))(
        stack({"params": params}, {"params": swapped}, {"params": params}),
        stack(x, x[:, ::-1], x_last),
    )
    np.testing.assert_allclose(y_mirror[:, ::-1], y, rtol=1e-4, atol=1e-5)
    # Not causal: the first output depends on the last input.
    assert np.abs(y_last[:, 0] - y[:, 0]).max() > 1e-4


def _check_common_errors(built):
    module, variables = built.module, built.variables
    with pytest.raises(NotImplementedError, match="segment_ids"):
        module.apply(variables, _x(4), segment_ids=jnp.zeros((B, 4), jnp.int32))
    with pytest.raises(ValueError, match="x must be"):
        module.apply(variables, jnp.zeros((B, 4, D + 1)))
    with pytest.raises(ValueError, match="x_t must be"):
        module.apply(variables, _x(4), module.init_state(B), method="step")


# ----------------------------------------------------------------------------- hyena

HYENA = dict(max_length=80, filter_width=16, num_bands=3)


@pytest.fixture(scope="module")
def hyena():
    return Built("hyena", **HYENA)


def test_hyena_decode_equals_parallel_and_is_causal(hyena):
    _check_decode_and_causality(hyena, _x(72, seed=3))  # 72 decode steps


def test_hyena_two_sided_sees_the_future():
    built = Built("hyena", causal=False, **HYENA)
    _, grad = built.run(built.variables, _x(24))
    g = np.abs(grad)
    assert g[:, T0 + 1 :].max() > 1e-3 * g.max()
    with pytest.raises(ValueError, match="causal"):
        built.module.apply(built.variables, _x(1)[:, 0], built.module.init_state(B), method="step")


def test_hyena_filters_shape_prefix_and_decay(hyena):
    module, variables, n = hyena.module, hyena.variables, HYENA["max_length"]
    h, h_short, h_two_sided = jax.jit(
        lambda v: [
            module.apply(v, *a, method="filters") for a in [(n, True), (20, True), (20, False)]
        ]
    )(variables)
    assert h.shape == (2, n, D) and h_two_sided.shape == (2, 39, D)
    # Filters for a shorter sequence are the first taps of the full-length ones.
    np.testing.assert_allclose(h_short, h[:, :20], rtol=1e-6, atol=1e-7)

    # |h| <= window * (sum_j |W_out[j, c]| + |b_out[c]|) since the sines are in [-1, 1].
    out = variables["params"]["filter_mlp_2"]
    scale = (np.abs(out["kernel"]).sum(0) + np.abs(out["bias"])).reshape(2, 1, D)
    window = decay_window(filter_positions(n, n, True), D)
    assert np.all(np.abs(h) <= window[None] * scale + 1e-6)
    # The fastest channel is below 1% of its scale from 30% of max_length on.
    late = int(0.3 * n) + 1
    assert np.abs(h[:, late:, -1]).max() < 1e-2 * scale[:, 0, -1].max()


def test_decay_window_rates():
    t = jnp.array([0.0, 0.3, 1.5])
    w = decay_window(t, 5, fast_decay=0.3, slow_decay=1.5, target=1e-2)
    np.testing.assert_allclose(w[0], np.ones(5), rtol=1e-6)
    np.testing.assert_allclose([w[1, -1], w[2, 0]], [1e-2, 1e-2], rtol=1e-5)
    assert np.all(np.diff(np.asarray(w[1])) < 0)  # faster decay towards the last channel
    np.testing.assert_allclose(decay_window(-t, 5), w)  # depends on |t| only


def test_hyena_bfloat16_compute(hyena):
    """bf16 compute against float32: the FFT form's error is that of the reference (cached
    decoding, direct sums) run in bf16 too, measured here, within 25%."""
    x = _x(24, seed=3)
    y = np.asarray(hyena.module.apply(hyena.variables, x))
    low = get("hyena")(d_model=D, dtype=jnp.bfloat16, **HYENA)
    y16 = jax.jit(low.apply)(hyena.variables, x)
    assert y16.dtype == jnp.bfloat16
    decoded16 = jax.jit(functools.partial(decode_steps, low))(hyena.variables, x)
    err = lambda z: np.abs(np.float32(z) - y).max() / np.abs(y).max()  # noqa: E731
    assert err(y16) <= 1.25 * err(decoded16), (err(y16), err(decoded16))


def test_hyena_errors(hyena):
    _check_common_errors(hyena)
    with pytest.raises(ValueError, match="max_length"):
        hyena.module.apply(hyena.variables, _x(HYENA["max_length"] + 1))
    with pytest.raises(ValueError, match="order"):
        jax.eval_shape(get("hyena")(d_model=D, order=0).init, KEY, _x(4))


# ----------------------------------------------------------------------------- sgconv

# kernel_dim * (2**3 - 1) == 28 == max_length: three scales exactly cover the kernel.
SG = dict(max_length=28, kernel_dim=4)


@pytest.fixture(scope="module")
def sgconv():
    return Built("sgconv", **SG)


def test_sgconv_kernel_construction(sgconv):
    weights = sgconv.variables["params"]["kernel"]
    assert weights.shape == (3, SG["kernel_dim"], D)  # num_scales=0 picked 3
    k, k_rev = jax.jit(lambda v: sgconv.module.apply(v, method="kernels"))(sgconv.variables)
    assert k_rev is None and k.shape == (SG["max_length"], D)
    np.testing.assert_allclose(jnp.linalg.norm(k, axis=0), np.ones(D), rtol=1e-5)
    np.testing.assert_allclose(k, multiscale_kernel(weights, 0.5), rtol=1e-6, atol=1e-7)
    # Four explicit scales give 60 taps, cut to max_length.
    module = get("sgconv")(d_model=D, max_length=20, kernel_dim=4, num_scales=4)
    shapes = jax.eval_shape(lambda: module.apply(module.init(KEY, _x(4)), method="kernels"))
    assert shapes[0].shape == (20, D)


def test_sgconv_decode_equals_parallel_and_is_causal(sgconv):
    _check_decode_and_causality(sgconv, _x(40, seed=4))  # longer than max_length


def test_sgconv_bidirectional():
    _check_mirror_symmetry(Built("sgconv", causal=False, **SG))


def test_sgconv_errors(sgconv):
    _check_common_errors(sgconv)
    with pytest.raises(ValueError, match="alpha"):
        jax.eval_shape(get("sgconv")(d_model=D, alpha=0.0).init, KEY, _x(4))


# -------------------------------------------------------------------------- long_conv

LC = dict(max_length=24, squash_lambda=0.01, smooth_width=3)


@pytest.fixture(scope="module")
def long_conv():
    return Built("long_conv", **LC)


@pytest.mark.parametrize("regularizer", ["squash", "smooth", "both", "none"])
def test_long_conv_regularizer(long_conv, regularizer):
    raw = long_conv.variables["params"]["kernel"]
    module = get("long_conv")(d_model=D, regularizer=regularizer, **LC)
    k, _ = module.apply(long_conv.variables, method="kernels")
    expected = {
        "squash": soft_threshold(raw, 0.01),
        "smooth": smooth_kernel(raw, 3),
        "both": smooth_kernel(soft_threshold(raw, 0.01), 3),
        "none": raw,
    }[regularizer]
    np.testing.assert_allclose(k, expected, rtol=1e-6, atol=1e-7)
    if regularizer == "squash":  # small taps are exactly zero, the others shrink by lambda
        small = np.abs(raw) <= 0.01
        assert small.any() and np.all(np.asarray(k)[small] == 0)
        np.testing.assert_allclose(np.abs(k)[~small], np.abs(raw)[~small] - 0.01, atol=1e-7)


def test_long_conv_decode_equals_parallel_and_is_causal(long_conv):
    _check_decode_and_causality(long_conv, _x(40, seed=6))  # the ring buffer wraps around


def test_long_conv_bidirectional():
    _check_mirror_symmetry(Built("long_conv", causal=False, **LC))


def test_long_conv_errors(long_conv):
    _check_common_errors(long_conv)
    bad_fields = [(dict(regularizer="l2"), "regularizer"), (dict(smooth_width=2), "smooth_width")]
    for bad, match in bad_fields:
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(get("long_conv")(d_model=D, **bad).init, KEY, _x(4))


# ---------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["hyena", "sgconv", "long_conv"])
def test_config_builds_registered_mixer(name):
    config = importlib.import_module(f"configs.mixers.{name}").get_config()
    assert config.model.mixer == name
    module = get(name)(d_model=config.model.d_model, **dict(config.model.mixer_kwargs))
    x = jnp.zeros((B, config.data.task_kwargs["seq_len"], config.model.d_model))
    y = jax.eval_shape(lambda x: module.apply(module.init(KEY, x), x), x)
    assert y.shape == x.shape
