"""Tests for sequax.ops.linear_attention.

All ops run together in one jitted function per (mode, chunk size) so the
whole file compiles only a handful of programs.
"""

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from sequax.ops import linear_attention as la

B, T, H, DK, DV, M = 2, 21, 2, 4, 3, 3  # M: Hedgehog map width (features 2 M)
# Row 0: three segments; row 1 reuses id 0 for its third segment.
SEG = np.array([[0] * 5 + [1] * 7 + [2] * 9, [0] * 7 + [1] * 7 + [0] * 7], np.int32)
OPS = ("linear_attention", "hedgehog", "retention", "gla", "delta_rule")
TIMED = ("q", "k", "v", "g", "beta", "k_unit")  # inputs with a time axis
TOL = dict(atol=1e-4, rtol=1e-4)


def _inputs(time, seed=0):
    r = np.random.default_rng(seed)
    normal = lambda *s: r.normal(size=s).astype(np.float32)
    k = normal(B, time, H, DK)
    return dict(
        q=normal(B, time, H, DK),
        k=k,
        v=normal(B, time, H, DV),
        g=-r.uniform(0.0, 1.0, (B, time, H, DK)).astype(np.float32),
        beta=r.uniform(0.0, 1.0, (B, time, H)).astype(np.float32),
        k_unit=k / np.linalg.norm(k, axis=-1, keepdims=True),
        log_decay=np.array([-0.1, -0.5], np.float32),
        hh_w=0.5 * normal(H, DK, M),
        hh_b=0.1 * normal(H, M),
    )


def _states(seed=1):
    r = np.random.default_rng(seed)
    s = lambda dk: r.normal(size=(B, H, dk, DV)).astype(np.float32)
    z = lambda dk: r.uniform(0.5, 1.5, (B, H, dk)).astype(np.float32)
    return dict(
        linear_attention=s(DK),
        hedgehog=(s(2 * M), z(2 * M)),
        retention=s(DK),
        gla=s(DK),
        delta_rule=s(DK),
    )


def _hedgehog_map(x):
    return lambda y: la.hedgehog_feature_map(y, x["hh_w"], x["hh_b"])


def _call(name, x, **kw):
    q, k, v = x["q"], x["k"], x["v"]
    if name == "linear_attention":
        return la.linear_attention(q, k, v, **kw)
    if name == "hedgehog":
        return la.linear_attention(q, k, v, feature_map=_hedgehog_map(x), normalize=True, **kw)
    if name == "retention":
        return la.retention(q, k, v, x["log_decay"], **kw)
    if name == "gla":
        return la.gla(q, k, v, x["g"], **kw)
    return la.delta_rule(q, x["k_unit"], v, x["beta"], **kw)


@functools.partial(jax.jit, static_argnames=("mode", "chunk_size"))
def run_all(x, states, seg, mode, chunk_size=8):
    """``{op: (o, final_state)}`` for every op."""
    return {
        n: _call(n, x, initial_state=None if states is None else states[n], segment_ids=seg,
                 return_state=True, mode=mode, chunk_size=chunk_size)
        for n in OPS
    }


@functools.lru_cache(maxsize=None)
def reference():
    """Naive mode on the standard inputs, with initial states and segment resets."""
    return jax.device_get(run_all(_inputs(T), _states(), SEG, mode="naive"))


def _assert_close(got, want, what, **tol):
    got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got) == len(want), what
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), err_msg=what, **(tol or TOL))


# --------------------------------------------------------------------------- explicit formulas


def _np_runs(seg):
    return np.concatenate([np.zeros((seg.shape[0], 1), int), np.cumsum(seg[:, 1:] != seg[:, :-1], 1)], 1)


