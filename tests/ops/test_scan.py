"""linear_scan: every mode against a numpy loop, state carrying, resets, grads, long inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.scan import MODES, linear_scan, segment_starts

B, L, C, N = 2, 37, 3, 4  # 37 is not a multiple of the chunk size 8
CHUNK = 8


def reference(a, b, h0=None, reverse=False, segment_ids=None):
    """Plain numpy loop; restarts from a zero state at each segment start."""
    a = np.broadcast_to(np.asarray(a), np.shape(b))
    b = np.asarray(b)
    order = range(b.shape[1] - 1, -1, -1) if reverse else range(b.shape[1])
    out = np.zeros(b.shape, np.result_type(a, b))
    for i in range(b.shape[0]):
        h = np.zeros(b.shape[2:], out.dtype) if h0 is None else np.asarray(h0[i], out.dtype)
        prev = None
        for t in order:
            if segment_ids is not None and prev is not None and segment_ids[i, t] != segment_ids[i, prev]:
                h = np.zeros_like(h)
            h = a[i, t] * h + b[i, t]
            out[i, t] = h
            prev = t
    return out


def close(x, ref, rtol=1e-5):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def inputs(seed=0, complex_=False, length=L):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 1.0, (B, length, C, 1)).astype(np.float32)  # broadcast over N
    b = rng.normal(size=(B, length, C, N)).astype(np.float32)
    h0 = rng.normal(size=(B, C, N)).astype(np.float32)
    if complex_:
        a = (a * np.exp(1j * rng.uniform(-np.pi, np.pi, a.shape))).astype(np.complex64)
        b = (b + 1j * rng.normal(size=b.shape)).astype(np.complex64)
        h0 = (h0 + 1j * rng.normal(size=h0.shape)).astype(np.complex64)
    seg = np.repeat(np.array([[0, 0, 1, 1, 1, 2, 2, 2], [5, 5, 5, 5, 5, 5, 7, 7]]), 5, axis=1)[:, :length]
    return a, b, h0, seg


@functools.partial(jax.jit, static_argnames=("mode", "reverse", "return_state"))
def scan(a, b, h0=None, seg=None, *, mode, reverse=False, return_state=False):
    return linear_scan(
        a, b, initial_state=h0, segment_ids=seg, reverse=reverse, mode=mode,
        chunk_size=CHUNK, return_state=return_state,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference_with_state_and_segments(mode, reverse):
    a, b, h0, seg = inputs()
    h, last = scan(a, b, h0, seg, mode=mode, reverse=reverse, return_state=True)
    ref = reference(a, b, h0, reverse, seg)
    close(h, ref)
    close(last, ref[:, -1] if not reverse else ref[:, 0])


@pytest.mark.parametrize("mode", MODES)
def test_complex(mode):
    a, b, h0, _ = inputs(1, complex_=True)
    h = scan(a, b, h0, mode=mode, reverse=True)
    assert h.dtype == jnp.complex64
    close(h, reference(a, b, h0, reverse=True))


@pytest.mark.parametrize("mode", MODES)
def test_split_and_carry_state(mode):
    a, b, h0, _ = inputs(2)
    s = 16  # two halves of the same length share one compilation
    whole = reference(a[:, : 2 * s], b[:, : 2 * s], h0)
    h1, state = scan(a[:, :s], b[:, :s], h0, mode=mode, return_state=True)
    h2, _ = scan(a[:, s : 2 * s], b[:, s : 2 * s], state, mode=mode, return_state=True)
    close(jnp.concatenate([h1, h2], axis=1), whole)
    # Reverse: the tail is scanned first and hands its state to the head.
    whole = reference(a[:, : 2 * s], b[:, : 2 * s], h0, reverse=True)
    h2, state = scan(a[:, s : 2 * s], b[:, s : 2 * s], h0, mode=mode, reverse=True, return_state=True)
    h1, _ = scan(a[:, :s], b[:, :s], state, mode=mode, reverse=True, return_state=True)
    close(jnp.concatenate([h1, h2], axis=1), whole)


def test_segments_are_independent():
    a, b, _, seg = inputs(3)
    h = scan(a, b, seg=seg, mode="chunked")
    # Changing everything in the first segment of row 0 (positions 0..9) leaves the rest alone.
    b2 = b.copy()
    b2[0, :10] += 10.0
    h2 = scan(a, b2, seg=seg, mode="chunked")
    np.testing.assert_array_equal(np.asarray(h)[0, 10:], np.asarray(h2)[0, 10:])
    starts = np.asarray(segment_starts(seg))
    assert starts[0].nonzero()[0].tolist() == [10, 25] and not starts[:, 0].any()
    assert np.asarray(segment_starts(seg, reverse=True))[0].nonzero()[0].tolist() == [9, 24]


@pytest.mark.parametrize("mode", MODES)
def test_grads(mode):
    rng = np.random.default_rng(4)
    a = jnp.asarray(rng.uniform(0.5, 1.0, (1, 9, 2)))
    b = jnp.asarray(rng.normal(size=(1, 9, 2)))
    h0 = jnp.asarray(rng.normal(size=(1, 2)))
    f = jax.jit(lambda a, b, h0: linear_scan(a, b, initial_state=h0, mode=mode, chunk_size=4))
    check_grads(f, (a, b, h0), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_long_sequence_finite():
    length = 65536
    rng = np.random.default_rng(5)
    a = rng.uniform(0.9, 1.0, (1, length, 2)).astype(np.float32)
    b = rng.normal(size=(1, length, 2)).astype(np.float32)
    h = {
        m: np.asarray(jax.jit(functools.partial(linear_scan, mode=m))(a, b))
        for m in ("associative", "chunked")
    }
    assert np.isfinite(h["associative"]).all() and np.isfinite(h["chunked"]).all()
    close(h["chunked"], h["associative"], rtol=1e-4)
    # Spot-check the tail against the numpy loop, started from the state at 65000.
    start = 65000
    ref = reference(a[:, start:], b[:, start:], h["associative"][:, start - 1])
    close(h["chunked"][:, start:], ref, rtol=1e-4)


def test_bfloat16_accumulates_in_float32():
    a, b, h0, _ = inputs(6, length=64)
    a = 0.8 * a  # |a| <= 0.8: errors in a are not amplified by long memories
    a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
    h16 = scan(a16, b16, mode="chunked")
    assert h16.dtype == jnp.bfloat16
    h32 = reference(a, b)
    # Against float32 on the unrounded inputs: input rounding (2^-9) plus output rounding.
    err = np.abs(np.asarray(h16, np.float32) - h32).max() / np.abs(h32).max()
    assert err < 2e-2, err
    # Against float32 on the same rounded inputs only the final rounding remains,
    # which shows the recurrence itself ran in float32.
    h_same = reference(np.asarray(a16, np.float32), np.asarray(b16, np.float32))
    rel = np.abs(np.asarray(h16, np.float32) - h_same) / np.maximum(np.abs(h_same), 1e-3)
    assert rel.max() <= 2.0**-8, rel.max()


def test_bad_inputs():
    a, b, h0, seg = inputs()
    with pytest.raises(ValueError, match="mode"):
        linear_scan(a, b, mode="parallel")
    with pytest.raises(ValueError, match="chunk_size"):
        linear_scan(a, b, mode="chunked", chunk_size=0)
    with pytest.raises(ValueError, match="same rank"):
        linear_scan(a[..., 0], b)
    with pytest.raises(ValueError, match="broadcast"):
        linear_scan(a[:, :3], b)
    with pytest.raises(ValueError, match="initial_state"):
        linear_scan(a, b, initial_state=h0[:, :1, :1, None])
    with pytest.raises(ValueError, match="segment_ids"):
        linear_scan(a, b, segment_ids=seg[:, :5])
    with pytest.raises(ValueError, match="length"):
        linear_scan(a[:, :0], b[:, :0])
