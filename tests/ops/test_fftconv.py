"""sequax.ops.fftconv against direct numpy convolutions (float64 references)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.fftconv import (
    causal_conv1d,
    causal_conv1d_step,
    conv_history_step,
    fft_conv,
    multiscale_kernel,
    smooth_kernel,
    soft_threshold,
    two_sided_kernel,
)

B, L, C = 2, 16, 4
TOL = dict(rtol=1e-5, atol=1e-5)


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _np_causal(u, k):
    """y[t] = sum_s k[s] u[t-s], one channel at a time."""
    u, k = np.float64(u), np.float64(k)
    out = np.zeros_like(u)
    for b in range(u.shape[0]):
        for c in range(u.shape[2]):
            out[b, :, c] = np.convolve(u[b, :, c], k[:, c])[: u.shape[1]]
    return out


def _np_two_sided(u, k):
    """The documented formula y[t] = sum_j k[j] u[t - (j - c)], as explicit loops."""
    u, k = np.float64(u), np.float64(k)
    centre = (k.shape[0] - 1) // 2
    out = np.zeros_like(u)
    for t in range(u.shape[1]):
        for j in range(k.shape[0]):
            src = t - (j - centre)
            if 0 <= src < u.shape[1]:
                out[:, t] += k[j] * u[:, src]
    return out


@pytest.mark.parametrize("taps", [5, L, 37])  # shorter than, equal to, longer than L
def test_fft_conv_causal_matches_numpy(taps):
    u, k = _rand(0, B, L, C), _rand(1, taps, C)
    np.testing.assert_allclose(fft_conv(u, k), _np_causal(u, k), **TOL)


@pytest.mark.parametrize("taps", [5, 2 * L - 1, 41])
def test_fft_conv_two_sided_matches_numpy(taps):
    u, k = _rand(2, B, L, C), _rand(3, taps, C)
    y = fft_conv(u, k, causal=False)
    np.testing.assert_allclose(y, _np_two_sided(u, k), **TOL)
    if taps <= L:  # the convention is numpy's "same" mode
        same = np.stack([np.convolve(u[0, :, c], k[:, c], mode="same") for c in range(C)], -1)
        np.testing.assert_allclose(y[0], same, **TOL)


def test_two_sided_with_zero_future_taps_is_causal():
    u, k = _rand(4, B, L, C), _rand(5, 7, C)
    padded = np.concatenate([np.zeros((6, C), np.float32), k])  # lag 0 at index 6
    np.testing.assert_allclose(fft_conv(u, padded, causal=False), fft_conv(u, k), **TOL)


@pytest.mark.parametrize("causal", [True, False])
def test_fft_conv_bias_is_skip_term(causal):
    u, k, bias = _rand(6, B, L, C), _rand(7, 9, C), _rand(8, C)
    y = fft_conv(u, k, causal=causal, bias=bias)
    np.testing.assert_allclose(y - fft_conv(u, k, causal=causal), bias * u, **TOL)


def test_fft_conv_bfloat16_close_to_float32():
    u, k = _rand(9, B, L, C), _rand(10, L, C)
    y16 = fft_conv(jnp.asarray(u, jnp.bfloat16), k)
    assert y16.dtype == jnp.bfloat16
    ref = _np_causal(u, k)
    # Input rounding (2^-9 relative) plus output rounding, against the output scale.
    err = np.abs(np.float32(y16) - ref).max() / np.abs(ref).max()
    assert err < 2e-2, err


def test_fft_conv_gradients():
    u, k, bias = _rand(11, 1, 8, 2), _rand(12, 5, 2), _rand(13, 2)
    for causal in (True, False):
        f = lambda u, k, b: fft_conv(u, k, causal=causal, bias=b)  # noqa: E731
        check_grads(f, (u, k, bias), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("taps", [1, 4])
def test_causal_conv1d_and_step(taps):
    u, k = _rand(14, B, L, C), _rand(15, taps, C)
    y = causal_conv1d(u, k)
    np.testing.assert_allclose(y, _np_causal(u, k), **TOL)

    step = jax.jit(causal_conv1d_step)
    state = jnp.zeros((B, taps - 1, C))
    for t in range(L):
        y_t, state = step(u[:, t], state, k)
        np.testing.assert_allclose(y_t, y[:, t], **TOL)


def test_causal_conv1d_bfloat16_dtype():
    # The kernel is cast to the input dtype, so compare against bf16-rounded operands.
    u = jnp.asarray(_rand(16, B, L, C), jnp.bfloat16)
    k = jnp.asarray(_rand(17, 3, C), jnp.bfloat16)
    y = causal_conv1d(u, np.float32(k))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(y), _np_causal(np.float32(u), np.float32(k)),
                               rtol=1e-2, atol=1e-2)


def test_conv_history_step_matches_fft_conv_past_wraparound():
    # H = 8 slots, 6 taps, 20 steps: the ring buffer wraps twice.
    u, k, bias = _rand(18, B, 20, C), _rand(19, 6, C), _rand(20, C)
    y = fft_conv(u, k, bias=bias)
    step = jax.jit(conv_history_step)
    history = jnp.zeros((B, 8, C))
    for t in range(20):
        y_t, history = step(u[:, t], history, k, t, bias=bias)
        np.testing.assert_allclose(y_t, y[:, t], **TOL)


def test_multiscale_kernel_structure():
    num_scales, dim, alpha = 3, 4, 0.5
    k = multiscale_kernel(_rand(21, num_scales, dim, C), alpha)
    assert k.shape == (dim * (2**num_scales - 1), C)
    np.testing.assert_allclose(jnp.linalg.norm(k, axis=0), np.ones(C), **TOL)

    # Constant sub-kernels interpolate to constants: piece i is alpha**i everywhere.
    k = multiscale_kernel(np.ones((num_scales, dim, 1), np.float32), alpha)
    raw = np.concatenate([np.full(dim * 2**i, alpha**i) for i in range(num_scales)])
    np.testing.assert_allclose(k[:, 0], raw / np.linalg.norm(raw), **TOL)

    # Scale 0 is w[0] itself; scale 1 is w[1] linearly interpolated at cell centres.
    w = _rand(22, num_scales, dim, 1)
    full = np.asarray(multiscale_kernel(w, alpha))[:, 0]
    raw = np.concatenate([w[0, :, 0], alpha * np.interp((np.arange(2 * dim) + 0.5) / 2 - 0.5,
                                                        np.arange(dim), w[1, :, 0])])
    np.testing.assert_allclose(full[: 3 * dim] / full[0], raw / raw[0], rtol=1e-5)


def test_two_sided_kernel_is_forward_plus_flipped_backward():
    u, k_f, k_b = _rand(23, B, L, C), _rand(24, 6, C), _rand(25, 6, C)
    y = fft_conv(u, two_sided_kernel(k_f, k_b), causal=False)
    expected = fft_conv(u, k_f) + fft_conv(u[:, ::-1], k_b)[:, ::-1]
    np.testing.assert_allclose(y, expected, **TOL)


def test_soft_threshold():
    k = np.array([-0.5, -0.1, 0.0, 0.05, 0.3], np.float32)
    np.testing.assert_allclose(soft_threshold(k, 0.1), [-0.4, 0.0, 0.0, 0.0, 0.2], atol=1e-7)


def test_smooth_kernel():
    k = np.array([[0.0], [3.0], [0.0], [6.0], [3.0]], np.float32)
    # Width 3: interior taps average 3 neighbours, end taps the 2 that exist.
    np.testing.assert_allclose(smooth_kernel(k, 3)[:, 0], [1.5, 1.0, 3.0, 3.0, 4.5], **TOL)
    np.testing.assert_allclose(smooth_kernel(np.full((7, 2), 2.5, np.float32), 5), 2.5, **TOL)
    rough = _rand(26, 64, C)
    tv = lambda x: np.abs(np.diff(np.asarray(x), axis=0)).sum()  # noqa: E731
    assert tv(smooth_kernel(rough, 5)) < 0.5 * tv(rough)
    np.testing.assert_array_equal(smooth_kernel(rough, 1), rough)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: fft_conv(np.zeros((L, C), np.float32), np.zeros((3, C))), "u"),
        (lambda: fft_conv(np.zeros((B, L, C), np.int32), np.zeros((3, C))), "u"),
        (lambda: fft_conv(np.zeros((B, L, C)), np.zeros((3, C + 1))), "k"),
        (lambda: fft_conv(np.zeros((B, L, C)), np.zeros((4, C)), causal=False), "k"),
        (lambda: fft_conv(np.zeros((B, L, C)), np.zeros((3, C)), bias=np.zeros(2)), "bias"),
        (lambda: fft_conv(np.zeros((B, L, C)), np.zeros((3, C)), backend="cufft"), "backend"),
        (lambda: causal_conv1d(np.zeros((B, L, C)), np.zeros((3,))), "k"),
        (lambda: causal_conv1d_step(np.zeros((B, C)), np.zeros((B, 3, C)), np.zeros((3, C))),
         "conv_state"),
        (lambda: conv_history_step(np.zeros((B, C)), np.zeros((B, 4, C)), np.zeros((5, C)), 0),
         "k"),
        (lambda: conv_history_step(np.zeros((B, C)), np.zeros((B, 4)), np.zeros((3, C)), 0),
         "history"),
        (lambda: multiscale_kernel(np.zeros((2, 3))), "weights"),
        (lambda: multiscale_kernel(np.zeros((2, 3, 1)), alpha=1.5), "alpha"),
        (lambda: two_sided_kernel(np.zeros((3, C)), np.zeros((4, C))), "k_bwd"),
        (lambda: smooth_kernel(np.zeros((5, C)), 2), "width"),
        (lambda: soft_threshold(np.zeros(3), -1.0), "lam"),
    ],
)
def test_bad_inputs_raise_naming_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
