"""selective_scan: modes against a numpy loop, groups, state carrying, decode, length 1 and
1000, memory, grads (the reference checked numerically, the other modes against it, with
segment resets), bf16 and x64."""

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
    """Float64 numpy loop over time (vectorised over batch, channels, states); independent
    of the library."""
    u, delta, A, B, C = (np.asarray(v, np.float64) for v in (u, delta, A, B, C))
    batch, length, channels = u.shape
    if B.ndim == 3:
        B, C = B[:, :, None], C[:, :, None]
    per_group = channels // B.shape[2]
    B, C = np.repeat(B, per_group, axis=2), np.repeat(C, per_group, axis=2)  # [b, l, d, n]
    dt = delta + (0.0 if delta_bias is None else np.asarray(delta_bias, np.float64))
    if softplus:
        dt = np.log1p(np.exp(dt))
    h = np.zeros((batch, channels, A.shape[1])) if h0 is None else np.array(h0, np.float64)
    y = np.zeros((batch, length, channels))
    for t in range(length):
        if segment_ids is not None and t > 0:
            h[np.asarray(segment_ids)[:, t] != np.asarray(segment_ids)[:, t - 1]] = 0.0
        h = np.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * u[:, t])[..., None] * B[:, t]
        y[:, t] = np.sum(h * C[:, t], axis=-1)
    if D is not None:
        y = y + np.asarray(D, np.float64) * u
    if z is not None:
        z = np.asarray(z, np.float64)
        y = y * z / (1.0 + np.exp(-z))
    return y, h


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
@pytest.mark.parametrize("options", ["none", "all"])
def test_matches_reference(mode, options):
    """``none``: no D, z, bias, softplus or initial state, B and C shared by all channels;
    ``all``: grouped B/C, D, z, delta_bias, softplus, an initial state and segment resets."""
    if options == "none":
        args = make(1, grouped=False)
        args = {k: args[k] for k in ("u", "delta", "A", "B", "C")}
        args["delta"] = np.abs(args["delta"])
        y, h = jax.jit(functools.partial(selective_scan, mode=mode, chunk_size=CHUNK, return_state=True))(**args)
        ref = reference(**args)
    else:
        args = make(2)
        h0 = np.random.default_rng(3).normal(size=(B_, D_, N)).astype(np.float32)
        y, h = run(args, h0, SEG, mode=mode)
        ref = reference(**args, softplus=True, h0=h0, segment_ids=SEG)
    close(y, ref[0])
    close(h, ref[1])


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
def test_length_one(mode):
    args = make(8, length=1)
    h0 = np.random.default_rng(9).normal(size=(B_, D_, N)).astype(np.float32)
    y, h = run(args, h0, np.zeros((B_, 1), np.int32), mode=mode)
    ref_y, ref_h = reference(**args, softplus=True, h0=h0)
    close(y, ref_y)
    close(h, ref_h)


def test_length_1000_crosses_many_chunks():
    """Length 1000 in chunks of 64 (16 chunks, a padded tail), with segment resets: every
    mode against the float64 loop."""
    length = 1000
    args = make(10, length=length)
    args["A"] = 0.05 * args["A"]  # long memories: the state crosses many chunks
    seg = np.repeat(np.array([[0, 1, 2, 3], [4, 4, 5, 5]]), 250, axis=1)
    ref_y, ref_h = reference(**args, softplus=True, segment_ids=seg)
    for mode in MODES:
        y, h = jax.jit(functools.partial(selective_scan, delta_softplus=True, segment_ids=seg, mode=mode,
                                         return_state=True))(**args)
        close(y, ref_y, 2e-5)
        close(h, ref_h, 2e-5)


ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@functools.partial(jax.jit, static_argnames=("mode",))
def grads(args, h0, seg, *, mode):
    """Gradients of <y, w> + <h, v> for fixed random cotangents, w.r.t. every input."""
    rng = np.random.default_rng(11)
    w = rng.normal(size=args["u"].shape).astype(np.float32)
    v = rng.normal(size=h0.shape).astype(np.float32)

    def loss(args, h0):
        y, h = selective_scan(**args, delta_softplus=True, initial_state=h0, segment_ids=seg,
                              return_state=True, mode=mode, chunk_size=CHUNK)
        return jnp.sum(y * w) + jnp.sum(h * v)

    return jax.grad(loss, argnums=(0, 1))(args, h0)


