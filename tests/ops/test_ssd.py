"""SSD (Mamba-2): chunked algorithm vs the recurrence, segment resets, decode steps, length 1
and 1000, strong decays, long chunks, grads (naive checked numerically, chunked against
naive), bf16, x64, bad arguments."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.ssm import ssd, ssd_step

ssd_module = importlib.import_module("sequax.ops.ssm.ssd")  # the package exports the function

B_, L, H, P, G, N = 2, 37, 4, 3, 2, 5  # 37 is a multiple of no chunk size tested
# Boundaries inside chunks (5, 30), on a chunk edge for chunk sizes 8 and 16 (16), and a
# row without any.
SEG = np.array([[0] * 5 + [1] * 11 + [2] * 14 + [3] * 7, [7] * 37])


def make(seed=0, length=L):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return dict(
        x=f(B_, length, H, P),
        dt=rng.uniform(0.01, 1.0, (B_, length, H)).astype(np.float32),
        A=-rng.uniform(0.5, 8.0, H).astype(np.float32),  # strong decays: exp(dt A) down to e^-8
        B=f(B_, length, G, N), C=f(B_, length, G, N), D=f(H),
    ), f(B_, H, P, N)


def numpy_loop(x, dt, A, B, C, D, h0, segment_ids=None):
    """Float64 loops over batch, time and head; independent of the library."""
    y = np.zeros(x.shape)
    h = np.array(h0, np.float64)
    per_group = H // G
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if segment_ids is not None and t > 0 and segment_ids[b, t] != segment_ids[b, t - 1]:
                h[b] = 0.0
            for k in range(H):
                g = k // per_group
                h[b, k] = np.exp(dt[b, t, k] * A[k]) * h[b, k] + dt[b, t, k] * np.outer(x[b, t, k], B[b, t, g])
                y[b, t, k] = h[b, k] @ C[b, t, g] + D[k] * x[b, t, k]
    return y, h


def close(x, ref, rtol=1e-5):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=rtol, atol=rtol * np.abs(ref).max())


naive = jax.jit(functools.partial(ssd, mode="naive", return_state=True))
chunked = jax.jit(functools.partial(ssd, return_state=True), static_argnames=("chunk_size",))


def test_naive_matches_numpy_loop():
    args, h0 = make()
    y, h = naive(**args, initial_state=h0, segment_ids=SEG)
    ref_y, ref_h = numpy_loop(**args, h0=h0, segment_ids=SEG)
    close(y, ref_y)
    close(h, ref_h)


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 64])
def test_chunked_matches_naive(chunk_size):
    args, h0 = make(1)
    for seg in (None, SEG):
        ref_y, ref_h = naive(**args, initial_state=h0, segment_ids=seg)
        y, h = chunked(**args, chunk_size=chunk_size, initial_state=h0, segment_ids=seg)
        close(y, ref_y)
        close(h, ref_h)


def test_no_initial_state_no_D_and_split():
    args, _ = make(2, length=32)
    args.pop("D")
    ref_y, ref_h = naive(**args)
    f = jax.jit(functools.partial(ssd, chunk_size=8, return_state=True))
    # The first half starts from no state; the second carries the first's final state.
    half = lambda lo, hi: {k: v[:, lo:hi] for k, v in args.items() if k != "A"}  # noqa: E731
    y1, h1 = f(A=args["A"], **half(0, 16))
    y2, h2 = f(A=args["A"], **half(16, 32), initial_state=h1)
    close(jnp.concatenate([y1, y2], axis=1), ref_y)
    close(h2, ref_h)


def test_pieces_with_a_segment_boundary_at_the_piece_edge():
    """Row 0 starts segment 2 exactly at the cut (16): its carried state is dropped by the
    caller, row 1's is kept; the pieces then equal the whole."""
    args, h0 = make(3)
    ref_y, ref_h = naive(**args, initial_state=h0, segment_ids=SEG)
    cut = lambda lo, hi: {k: v[:, lo:hi] for k, v in args.items() if k not in ("A", "D")}  # noqa: E731
    fixed = dict(A=args["A"], D=args["D"], chunk_size=8)
    y1, h1 = chunked(**cut(0, 16), **fixed, initial_state=h0, segment_ids=SEG[:, :16])
    new_segment = SEG[:, 16] != SEG[:, 15]
    h1 = jnp.where(new_segment[:, None, None, None], 0.0, h1)
    y2, h2 = chunked(**cut(16, L), **fixed, initial_state=h1, segment_ids=SEG[:, 16:])
    close(jnp.concatenate([y1, y2], axis=1), ref_y)
    close(h2, ref_h)