def _np_gated(q, k, v, decay, s0, seg, z0=None, eps=1e-5):
    """o_t = scale sum_{s<=t, same segment} (q_t * prod_{r=s+1..t} decay_r) . k_s v_s, plus the
    initial state's term for the first segment; divided by the same sum with v = 1 (plus z0)
    when z0 is given (normalised linear attention). Also returns the final state."""
    q, k, v, decay, s0 = (np.asarray(a, np.float64) for a in (q, k, v, decay, s0))
    bsz, time, heads, dk = q.shape
    scale, runs = dk**-0.5, _np_runs(seg)
    o = np.zeros(v.shape)
    s_fin = np.zeros(s0.shape)
    z_fin = None if z0 is None else np.zeros(np.shape(z0))
    for b in range(bsz):
        for h in range(heads):
            for t in range(time + 1):  # t == time: the final state
                t_ = min(t, time - 1)
                num, zsum, state = np.zeros(v.shape[-1]), np.zeros(dk), 0.0
                for s in range(t_ + 1):
                    if runs[b, s] == runs[b, t_]:
                        w = np.prod(decay[b, s + 1 : t_ + 1, h], axis=0)
                        num += (q[b, t_, h] * w) @ k[b, s, h] * v[b, s, h]
                        zsum += w * k[b, s, h]
                        state = state + np.outer(w * k[b, s, h], v[b, s, h])
                if runs[b, t_] == 0:
                    w = np.prod(decay[b, : t_ + 1, h], axis=0)
                    num += (q[b, t_, h] * w) @ s0[b, h]
                    state = state + w[:, None] * s0[b, h]
                    if z0 is not None:
                        zsum += z0[b, h]
                if t == time:
                    s_fin[b, h] = state
                    if z0 is not None:
                        z_fin[b, h] = zsum
                elif z0 is None:
                    o[b, t, h] = scale * num
                else:
                    o[b, t, h] = scale * num / (scale * q[b, t, h] @ zsum + eps)
    return o, (s_fin if z0 is None else (s_fin, z_fin))


def _np_delta(q, k, v, beta, s0, seg):
    """S_t = (I - beta k_t k_t^T) S_{t-1} + beta k_t v_t^T (zeroed at resets), o_t = scale q_t S_t."""
    q, k, v, beta, s0 = (np.asarray(a, np.float64) for a in (q, k, v, beta, s0))
    bsz, time, heads, dk = q.shape
    runs, o, s_fin = _np_runs(seg), np.zeros(v.shape), np.zeros(s0.shape)
    for b in range(bsz):
        for h in range(heads):
            s = s0[b, h]
            for t in range(time):
                if t and runs[b, t] != runs[b, t - 1]:
                    s = np.zeros_like(s)
                kk = k[b, t, h]
                s = (np.eye(dk) - beta[b, t, h] * np.outer(kk, kk)) @ s + beta[b, t, h] * np.outer(kk, v[b, t, h])
                o[b, t, h] = dk**-0.5 * q[b, t, h] @ s
            s_fin[b, h] = s
    return o, s_fin


def _np_hedgehog(x, w, bias):
    z = np.einsum("bthd,hdm->bthm", np.asarray(x, np.float64), w) + bias
    soft = lambda a: np.exp(a - a.max(-1, keepdims=True)) / np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)
    return np.concatenate([soft(z), soft(-z)], -1)


def _np_all(x, states, seg):
    """The explicit formulas for every op (float64 numpy)."""
    q, k, v = x["q"], x["k"], x["v"]
    ones = np.ones(q.shape)
    hq, hk = (_np_hedgehog(x[n], x["hh_w"], x["hh_b"]) for n in ("q", "k"))
    decay_ret = np.broadcast_to(np.exp(x["log_decay"])[:, None], q.shape)
    return dict(
        linear_attention=_np_gated(q, k, v, ones, states["linear_attention"], seg),
        hedgehog=_np_gated(hq, hk, v, np.ones(hq.shape), states["hedgehog"][0], seg, z0=states["hedgehog"][1]),
        retention=_np_gated(q, k, v, decay_ret, states["retention"], seg),
        gla=_np_gated(q, k, v, np.exp(x["g"]), states["gla"], seg),
        delta_rule=_np_delta(q, x["k_unit"], v, x["beta"], states["delta_rule"], seg),
    )


def test_naive_matches_explicit_formulas():
    want = _np_all(_inputs(T), _states(), SEG)
    for name in OPS:
        _assert_close(reference()[name], want[name], f"{name}: naive vs explicit formula")


# --------------------------------------------------------------------------- modes agree


@pytest.mark.parametrize("mode,chunk_size", [("recurrent", 1), ("chunked", 4), ("chunked", 8), ("chunked", 16)])
def test_modes_match_naive_with_state_and_resets(mode, chunk_size):
    # T = 21 is not a multiple of any chunk size; SEG resets inside and across chunks.
    got = run_all(_inputs(T), _states(), SEG, mode=mode, chunk_size=chunk_size)
    for name in OPS:
        _assert_close(got[name], reference()[name], f"{name}: {mode} (chunk {chunk_size}) vs naive")


