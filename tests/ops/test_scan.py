"""linear_scan: every mode against a numpy loop, state carrying, resets, length 1, grads
(the reference checked numerically, the other modes against it), long inputs, bf16, x64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.scan import MODES, linear_scan
from sequax.ops.segments import segment_starts

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
@pytest.mark.parametrize("reverse", [False, True])
def test_length_one(mode, reverse):
    a, b, h0, seg = inputs(7, length=1)
    h, last = scan(a, b, h0, seg, mode=mode, reverse=reverse, return_state=True)
    ref = reference(a, b, h0, reverse, seg)
    close(h, ref)
    close(last, ref[:, 0])


@functools.partial(jax.jit, static_argnames=("mode", "reverse"))
def _grads(mode, a, b, h0, seg, reverse=False):
    """d <h, w> / d(a, b, h0) for a fixed random cotangent w."""
    w = jnp.asarray(np.random.default_rng(9).normal(size=b.shape), b.dtype)

    def loss(a, b, h0):
        h = linear_scan(a, b, initial_state=h0, segment_ids=seg, reverse=reverse, mode=mode, chunk_size=4)
        return jnp.sum(h * w)

    return jax.grad(loss, argnums=(0, 1, 2))(a, b, h0)


def test_reference_grads_numerically():
    """The sequential mode's gradients against central differences, in float64 (exact to ~1e-8)."""
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
        a = jnp.asarray(rng.uniform(0.5, 1.0, (2, 9, 2)))
        b = jnp.asarray(rng.normal(size=(2, 9, 2)))
        h0 = jnp.asarray(rng.normal(size=(2, 2)))
        seg = jnp.asarray([[0] * 4 + [1] * 5, [2] * 9])
        f = jax.jit(lambda a, b, h0: linear_scan(a, b, initial_state=h0, segment_ids=seg, mode="sequential"))
        check_grads(f, (a, b, h0), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("mode", ["associative", "chunked"])
@pytest.mark.parametrize("reverse", [False, True])
def test_grads_match_the_reference_mode(mode, reverse):
    """Gradients with an initial state and segment resets, against the sequential mode."""
    a, b, h0, seg = inputs(8)
    ref = _grads("sequential", a, b, h0, seg, reverse)
    for g, r in zip(_grads(mode, a, b, h0, seg, reverse), ref):
        close(g, r, rtol=2e-6)


def test_reset_blocks_the_gradient():
    a, b, h0, seg = inputs(10)

    def late_sum(b):  # outputs of row 0's second segment (positions 10..24) only
        return jnp.sum(linear_scan(a, b, segment_ids=seg, mode="chunked", chunk_size=4)[0, 10:25])

    g = np.asarray(jax.jit(jax.grad(late_sum))(b))
    assert np.all(g[0, :10] == 0) and np.all(g[0, 25:] == 0) and np.abs(g[0, 10:25]).min() > 0


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
    """bf16 in and out, float32 inside: the error is that of the float64 reference fed the same
    bf16 inputs and rounded to bf16, measured here, and the float32 accumulation adds nothing."""
    a, b, h0, _ = inputs(6, length=64)
    a = 0.8 * a  # |a| <= 0.8: errors in a are not amplified by long memories
    a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
    h16 = np.asarray(scan(a16, b16, mode="chunked"), np.float32)
    assert scan(a16, b16, mode="chunked").dtype == jnp.bfloat16
    exact = reference(np.float64(a), np.float64(b))
    rounded_ref = reference(np.float64(np.asarray(a16, np.float32)), np.float64(np.asarray(b16, np.float32)))
    ref_err = np.abs(np.asarray(jnp.asarray(rounded_ref, jnp.bfloat16), np.float32) - exact).max()
    err = np.abs(h16 - exact).max()
    assert err <= 1.05 * ref_err + 1e-6, (err, ref_err)
    # Against the same rounded inputs only the final rounding remains (2^-8 relative).
    rel = np.abs(h16 - rounded_ref) / np.maximum(np.abs(rounded_ref), 1e-3)
    assert rel.max() <= 2.0**-8, rel.max()


def test_x64_keeps_the_input_dtype():
    a, b, h0, seg = inputs(11, length=9)

    @jax.jit
    def every_mode(a, b, h0):
        return [linear_scan(a, b, initial_state=h0, segment_ids=seg, mode=m, chunk_size=4, return_state=True)
                for m in MODES]

    with jax.enable_x64(True):
        for dtype in (np.float32, np.float64):
            for h, last in every_mode(a.astype(dtype), b.astype(dtype), h0.astype(dtype)):
                assert h.dtype == dtype and last.dtype == dtype
                close(h, reference(a, b, h0, segment_ids=seg))


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
    with pytest.raises(ValueError, match="batch"):
        linear_scan(a[:0], b[:0])
    with pytest.raises(ValueError, match="b must be a float"):
        linear_scan(a, b.astype(np.int32))
    with pytest.raises(ValueError, match="a must be a float"):
        linear_scan(a.astype(np.int32), b)
    with pytest.raises(ValueError, match=r"segment_ids must be an int array \[batch, length\]"):
        linear_scan(a, b, segment_ids=seg[:1])  # wrong batch size
    with pytest.raises(ValueError, match="segment_ids"):
        linear_scan(a, b, segment_ids=seg.astype(np.float32))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_scan(a, b, mode="chunked", chunk_size="8")
    # A list of ids and a numpy int chunk size are fine.
    close(linear_scan(a, b, segment_ids=seg.tolist(), mode="chunked", chunk_size=np.int64(8)),
          reference(a, b, segment_ids=seg))
