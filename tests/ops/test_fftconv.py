"""sequax.ops.fftconv against direct numpy convolutions (float64 references): long and short
convolutions, histories for pieces (with packed segments), decode steps, ring buffers,
kernel parameterisations, bf16, x64, bad arguments."""

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
    history_to_ring,
    multiscale_kernel,
    ring_to_history,
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


def _np_segmented(u, k, seg):
    """Each run of equal ids convolved on its own (zero-padded): packed sequences."""
    out = np.zeros(u.shape)
    for b in range(u.shape[0]):
        cuts = [0] + [t for t in range(1, u.shape[1]) if seg[b, t] != seg[b, t - 1]] + [u.shape[1]]
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            out[b : b + 1, lo:hi] = _np_causal(u[b : b + 1, lo:hi], k)
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


def _bf16_error_of_the_reference(u, k, exact):
    """The float64 reference's own error when fed bf16-rounded inputs and rounded to bf16."""
    u16 = np.float32(jnp.asarray(u, jnp.bfloat16))
    return np.abs(np.float32(jnp.asarray(_np_causal(u16, k), jnp.bfloat16)) - exact).max()


def test_fft_conv_bfloat16_close_to_float32():
    u, k = _rand(9, B, L, C), _rand(10, L, C)
    y16 = fft_conv(jnp.asarray(u, jnp.bfloat16), k)
    assert y16.dtype == jnp.bfloat16
    exact = _np_causal(u, k)
    err = np.abs(np.float32(y16) - exact).max()
    ref_err = _bf16_error_of_the_reference(u, k, exact)
    assert err <= 1.05 * ref_err, (err, ref_err)  # the FFT itself runs in float32


def test_fft_conv_gradients():
    u, k, bias = _rand(11, 1, 8, 2), _rand(12, 5, 2), _rand(13, 2)
    for causal in (True, False):
        f = lambda u, k, b: fft_conv(u, k, causal=causal, bias=b)  # noqa: E731
        check_grads(f, (u, k, bias), order=1, modes=["rev"], atol=2e-3, rtol=2e-3)


def test_fft_conv_history_continues_the_convolution():
    u, k = _rand(27, B, 24, C), _rand(28, 30, C)
    whole = _np_causal(u, k)
    for past in (1, 9):  # a history shorter or longer than the piece's taps need
        y = fft_conv(u[:, past:], k, history=u[:, :past])
        np.testing.assert_allclose(y, whole[:, past:], **TOL)
    with pytest.raises(ValueError, match="causal"):
        fft_conv(u[:, 9:], k[:29], causal=False, history=u[:, :9])
    with pytest.raises(ValueError, match="history must be"):
        fft_conv(u[:, 9:], k, history=u[:1, :9])


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
    # The kernel is cast to the input dtype, so the reference gets bf16-rounded operands;
    # accumulation is float32, so only the output rounding (2^-8 relative) remains.
    u = jnp.asarray(_rand(16, B, L, C), jnp.bfloat16)
    k = jnp.asarray(_rand(17, 3, C), jnp.bfloat16)
    y = causal_conv1d(u, np.float32(k))
    assert y.dtype == jnp.bfloat16
    ref = _np_causal(np.float32(u), np.float32(k))
    assert np.all(np.abs(np.float32(y) - ref) <= 2.0**-8 * np.abs(ref) + 1e-6)


SEG = np.array([[0] * 3 + [1] * 6 + [2] * 7, [4] * 16])  # row 0: boundaries at 3 and 9


@pytest.mark.parametrize("taps", [1, 4])
def test_causal_conv1d_segments_and_pieces(taps):
    """Pieces [0, 9) and [9, 16) with the history passed on equal the whole; the second
    piece of row 0 starts a new segment (the caller drops that row's history, as the
    mixers' carry_state does), row 1 continues its segment."""
    u, k = _rand(29, B, L, C), _rand(30, taps, C)
    whole = causal_conv1d(u, k, segment_ids=SEG)
    np.testing.assert_allclose(whole, _np_segmented(u, k, SEG), **TOL)
    y1, history = causal_conv1d(u[:, :9], k, segment_ids=SEG[:, :9], return_history=True)
    assert history.shape == (B, taps - 1, C)
    history = history.at[0].set(0.0)
    y2 = causal_conv1d(u[:, 9:], k, segment_ids=SEG[:, 9:], history=history)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], axis=1), whole, **TOL)