def test_gla_chunked_is_stable_for_strongly_negative_gates():
    # Cumulative log gates reach about -700 in a 64-token chunk: exp(-b) would overflow.
    r = np.random.default_rng(3)
    q, k = r.normal(size=(2, 1, 50, 1, 8)).astype(np.float32)
    v = r.normal(size=(1, 50, 1, 4)).astype(np.float32)
    g = -r.uniform(0.0, 30.0, (1, 50, 1, 8)).astype(np.float32)
    f = jax.jit(la.gla, static_argnames=("mode", "chunk_size"))
    want, got = f(q, k, v, g, mode="naive"), f(q, k, v, g, mode="chunked", chunk_size=64)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(got, want, **TOL)


def test_final_state_continues_a_split_sequence():
    # The first half runs without initial state or segments (the None paths).
    x = _inputs(2 * T, seed=5)
    zero_states = jax.tree_util.tree_map(np.zeros_like, _states())
    full = _np_all(x, zero_states, np.zeros((B, 2 * T), np.int32))
    first_half = {n: (a[:, :T] if n in TIMED else a) for n, a in x.items()}
    second_half = {n: (a[:, T:] if n in TIMED else a) for n, a in x.items()}
    no_reset = np.zeros((B, T), np.int32)  # reuses the compiled program of the main tests
    part1 = run_all(first_half, None, None, mode="chunked", chunk_size=8)
    part2 = run_all(second_half, {n: part1[n][1] for n in OPS}, no_reset, mode="chunked", chunk_size=8)
    for name in OPS:
        _assert_close(part1[name][0], full[name][0][:, :T], f"{name}: first half")
        _assert_close(part2[name][0], full[name][0][:, T:], f"{name}: second half from carried state")
        _assert_close(part2[name][1], full[name][1], f"{name}: final state")


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("mode", ["chunked", "naive"])
def test_segments_are_isolated(mode):
    x, st = _inputs(T), _states()
    kw = dict(mode=mode, chunk_size=8) if mode == "chunked" else dict(mode=mode)
    base = run_all(x, st, SEG, **kw)
    # Perturb row 0's second segment (5..11) and row 1's first segment (0..6).
    y = dict(x)
    for n in TIMED:
        a = np.array(x[n])
        a[0, 5:12] = a[0, 5:12] * -3.0 + 0.5 if n not in ("g", "beta") else a[0, 5:12] * 0.25
        a[1, 0:7] = a[1, 0:7] * -3.0 + 0.5 if n not in ("g", "beta") else a[1, 0:7] * 0.25
        y[n] = a
    y["k_unit"] = y["k_unit"] / np.linalg.norm(y["k_unit"], axis=-1, keepdims=True)
    # Perturb the initial state instead: only the first segments may change.
    st2 = jax.tree_util.tree_map(lambda a: a * 2.0 + 1.0, st)
    out_x, out_s = run_all(y, st, SEG, **kw), run_all(x, st2, SEG, **kw)
    for name in OPS:
        o, o_x, o_s = base[name][0], out_x[name][0], out_s[name][0]
        _assert_close(o_x[0, :5], o[0, :5], f"{name}: row 0 first segment", atol=1e-6, rtol=0)
        _assert_close(o_x[0, 12:], o[0, 12:], f"{name}: row 0 last segment", atol=1e-6, rtol=0)
        _assert_close(o_x[1, 7:], o[1, 7:], f"{name}: row 1 after its first segment", atol=1e-6, rtol=0)
        _assert_close(out_x[name][1], base[name][1], f"{name}: final state", atol=1e-6, rtol=0)
        assert np.abs(o_x[0, 5:12] - o[0, 5:12]).max() > 1e-2, name  # the perturbation did matter
        _assert_close(o_s[0, 5:], o[0, 5:], f"{name}: initial state leaks past a reset", atol=1e-6, rtol=0)
        _assert_close(o_s[1, 7:], o[1, 7:], f"{name}: initial state leaks past a reset", atol=1e-6, rtol=0)
        assert np.abs(o_s[:, :5] - o[:, :5]).max() > 1e-2, name


# Small programs for gradient checks: T = 7 in chunks of 4 (the second one padded),
# a reset inside the first chunk (row 0) and inside the second (row 1).
SMALL_T = 7
SMALL_SEG = np.array([[0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]], np.int32)


@functools.lru_cache(maxsize=None)
def small_run(mode):
    """One jitted function per mode, shared by the causality and gradient tests (one compile)."""
    return jax.jit(lambda x, st: run_all.__wrapped__(x, st, SMALL_SEG, mode=mode, chunk_size=4))


