"""SSD (Mamba-2): chunked algorithm vs the recurrence, decode steps, grads."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.ssm import ssd, ssd_step

B_, L, H, P, G, N = 2, 37, 4, 3, 2, 5  # 37 is a multiple of no chunk size tested


def make(seed=0, length=L):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    return dict(
        x=f(B_, length, H, P),
        dt=rng.uniform(0.01, 1.0, (B_, length, H)).astype(np.float32),
        A=-rng.uniform(0.5, 8.0, H).astype(np.float32),  # strong decays: exp(dt A) down to e^-8
        B=f(B_, length, G, N), C=f(B_, length, G, N), D=f(H),
    ), f(B_, H, P, N)


def numpy_loop(x, dt, A, B, C, D, h0):
    """Float64 loops over batch, time and head; independent of the library."""
    y = np.zeros(x.shape)
    h = np.array(h0, np.float64)
    per_group = H // G
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            for k in range(H):
                g = k // per_group
                h[b, k] = np.exp(dt[b, t, k] * A[k]) * h[b, k] + dt[b, t, k] * np.outer(x[b, t, k], B[b, t, g])
                y[b, t, k] = h[b, k] @ C[b, t, g] + D[k] * x[b, t, k]
    return y, h


def close(x, ref, rtol=1e-5):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=rtol, atol=rtol * np.abs(ref).max())


naive = jax.jit(functools.partial(ssd, mode="naive", return_state=True))


def test_naive_matches_numpy_loop():
    args, h0 = make()
    y, h = naive(**args, initial_state=h0)
    ref_y, ref_h = numpy_loop(**args, h0=h0)
    close(y, ref_y)
    close(h, ref_h)


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 64])
def test_chunked_matches_naive(chunk_size):
    args, h0 = make(1)
    ref_y, ref_h = naive(**args, initial_state=h0)
    f = jax.jit(functools.partial(ssd, chunk_size=chunk_size, return_state=True))
    y, h = f(**args, initial_state=h0)
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


def test_grads():
    args, h0 = make(4, length=7)
    small = {k: jnp.asarray(v[:1]) for k, v in args.items() if k not in ("A", "D")}
    keys = ("x", "dt", "B", "C")

    def f(x, dt, B, C, A, D, h0):
        return ssd(x, dt, A, B, C, chunk_size=4, D=D, initial_state=h0)

    check_grads(jax.jit(f), tuple(small[k] for k in keys) + (args["A"], args["D"], h0[:1]),
                order=1, modes=["rev"], atol=2e-2, rtol=2e-2)


def test_bad_inputs():
    args, h0 = make()
    with pytest.raises(ValueError, match="chunk_size"):
        ssd(**args, chunk_size=0)
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