def test_step_matches_naive():
    args, h0 = make(3, length=12)
    ref_y, ref_h = naive(**args, initial_state=h0)
    step = jax.jit(ssd_step)
    state, ys = jnp.asarray(h0), []
    for t in range(12):
        y_t, state = step(args["x"][:, t], args["dt"][:, t], args["A"], args["B"][:, t],
                          args["C"][:, t], state, D=args["D"])
        ys.append(y_t)
    close(jnp.stack(ys, axis=1), ref_y)
    close(state, ref_h)


def test_length_one():
    args, h0 = make(4, length=1)
    ref_y, ref_h = numpy_loop(**args, h0=h0)
    for f in (naive, functools.partial(chunked, chunk_size=8)):
        y, h = f(**args, initial_state=h0, segment_ids=np.zeros((B_, 1), np.int32))
        close(y, ref_y)
        close(h, ref_h)


@pytest.mark.parametrize("chunk_size, packed", [(64, True), (1024, False)])
def test_length_1000_and_long_chunks(chunk_size, packed):
    """16 chunks of 64 with packed segments, or one chunk of 1024, against the recurrence.
    The state decays are segment sums, never differences of cumulative sums (which lost
    1.2e-4 of the final state at chunk 1024)."""
    args, _ = make(5, length=1000)
    args = {k: v[:1] if k not in ("A", "D") else v for k, v in args.items()}
    seg = np.repeat([[0, 1, 2, 3]], 250, axis=1) if packed else None
    ref_y, ref_h = naive(**args, segment_ids=seg)
    y, h = chunked(**args, chunk_size=chunk_size, segment_ids=seg)
    close(y, ref_y, 1e-6)
    close(h, ref_h, 1e-6)


def _strong_decay():
    """``dt A = -1e4`` at position 5 (``x`` is zero there, so the input stays small)."""
    args, h0 = make(6, length=70)
    args["A"] = -np.linspace(0.1, 1.0, H).astype(np.float32)
    args["dt"][:, 5] = 1e4 / -args["A"]
    args["x"][:, 5] = 0.0
    return args, h0


@functools.partial(jax.jit, static_argnames=("mode",))
def grads(args, h0, seg, *, mode):
    """The VJP of ``(y, final state)`` at fixed cotangents, w.r.t. every input and ``h0``."""
    out, vjp = jax.vjp(
        lambda args, h0: ssd(**args, chunk_size=16, initial_state=h0, segment_ids=seg, return_state=True,
                             mode=mode),
        args, h0,
    )
    return vjp(jax.tree_util.tree_map(lambda o: jnp.cos(jnp.arange(o.size).reshape(o.shape)), out))


def test_very_negative_decay_is_finite_and_matches_naive():
    args, h0 = _strong_decay()
    ref_y, ref_h = naive(**args, initial_state=h0)
    y, h = chunked(**args, chunk_size=32, initial_state=h0)
    assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(h)).all()
    close(y, ref_y, 1e-6)  # differences of cumulative sums gave 1.1e-5
    close(h, ref_h, 1e-6)
    seg = np.zeros((B_, 70), np.int32)
    ref = jax.tree_util.tree_leaves(grads(args, h0, seg, mode="naive"))
    for g, r in zip(jax.tree_util.tree_leaves(grads(args, h0, seg, mode="chunked")), ref):
        assert np.isfinite(np.asarray(g)).all()
        close(g, r, 1e-5)


def test_reference_grads_numerically():
    """The naive mode against central differences (float32 math: eps 1e-2, tolerance 1e-3)."""
    args, h0 = make(8, length=7)
    args = {k: jnp.asarray(v[:1] if k not in ("A", "D") else v) for k, v in args.items()}
    args["dt"] = 0.3 * args["dt"] + 0.05  # keep dt - eps positive
    seg = jnp.asarray([[0, 0, 0, 1, 1, 1, 1]])

    def f(x, dt, A, B, C, D, h0):
        return ssd(x, dt, A, B, C, D=D, initial_state=h0, segment_ids=seg, mode="naive")

    keys = ("x", "dt", "A", "B", "C", "D")
    check_grads(jax.jit(f), tuple(args[k] for k in keys) + (jnp.asarray(h0[:1]),), order=1,
                modes=["rev"], eps=1e-2, atol=1e-3, rtol=1e-3)