def test_reference_grads_numerically():
    """The sequential mode against central differences (float32 math: eps 1e-2, tolerance 1e-3)."""
    args = make(5, length=6, channels=2)
    args = {k: jnp.asarray(v[:1] if np.ndim(v) >= 3 else v) for k, v in args.items()}
    args["B"], args["C"] = args["B"][:, :, :1], args["C"][:, :, :1]  # groups must divide 2
    seg = jnp.asarray([[0, 0, 0, 1, 1, 1]])
    h0 = jnp.asarray(np.random.default_rng(6).normal(size=(1, 2, N)), jnp.float32)

    def f(u, delta, A, B, C, D, z, delta_bias, h0):
        return selective_scan(u, delta, A, B, C, D, z, delta_bias=delta_bias, delta_softplus=True,
                              initial_state=h0, segment_ids=seg, mode="sequential")

    check_grads(jax.jit(f), tuple(args[k] for k in ARG_NAMES) + (h0,), order=1, modes=["rev"],
                eps=1e-2, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("mode", ["associative", "chunked"])
def test_grads_match_the_reference_mode(mode):
    """Every gradient, with an initial state and segment resets, against the sequential mode."""
    args = {k: jnp.asarray(v) for k, v in make(12).items()}
    h0 = jnp.asarray(np.random.default_rng(13).normal(size=(B_, D_, N)), jnp.float32)
    ref = jax.tree_util.tree_leaves(grads(args, h0, SEG, mode="sequential"))
    for g, r in zip(jax.tree_util.tree_leaves(grads(args, h0, SEG, mode=mode)), ref):
        close(g, r, 1e-5)


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
    """bf16 inputs, float32 scan, bf16 output: the error must be that of the float64 reference
    fed the same rounded inputs and rounded to bf16 (measured here), give or take 5%."""
    args = make(7)
    exact, _ = reference(**args, softplus=True)
    low = {k: jnp.asarray(v, jnp.bfloat16) for k, v in args.items()}
    rounded = {k: np.asarray(v, np.float32) for k, v in low.items()}
    ref16 = np.asarray(jnp.asarray(reference(**rounded, softplus=True)[0], jnp.bfloat16), np.float32)
    ref_err = np.abs(ref16 - exact).max()
    for mode in MODES:
        y, h = run(low, mode=mode)
        assert y.dtype == jnp.bfloat16 and h.dtype == jnp.float32
        err = np.abs(np.asarray(y, np.float32) - exact).max()
        assert err <= 1.05 * ref_err, (mode, err, ref_err)


def test_x64_keeps_the_input_dtype():
    args = make(14, length=9)
    seg = SEG[:, :9]

    @jax.jit
    def every_mode(args):
        return [selective_scan(**args, delta_softplus=True, segment_ids=seg, mode=m, chunk_size=4,
                               return_state=True) for m in MODES]

    ref_y, _ = reference(**args, softplus=True, segment_ids=seg)
    with jax.enable_x64(True):
        for dtype in (np.float32, np.float64):
            for y, h in every_mode({k: v.astype(dtype) for k, v in args.items()}):
                assert y.dtype == dtype and h.dtype == np.float32
                close(y, ref_y)


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
    sc = functools.partial(selective_scan, a["u"], a["delta"], a["A"], a["B"], a["C"], delta_softplus=True)
    with pytest.raises(ValueError, match="u must be a float"):
        selective_scan(a["u"].astype(np.int32), a["delta"], a["A"], a["B"], a["C"])
    with pytest.raises(ValueError, match="B must be a float"):
        selective_scan(a["u"], a["delta"], a["A"], a["B"].astype(np.int32), a["C"])
    with pytest.raises(ValueError, match="batch >= 1 and length >= 1"):
        selective_scan(a["u"][:, :0], a["delta"][:, :0], a["A"], a["B"][:, :0], a["C"][:, :0])
    with pytest.raises(ValueError, match="batch >= 1 and length >= 1"):
        selective_scan(a["u"][:0], a["delta"][:0], a["A"], a["B"][:0], a["C"][:0])
    with pytest.raises(ValueError, match=r"segment_ids must be an int array \[batch, length\]"):
        sc(segment_ids=SEG[:1])
    with pytest.raises(ValueError, match="chunk_size"):
        sc(mode="chunked", chunk_size=0)
    with pytest.raises(ValueError, match="u_t must be a float"):
        selective_scan_step(a["u"][:, 0].astype(np.int32), a["delta"][:, 0], a["A"], a["B"][:, 0],
                            a["C"][:, 0], np.zeros((B_, D_, N)))
    # segment_ids as a list is fine
    close(sc(segment_ids=SEG.tolist()), sc(segment_ids=SEG))