def test_causal_conv1d_history_belongs_to_the_first_segment():
    u, k, past = _rand(31, B, L, C), _rand(32, 4, C), _rand(33, B, 3, C)
    y = causal_conv1d(u, k, segment_ids=SEG, history=past)
    full = np.concatenate([past, u], axis=1)
    seg_full = np.concatenate([SEG[:, :1].repeat(3, 1), SEG], axis=1)
    np.testing.assert_allclose(y, _np_segmented(full, k, seg_full)[:, 3:], **TOL)


def test_causal_conv1d_returned_history():
    u, k = _rand(34, B, L, C), _rand(35, 4, C)
    # Without segments: the same as the decode step's conv_state after the same inputs.
    _, history = causal_conv1d(u, k, return_history=True)
    state = jnp.zeros((B, 3, C))
    for t in range(L):
        _, state = causal_conv1d_step(u[:, t], state, k)
    np.testing.assert_array_equal(history, state)
    # Row 0's last segment started 2 steps before the end: older inputs are zeroed.
    seg = np.array([[0] * 14 + [1] * 2, [0] * 16])
    _, history = causal_conv1d(u, k, segment_ids=seg, return_history=True)
    np.testing.assert_array_equal(history[0], np.concatenate([np.zeros((1, C)), u[0, -2:]]))
    np.testing.assert_array_equal(history[1], u[1, -3:])


def test_ring_buffer_in_time_order():
    u, k = _rand(36, B, 13, C), _rand(37, 8, C)
    ring = jnp.zeros((B, 8, C))
    for t in range(13):
        _, ring = conv_history_step(u[:, t], ring, k, t)
    history = ring_to_history(ring, 13)
    np.testing.assert_array_equal(history, u[:, 5:13])
    np.testing.assert_array_equal(history_to_ring(history, 13), ring)
    # Before the buffer fills, the oldest slots are the zeros of "before time 0".
    np.testing.assert_array_equal(ring_to_history(history_to_ring(u[:, :8], 3), 3), u[:, :8])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_x64_keeps_the_input_dtype(dtype):
    u, k = _rand(38, B, L, C), _rand(39, 5, C)
    with jax.enable_x64(True):
        ud = u.astype(dtype)
        outs = [fft_conv(ud, k), fft_conv(ud, k[:5], causal=False), fft_conv(ud[:, 4:], k, history=ud[:, :4]),
                causal_conv1d(ud, k), causal_conv1d(ud, k, segment_ids=SEG)]
        assert all(y.dtype == dtype for y in outs)
        np.testing.assert_allclose(outs[0], _np_causal(u, k), **TOL)
        np.testing.assert_allclose(outs[4], _np_segmented(u, k, SEG), **TOL)


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
        (lambda: fft_conv(np.zeros((B, 0, C)), np.zeros((3, C))), "u must be .* length >= 1"),
        (lambda: fft_conv(np.zeros((0, L, C)), np.zeros((3, C))), "u must be .* batch >= 1"),
        (lambda: causal_conv1d(np.zeros((B, 0, C)), np.zeros((3, C))), "u must be .* length >= 1"),
        (lambda: causal_conv1d(np.zeros((0, L, C)), np.zeros((3, C))), "u must be .* batch >= 1"),
        (lambda: causal_conv1d(np.zeros((B, L, C), np.int32), np.zeros((3, C))), "u must be a float"),
        (lambda: causal_conv1d(np.zeros((B, L, C)), np.zeros((3, C)), segment_ids=np.zeros((1, L), int)),
         r"segment_ids must be an int array \[batch, length\]"),
        (lambda: causal_conv1d(np.zeros((B, L, C)), np.zeros((3, C)), segment_ids=np.zeros((B, L))),
         "segment_ids must be an int array"),
        (lambda: causal_conv1d(np.zeros((B, L, C)), np.zeros((3, C)), history=np.zeros((B, 3, C))),
         r"history must be a float array \[batch, K-1, channels\]"),
        (lambda: causal_conv1d_step(np.zeros((B, C), np.int32), np.zeros((B, 2, C)), np.zeros((3, C))),
         "u_t must be a float"),
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


def test_segment_ids_as_a_list():
    u, k = _rand(40, B, L, C), _rand(41, 3, C)
    np.testing.assert_allclose(causal_conv1d(u, k, segment_ids=SEG.tolist()), _np_segmented(u, k, SEG), **TOL)