def _small_inputs():
    return {n: (a[:, :SMALL_T] if n in TIMED else a) for n, a in _inputs(SMALL_T, seed=9).items()}, _states()


def test_chunked_is_causal():
    x, st = _small_inputs()
    out, vjp = jax.vjp(small_run("chunked"), x, st)
    zeros = jax.tree_util.tree_map(lambda a: np.zeros(a.shape, a.dtype), out)
    for name in OPS:
        for t in range(SMALL_T):
            o_ct = np.zeros_like(zeros[name][0])
            o_ct[:, t] = 1.0
            grads = vjp(dict(zeros, **{name: (o_ct, zeros[name][1])}))[0]
            for inp in TIMED:
                future = np.asarray(grads[inp])[:, t + 1 :]
                assert (future == 0).all(), f"{name}: output {t} depends on {inp} at a later step"
            assert np.abs(np.asarray(grads["v"])[:, t]).max() > 0, name


def _x64():
    if callable(getattr(jax, "enable_x64", None)):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def test_naive_gradients_match_finite_differences():
    # The reference only, in float64 (x64) so finite differences are tight, w.r.t. every
    # input and initial state; the other modes are compared with it directly below.
    with _x64():
        x, st = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), _small_inputs())
        fn = jax.jit(lambda x, st: run_all.__wrapped__(x, st, SMALL_SEG, mode="naive", chunk_size=4))
        jax.test_util.check_grads(fn, (x, st), order=1, modes=["rev"], atol=1e-6, rtol=1e-6, eps=1e-5)


@functools.lru_cache(maxsize=None)
def small_grad(mode):
    """Gradient of a fixed random projection of every output and final state (one compile per mode)."""
    x, st = _small_inputs()
    shapes = jax.eval_shape(small_run(mode), x, st)
    r = np.random.default_rng(11)
    weights = jax.tree_util.tree_map(lambda a: r.normal(size=a.shape).astype(np.float32), shapes)

    def loss(x, st):
        out = small_run(mode)(x, st)
        return sum(jnp.sum(a * w) for a, w in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(weights)))

    return jax.device_get(jax.jit(jax.grad(loss, argnums=(0, 1)))(x, st))


def test_chunked_gradients_match_naive():
    # Observed agreement: <= 3.3e-7 of each gradient's largest entry (float32). (The
    # recurrent mode's gradients are the naive scan's, through the public step functions.)
    mode = "chunked"
    want, got = small_grad("naive"), small_grad(mode)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want)):
        scale = np.abs(b).max()
        assert scale > 0, jax.tree_util.keystr(path)
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * scale, err_msg=f"{mode} {jax.tree_util.keystr(path)}")


# --------------------------------------------------------------------------- long inputs, bfloat16


LONG_T = 1030  # 17 chunks of 64, the last one padded


@functools.lru_cache(maxsize=None)
def long_run(mode):
    r = np.random.default_rng(21)
    seg = np.sort(r.integers(0, 6, (B, LONG_T)), axis=1).astype(np.int32)  # ~5 segments a row
    seg[:, 64] = seg[:, 63] + 1  # a boundary exactly at a chunk start
    seg[:, 65:] = np.maximum(seg[:, 65:], seg[:, 64:65])
    x = _inputs(LONG_T, seed=22)
    return jax.device_get(run_all(x, _states(), seg, mode=mode, chunk_size=64))


def test_chunked_matches_naive_across_many_chunks():
    want, got = long_run("naive"), long_run("chunked")
    for name in OPS:
        for a, b in zip(jax.tree_util.tree_leaves(got[name]), jax.tree_util.tree_leaves(want[name])):
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * np.abs(b).max(), err_msg=name)


def test_bfloat16_error_is_the_references_own():
    # Inputs in bfloat16 (compute stays float32): the chunked error against the float32
    # reference must be within twice the naive mode's own bfloat16 error.
    x, st = _inputs(T), _states()
    x16 = {n: (a.astype(jnp.bfloat16) if n in ("q", "k", "v") else a) for n, a in x.items()}
    x16["k_unit"] = (x["k_unit"]).astype(jnp.bfloat16)
    truth = reference()
    errors = {}
    for mode in ("naive", "chunked"):
        got = run_all(x16, st, SEG, mode=mode, chunk_size=8)
        for name in OPS:
            o = np.asarray(got[name][0], np.float32)
            assert got[name][0].dtype == jnp.bfloat16, name
            errors[mode, name] = np.abs(o - truth[name][0]).max()
    for name in OPS:
        own = errors["naive", name]
        assert 0 < own < 0.1, (name, own)  # bfloat16 rounding is visible, and small
        assert errors["chunked", name] <= 2 * own, (name, errors["chunked", name], own)