def test_chunked_grads_match_naive():
    """Every gradient, with an initial state and resets inside and at the edge of chunks."""
    args, h0 = make(9)
    ref = jax.tree_util.tree_leaves(grads(args, h0, SEG, mode="naive"))
    for g, r in zip(jax.tree_util.tree_leaves(grads(args, h0, SEG, mode="chunked")), ref):
        close(g, r, 1e-5)


def test_bfloat16_inputs():
    """bf16 in and out, float32 math: the error must be that of the float64 loop fed the
    same rounded inputs and rounded to bf16 (measured here), give or take 5%."""
    args, h0 = make(10, length=20)
    exact, _ = numpy_loop(**args, h0=h0)
    low = {k: jnp.asarray(v, jnp.bfloat16) for k, v in args.items()}
    rounded = {k: np.asarray(v, np.float32) for k, v in low.items()}
    ref16 = np.asarray(jnp.asarray(numpy_loop(**rounded, h0=h0)[0], jnp.bfloat16), np.float32)
    ref_err = np.abs(ref16 - exact).max()
    for f in (naive, functools.partial(chunked, chunk_size=8)):
        y, h = f(**low, initial_state=h0)
        assert y.dtype == jnp.bfloat16 and h.dtype == jnp.float32
        err = np.abs(np.asarray(y, np.float32) - exact).max()
        assert err <= 1.05 * ref_err, (err, ref_err)


def test_x64_keeps_the_input_dtype():
    args, h0 = make(11, length=9)
    seg = SEG[:, :9]

    @jax.jit
    def both_modes(args, h0):
        return [ssd(**args, chunk_size=4, initial_state=h0, segment_ids=seg, mode=m, return_state=True)
                for m in ("naive", "chunked")]

    ref_y, _ = numpy_loop(**args, h0=h0, segment_ids=seg)
    with jax.enable_x64(True):
        for dtype in (np.float32, np.float64):
            for y, h in both_modes({k: v.astype(dtype) for k, v in args.items()}, h0.astype(dtype)):
                assert y.dtype == dtype and h.dtype == np.float32
                close(y, ref_y)


def test_pallas_refuses_segment_ids():
    why = ssd_module._pallas_why_not(x=None, segment_ids=np.zeros((1, 4), np.int32))
    assert why is not None and "segment_ids" in why


def test_bad_inputs():
    args, h0 = make()
    with pytest.raises(ValueError, match="chunk_size"):
        ssd(**args, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        ssd(**args, chunk_size=2.5)
    with pytest.raises(ValueError, match="dt must be"):
        ssd(**{**args, "dt": args["dt"][..., :2]}, chunk_size=8)
    with pytest.raises(ValueError, match="A must be"):
        ssd(**{**args, "A": np.ones((H, N))}, chunk_size=8)
    with pytest.raises(ValueError, match="divide"):
        ssd(**{**args, "B": args["B"][:, :, :1].repeat(3, 2), "C": args["C"][:, :, :1].repeat(3, 2)}, chunk_size=8)
    with pytest.raises(ValueError, match="same shape"):
        ssd(**{**args, "C": args["C"][..., :2]}, chunk_size=8)
    with pytest.raises(ValueError, match="initial_state"):
        ssd(**args, chunk_size=8, initial_state=h0[..., :2])
    with pytest.raises(ValueError, match="state must be"):
        ssd_step(args["x"][:, 0], args["dt"][:, 0], args["A"], args["B"][:, 0], args["C"][:, 0], h0[:1])
    with pytest.raises(ValueError, match="x must be a float"):
        ssd(**{**args, "x": args["x"].astype(np.int32)})
    with pytest.raises(ValueError, match="B must be a float"):
        ssd(**{**args, "B": args["B"].astype(np.int32)})
    with pytest.raises(ValueError, match="batch, length >= 1"):
        ssd(**{k: v[:, :0] if k not in ("A", "D") else v for k, v in args.items()})
    with pytest.raises(ValueError, match="batch, length >= 1"):
        ssd(**{k: v[:0] if k not in ("A", "D") else v for k, v in args.items()})
    with pytest.raises(ValueError, match=r"segment_ids must be an int array \[batch, length\]"):
        ssd(**args, segment_ids=SEG[:1])
    with pytest.raises(ValueError, match="mode"):
        ssd(**args, mode="quadratic")
    # None (the default chunk size), a numpy int and a list of ids are fine.
    close(ssd(**args, chunk_size=None, segment_ids=SEG.tolist()),
          ssd(**args, chunk_size=np.int64(64), segment_ids=SEG))
