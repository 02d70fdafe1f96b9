"""selective_scan: modes against a numpy loop, groups, state carrying, decode, memory, grads."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops.ssm import selective_scan, selective_scan_step

MODES = ("sequential", "associative", "chunked")
B_, L, D_, N, G = 2, 37, 8, 4, 2  # 37 is not a multiple of the chunk size 8
CHUNK = 8


def reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False, h0=None,
              segment_ids=None):
    """Float64 loops over batch, time, channel and state; independent of the library."""
    u, delta, A, B, C = (np.asarray(v, np.float64) for v in (u, delta, A, B, C))
    batch, length, channels = u.shape
    if B.ndim == 3:
        B, C = B[:, :, None], C[:, :, None]
    per_group = channels // B.shape[2]
    y = np.zeros((batch, length, channels))
    final = np.zeros((batch, channels, A.shape[1]))
    for b in range(batch):
        h = np.zeros((channels, A.shape[1])) if h0 is None else np.array(h0[b], np.float64)
        for t in range(length):
            if segment_ids is not None and t > 0 and segment_ids[b, t] != segment_ids[b, t - 1]:
                h[:] = 0.0
            for d in range(channels):
                dt = delta[b, t, d] + (0.0 if delta_bias is None else delta_bias[d])
                if softplus:
                    dt = np.log1p(np.exp(dt))
                grp = d // per_group
                h[d] = np.exp(dt * A[d]) * h[d] + dt * B[b, t, grp] * u[b, t, d]
                out = h[d] @ C[b, t, grp]
                if D is not None:
                    out += D[d] * u[b, t, d]
                if z is not None:
                    zz = z[b, t, d]
                    out *= zz / (1.0 + np.exp(-zz))
                y[b, t, d] = out
        final[b] = h
    return y, final


def close(x, ref, rtol=1e-5):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def make(seed=0, grouped=True, length=L, channels=D_):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    bc = (B_, length, G, N) if grouped else (B_, length, N)
    return dict(
        u=f(B_, length, channels), delta=f(B_, length, channels) - 1.0,
        A=-np.tile(np.arange(1, N + 1, dtype=np.float32), (channels, 1)) * rng.uniform(0.5, 1.5, (channels, 1)).astype(np.float32),
        B=f(*bc), C=f(*bc), D=f(channels), z=f(B_, length, channels), delta_bias=0.5 * f(channels),
    )


@functools.partial(jax.jit, static_argnames=("mode",))
def run(args, h0=None, seg=None, *, mode):
    return selective_scan(
        **args, delta_softplus=True, initial_state=h0, segment_ids=seg, return_state=True,
        mode=mode, chunk_size=CHUNK,
    )


SEG = np.repeat(np.array([[0, 0, 1, 1, 2, 2, 2, 2], [3, 3, 3, 3, 3, 4, 4, 4]]), 5, axis=1)[:, :L]


@pytest.mark.parametrize("mode", MODES)
def test_plain_scan_shared_bc(mode):
    # No D, z, bias, softplus or initial state; B and C shared by all channels.
    args = make(1, grouped=False)
    args = {k: args[k] for k in ("u", "delta", "A", "B", "C")}
    args["delta"] = np.abs(args["delta"])
    ref_y, ref_h = reference(**args)
    f = jax.jit(functools.partial(selective_scan, mode=mode, chunk_size=CHUNK, return_state=True))
    y, h = f(**args)
    close(y, ref_y)
    close(h, ref_h)


@pytest.mark.parametrize("mode", MODES)
def test_grouped_with_all_options(mode):
    # Grouped B/C, D, z, delta_bias, softplus, an initial state and segment resets.
    args = make(2)
    h0 = np.random.default_rng(3).normal(size=(B_, D_, N)).astype(np.float32)
    y, h = run(args, h0, SEG, mode=mode)
    ref_y, ref_h = reference(**args, softplus=True, h0=h0, segment_ids=SEG)
    close(y, ref_y)
    close(h, ref_h)


@pytest.mark.parametrize("mode", MODES)
def test_split_and_carry_state(mode):
    args = make(3)
    h0 = np.random.default_rng(3).normal(size=(B_, D_, N)).astype(np.float32)
    s = 16  # two halves of the same length share one compilation
    cut = lambda v, lo, hi: v[:, lo:hi] if np.ndim(v) >= 3 else v  # noqa: E731
    y1, h1 = run({k: cut(v, 0, s) for k, v in args.items()}, h0, mode=mode)
    y2, h2 = run({k: cut(v, s, 2 * s) for k, v in args.items()}, h1, mode=mode)
    ref_y, ref_h = reference(**{k: cut(v, 0, 2 * s) for k, v in args.items()}, softplus=True, h0=h0)
    close(jnp.concatenate([y1, y2], axis=1), ref_y)
    close(h2, ref_h)


def test_step_matches_scan():
    args = make(4)
    # Same signature as in test_grouped_with_all_options: no new compilation.
    y, h = run(args, np.zeros((B_, D_, N), np.float32), np.zeros((B_, L), np.int32), mode="chunked")
    state = jnp.zeros((B_, D_, N))
    ys = []
    step = jax.jit(selective_scan_step, static_argnames=("delta_softplus",))
    for t in range(L):
        y_t, state = step(
            args["u"][:, t], args["delta"][:, t], args["A"], args["B"][:, t], args["C"][:, t],
            state, D=args["D"], z_t=args["z"][:, t], delta_bias=args["delta_bias"],
            delta_softplus=True,
        )
        ys.append(y_t)
    close(jnp.stack(ys, axis=1), y)
    close(state, h)


@pytest.mark.parametrize("mode", MODES)
def test_grads(mode):
    args = make(5, length=6, channels=2)
    args = {k: jnp.asarray(v[:1] if np.ndim(v) >= 3 else v) for k, v in args.items()}
    args["B"], args["C"] = args["B"][:, :, :1], args["C"][:, :, :1]  # groups must divide 2

    def f(u, delta, A, B, C, D, z):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias=args["delta_bias"],
                              delta_softplus=True, mode=mode, chunk_size=4)

    keys = ("u", "delta", "A", "B", "C", "D", "z")
    check_grads(jax.jit(f), tuple(args[k] for k in keys), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2)


def test_chunked_mode_memory_is_bounded():
    """At length 8192 the chunked mode's temporaries are far below the associative mode's."""
    length, channels, n = 8192, 64, 16
    seq = jax.ShapeDtypeStruct((1, length, channels), jnp.float32)
    bc = jax.ShapeDtypeStruct((1, length, n), jnp.float32)
    A = jax.ShapeDtypeStruct((channels, n), jnp.float32)
    temp = {}
    for mode in ("associative", "chunked"):
        f = functools.partial(selective_scan, mode=mode)
        try:
            analysis = jax.jit(f).lower(seq, seq, A, bc, bc).compile().memory_analysis()
        except NotImplementedError:
            analysis = None
        if analysis is None:
            pytest.skip("memory_analysis() is not available on this backend")
        temp[mode] = analysis.temp_size_in_bytes
    # The full [1, 8192, 64, 16] float32 state tensor alone is 32 MiB.
    assert temp["chunked"] * 8 <= temp["associative"], temp
    assert temp["chunked"] < 4 * length * channels * n, temp


def test_long_sequence_finite():
    length = 65536
    rng = np.random.default_rng(6)
    u = jnp.asarray(rng.normal(size=(1, length, 2)).astype(np.float32))
    bc = jnp.asarray(rng.normal(size=(1, length, 4)).astype(np.float32))
    A = -jnp.tile(jnp.arange(1.0, 5.0), (2, 1))
    y = jax.jit(lambda u, b: selective_scan(u, u, A, b, b, delta_softplus=True, mode="chunked"))(u, bc)
    assert y.shape == (1, length, 2) and bool(jnp.isfinite(y).all())


def test_bfloat16_inputs():
    args = make(7)
    ref_y, _ = reference(**args, softplus=True)
    low = {k: jnp.asarray(v, jnp.bfloat16) for k, v in args.items()}
    y, h = run(low, mode="chunked")
    assert y.dtype == jnp.bfloat16 and h.dtype == jnp.float32
    # Inputs rounded to bf16 (2^-9 relative) and the output too; the scan runs in float32.
    err = np.abs(np.asarray(y, np.float32) - ref_y).max() / np.abs(ref_y).max()
    assert err < 2e-2, err


def test_bad_inputs():
    a = make()
    with pytest.raises(ValueError, match="mode"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], mode="fast")
    with pytest.raises(ValueError, match="delta"):
        selective_scan(a["u"], a["delta"][:, :3], a["A"], a["B"], a["C"])
    with pytest.raises(ValueError, match="A must be"):
        selective_scan(a["u"], a["delta"], a["A"][:3], a["B"], a["C"])
    with pytest.raises(ValueError, match="groups"):
        selective_scan(a["u"], a["delta"], a["A"], np.zeros((B_, L, 3, N)), a["C"])
    with pytest.raises(ValueError, match="state size"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"][..., :2], a["C"])
    with pytest.raises(ValueError, match="D must be"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], D=np.ones(3))
    with pytest.raises(ValueError, match="initial_state"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], initial_state=np.zeros((B_, D_)))
    with pytest.raises(ValueError, match="state must be"):
        selective_scan_step(a["u"][:, 0], a["delta"][:, 0], a["A"], a["B"][:, 0], a["C"][:, 0],
                            np.zeros((B_, D_)))