# --------------------------------------------------------------------------- full forgets


def test_full_forget_is_exact_in_every_mode():
    # A -inf log gate zeroes the state: outputs from there on equal a fresh start there.
    # T = 70 with g[:, 5] = -inf (gave 520 of 560 NaN outputs in chunked mode), plus a
    # forget at a chunk's last position (15) and first (32) for chunk 16.
    x = _inputs(70, seed=31)
    g = np.array(x["g"])
    g[:, 5] = -np.inf
    g[:, [15, 32], :, :2] = -np.inf  # per feature (GLA)
    decay = np.array([-np.inf, -0.3], np.float32)  # retention: head 0 keeps only the current token
    ops = jax.jit(lambda q, k, v, g, mode: (la.gla(q, k, v, g, mode=mode, chunk_size=16, return_state=True),
                                            la.retention(q, k, v, decay, mode=mode, chunk_size=16)),
                  static_argnames="mode")
    want = ops(x["q"], x["k"], x["v"], g, mode="naive")
    for mode in ("chunked", "recurrent"):
        got = ops(x["q"], x["k"], x["v"], g, mode=mode)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            assert np.isfinite(np.asarray(a)).all(), mode
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-5 * np.abs(b).max(), err_msg=mode)
    sl = slice(5, None)
    fresh, _ = _np_gated(x["q"][:, sl], x["k"][:, sl], x["v"][:, sl], np.exp(g[:, sl]), np.zeros((B, H, DK, DV)),
                         np.zeros((B, 65), np.int32))
    np.testing.assert_allclose(want[0][0][:, 5:], fresh, rtol=0, atol=2e-5 * np.abs(fresh).max())
    only_current = DK**-0.5 * np.einsum("bthd,bthd->bth", x["q"], x["k"])[..., None] * x["v"]
    np.testing.assert_allclose(np.asarray(want[1])[:, :, 0], only_current[:, :, 0], rtol=1e-5, atol=1e-6)
    # Gradients through the floored gates stay finite.
    grads = jax.jit(jax.grad(lambda g: jnp.sum(la.gla(x["q"], x["k"], x["v"], g, mode="chunked", chunk_size=16))))(g)
    assert np.isfinite(np.asarray(grads)).all()


def test_strongly_negative_retention_decay_stays_accurate():
    # log decay -30 per step (cumulative -1920 over a chunk of 64) against the float64 formula.
    x = _inputs(70, seed=32)
    decay = np.array([-30.0, -1e-3], np.float32)
    got = jax.jit(lambda q, k, v: la.retention(q, k, v, decay, mode="chunked", chunk_size=64))(x["q"], x["k"], x["v"])
    want, _ = _np_gated(x["q"], x["k"], x["v"], np.broadcast_to(np.exp(decay.astype(np.float64))[:, None],
                        x["q"].shape), np.zeros((B, H, DK, DV)), np.zeros((B, 70), np.int32))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


# --------------------------------------------------------------------------- helpers and errors


def test_retnet_log_decays():
    want = np.log(1 - 2.0 ** (-5 - np.arange(4)))
    np.testing.assert_allclose(la.retnet_log_decays(4), want, rtol=1e-6)


def test_named_feature_maps():
    x = np.linspace(-3.0, 3.0, 13, dtype=np.float32)
    np.testing.assert_allclose(la.FEATURE_MAPS["elu"](x), np.where(x > 0, x + 1, np.exp(x)), rtol=1e-6)
    np.testing.assert_allclose(la.FEATURE_MAPS["relu"](x), np.maximum(x, 0))
    np.testing.assert_array_equal(la.FEATURE_MAPS["identity"](x), x)


def test_hedgehog_feature_map():
    x = _inputs(T)
    fmap = jax.jit(la.hedgehog_feature_map)
    phi = np.asarray(fmap(x["q"], x["hh_w"], x["hh_b"]))
    np.testing.assert_allclose(phi, _np_hedgehog(x["q"], x["hh_w"], x["hh_b"]), atol=1e-6)
    assert phi.shape == (B, T, H, 2 * M) and (phi > 0).all()
    np.testing.assert_allclose(phi[..., :M].sum(-1), 1.0, atol=1e-6)
    step_phi = fmap(x["q"][:, 3], x["hh_w"], x["hh_b"])  # [batch, heads, d] works too
    np.testing.assert_allclose(step_phi, phi[:, 3], atol=1e-6)


def test_hedgehog_distillation_loss():
    r = np.random.default_rng(7)
    q, k = r.normal(size=(2, B, 6, H, DK)).astype(np.float32)
    logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(DK)
    mask = np.tril(np.ones((6, 6), bool))
    p = np.exp(np.where(mask, logits, -np.inf))
    p /= p.sum(-1, keepdims=True)
    entropy = -np.where(mask, p * np.log(np.where(mask, p, 1.0)), 0.0).sum(-1).mean()
    # Features that reproduce exp(q.k / sqrt(dk)) exactly: phi(k_j) = e_j, phi(q_i)_j = exp(logit_ij).
    q_exact = np.exp(np.transpose(logits, (0, 2, 1, 3))).astype(np.float32)  # [b, i, h, j]
    k_exact = np.broadcast_to(np.eye(6, dtype=np.float32)[None, :, None, :], (B, 6, H, 6))
    loss_fn = jax.jit(la.hedgehog_distillation_loss, static_argnames="causal")
    exact = loss_fn(q, k, q_exact, k_exact)
    np.testing.assert_allclose(exact, entropy, rtol=1e-5)
    # Any other positive features pay the KL divergence on top of the entropy.
    q_rand, k_rand = r.uniform(0.1, 1.0, (2, B, 6, H, 5)).astype(np.float32)
    loss = float(loss_fn(q, k, q_rand, k_rand))
    a = np.einsum("bihm,bjhm->bhij", q_rand, k_rand) * mask
    a /= a.sum(-1, keepdims=True)
    want = -np.where(mask, p * np.log(np.where(mask, a, 1.0)), 0.0).sum(-1).mean()
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert loss > entropy + 1e-3
    # Non-causal: every key counts.
    full = loss_fn(q, k, q_rand, k_rand, causal=False)
    assert np.isfinite(full) and not np.isclose(full, loss)


def test_bad_inputs_raise_value_errors():
    x = _inputs(8)
    q, k, v, g, beta = x["q"], x["k"], x["v"], x["g"], x["beta"]
    cases = [
        (lambda: la.gla(q[0], k, v, g), "q must be 4-D"),
        (lambda: la.gla(q, k[..., :2], v, g), "k must have q's shape"),
        (lambda: la.gla(q, k, v[:, :3], g), "v must share"),
        (lambda: la.gla(q, k, v, g[..., :1]), "g must have shape"),
        (lambda: la.retention(q, k, v, np.zeros(3)), "log_decay must have shape"),
        (lambda: la.delta_rule(q, k, v, beta[..., None]), "beta must have shape"),
        (lambda: la.gla(q, k, v, g, mode="fast"), "mode must be one of naive, chunked, recurrent"),
        (lambda: la.delta_rule(q, k, v, beta, chunk_size=0), "chunk_size must be a positive int"),
        (lambda: la.retention(q, k, v, np.zeros(H), segment_ids=np.zeros((B, 7), np.int32)), "segment_ids must be"),
        (lambda: la.gla(q, k, v, g, initial_state=np.zeros((B, H, DV, DK))), "initial_state must have shape"),
        (lambda: la.linear_attention(q, k, v, feature_map="cos"), "feature_map must be a callable or one of"),
        (lambda: la.linear_attention(q, k, v, normalize=True, initial_state=np.zeros((B, H, DK, DV))),
         "initial_state must be a pair"),
        (lambda: la.gla_step(q[:, 0], k[:, 0], v[:, 0], g[:, 0], np.zeros((B, H, DK, 5))), "state must have shape"),
        (lambda: la.delta_rule_step(q[:, 0], k[:, 0], v[:, 0], beta, np.zeros((B, H, DK, DV))), "beta_t must"),
        (lambda: la.hedgehog_feature_map(q, np.zeros((H, DK + 1, M))), "weight must have shape"),
        (lambda: la.hedgehog_distillation_loss(q, k, q[:, :3], k[:, :3]), "q_mapped must share"),
        (lambda: la.retnet_log_decays(0), "num_heads must be a positive int"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message):
            fn()
