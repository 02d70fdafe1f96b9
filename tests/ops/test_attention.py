"""sequax.ops.attention against an independent per-query numpy loop."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from sequax.ops import attention as attn_lib
from sequax.ops.attention import (
    attention,
    attention_dropout_mask,
    attention_mask,
    block_sparse_layout,
    combine_attention,
)

B, LQ, LK, H, KH, D = 2, 13, 21, 4, 2, 8
RNG = np.random.default_rng(0)
Q = RNG.normal(size=(B, LQ, H, D)).astype(np.float32)
K = RNG.normal(size=(B, LK, KH, D)).astype(np.float32)
V = RNG.normal(size=(B, LK, KH, D)).astype(np.float32)
Q_SEG = RNG.integers(0, 2, (B, LQ))
Q_SEG[:, [2, 7]] = 2  # no key has segment 2: these rows see nothing and must give zeros (lse -inf)
K_SEG = RNG.integers(0, 2, (B, LK))
BIAS = RNG.normal(size=(B, H, LQ, LK)).astype(np.float32)
HEAD_BIAS = RNG.normal(size=(1, H, 1, LK)).astype(np.float32)  # broadcast over batch and queries
LAYOUT = block_sparse_layout(6, local_blocks=1, global_blocks=1, stride=3)  # 6 blocks of 4 cover 21 keys
SLOPES = np.array([0.5, 0.25, 0.125, 0.0625], np.float32)


def bias_fn(q_pos, k_pos):
    """A position-dependent bias (ALiBi-like), [B, H, Q, K]."""
    return -jnp.asarray(SLOPES)[:, None, None] * jnp.abs(q_pos - k_pos)[:, None].astype(jnp.float32)


def naive(q, k, v, *, causal=False, window=None, num_sinks=0, segment_ids=None, bias=None,
          softcap=None, block_mask=None, score="softmax", softplus_train_len=512, keep=None,
          dropout_rate=0.0, positions=None):
    """Per-query loop over explicitly listed visible keys; returns (out, lse)."""
    q, k, v = (np.asarray(x, np.float32) for x in (q, k, v))
    b, lq, h, d = q.shape
    lk, groups = k.shape[1], h // k.shape[2]
    if positions is None:
        q_pos, k_pos = np.arange(lq) + lk - lq, np.arange(lk)
    else:
        q_pos, k_pos = (np.asarray(p) for p in positions)
    if isinstance(window, int):
        window = (window, 0)
    out = np.zeros((b, lq, h, v.shape[-1]), np.float32)
    lse = np.full((b, h, lq), -np.inf, np.float32)
    for bi in range(b):
        for hi in range(h):
            for i in range(lq):
                p = q_pos[i]
                visible = []
                for j in range(lk):
                    s = k_pos[j]
                    ok = s >= 0
                    if causal:
                        ok = ok and s <= p
                    if window is not None:
                        ok = ok and (p - window[0] <= s <= p + window[1] or s < num_sinks)
                    if block_mask is not None:
                        layout, size = block_mask
                        qb, kb = p // size, s // size
                        ok = ok and 0 <= qb < layout.shape[0] and 0 <= kb < layout.shape[1] and layout[qb, kb]
                    if segment_ids is not None:
                        ok = ok and segment_ids[0][bi, i] == segment_ids[1][bi, j]
                    if ok:
                        visible.append(j)
                if not visible:
                    continue
                js = np.array(visible)
                logits = k[bi, js, hi // groups] @ q[bi, i, hi] / math.sqrt(d)
                if bias is not None:
                    logits = logits + (bias(p, k_pos[js], hi) if callable(bias) else bias[bi, hi, i, js])
                if softcap is not None:
                    logits = softcap * np.tanh(logits / softcap)
                if score == "softmax":
                    weights = np.exp(logits - logits.max())
                    lse[bi, hi, i] = logits.max() + np.log(weights.sum())
                else:
                    c = math.log(len(js)) / math.log(softplus_train_len)
                    weights = np.log1p(np.exp(c * logits))
                probs = weights / weights.sum()
                if dropout_rate:
                    probs = probs * keep[bi, hi, i, js] / (1.0 - dropout_rate)
                out[bi, i, hi] = probs @ v[bi, js, hi // groups]
    return out, lse


def naive_bias_fn(p, k_pos, head):
    return -SLOPES[head] * np.abs(p - k_pos)


SEG = (Q_SEG, K_SEG)
# name: (options for attention, options for naive)
CASES = {
    "window_left_right": dict(window=(3, 2)),  # bidirectional
    "lambda_shape": dict(causal=True, window=4, num_sinks=3),  # LM-Infinite: sinks + local window
    "segments_bias_broadcast": dict(segment_ids=SEG, bias=HEAD_BIAS),
    "block_sparse_bias_fn": dict(causal=True, block_mask=(LAYOUT, 4), bias=bias_fn),
    "softplus": dict(causal=True, score="softplus", softplus_train_len=8),
    "softplus_window_segments": dict(window=(4, 1), segment_ids=SEG, score="softplus", softplus_train_len=6),
    "combo": dict(causal=True, window=(5, 0), num_sinks=2, segment_ids=SEG, softcap=2.0, bias=BIAS),
}


def naive_opts(opts):
    opts = dict(opts)
    if opts.get("bias") is bias_fn:
        opts["bias"] = naive_bias_fn
    elif opts.get("bias") is HEAD_BIAS:
        opts["bias"] = np.broadcast_to(HEAD_BIAS, (B, H, LQ, LK))
    return opts


# The pure-JAX path's two algorithms, and auto.
IMPLS = {"dense": dict(backend="xla", mode="dense"), "blockwise": dict(backend="xla", mode="blockwise"),
         "auto": dict(backend="auto")}


@functools.lru_cache(maxsize=None)
def compiled(impl, case, block_size=(4, 8), return_lse=False):
    opts = CASES[case]
    return jax.jit(lambda q, k, v: attention(
        q, k, v, return_lse=return_lse, block_size=block_size, **IMPLS[impl], **opts))


@pytest.mark.parametrize("case", sorted(CASES))
def test_backends_match_naive(case):
    opts = CASES[case]
    want, want_lse = naive(Q, K, V, **naive_opts(opts))
    if "segment_ids" in opts:  # fully masked rows: exactly zero
        assert np.all(want[:, [2, 7]] == 0) and np.all(np.isneginf(want_lse[:, :, [2, 7]]))
    softmax = opts.get("score", "softmax") == "softmax"
    for backend in ("dense", "blockwise"):
        lse_wanted = softmax
        got = compiled(backend, case, return_lse=lse_wanted)(Q, K, V)
        if lse_wanted:
            got, lse = got
            np.testing.assert_allclose(lse, want_lse, atol=1e-5, rtol=1e-5, err_msg=backend)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=backend)
        if "segment_ids" in opts:
            np.testing.assert_array_equal(np.asarray(got)[:, [2, 7]], 0.0)


@pytest.mark.parametrize("block_size", [(5, 3), (16, 32)])
def test_blockwise_block_sizes(block_size):
    want = compiled("dense", "combo")(Q, K, V)
    got, lse = compiled("blockwise", "combo", block_size, True)(Q, K, V)
    np.testing.assert_allclose(got, want, atol=1e-5)
    _, want_lse = naive(Q, K, V, **CASES["combo"])
    np.testing.assert_allclose(lse, want_lse, atol=1e-5, rtol=1e-5)


def test_mqa_and_explicit_positions():
    # One kv head; a ring-buffer-like cache: keys stored out of order, two empty slots.
    k, v = K[:, :, :1], V[:, :, :1]
    k_pos = np.array([16, 17, 18, 19, 20, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, -1, -1])
    q_pos = np.arange(LQ) + 8
    opts = dict(causal=True, window=(6, 0), num_sinks=2, positions=(q_pos, k_pos))
    want, _ = naive(Q, k, v, **opts)
    for backend in ("dense", "blockwise"):
        got = jax.jit(lambda q, k, v: attention(q, k, v, **IMPLS[backend], block_size=(4, 8), **opts))(Q, k, v)
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=backend)


def test_dropout_matches_naive_with_the_same_mask():
    rng, rate = jax.random.PRNGKey(3), 0.25
    keep = np.asarray(jax.jit(attention_dropout_mask, static_argnums=range(1, 6))(rng, rate, B, H, LQ, LK))
    assert 0.6 < keep.mean() < 0.9
    want, _ = naive(Q, K, V, causal=True, keep=keep, dropout_rate=rate)
    for backend in ("dense", "blockwise"):
        fn = jax.jit(lambda q, k, v, rng: attention(
            q, k, v, causal=True, dropout_rate=rate, dropout_rng=rng, **IMPLS[backend], block_size=(4, 8)))
        np.testing.assert_allclose(fn(Q, K, V, rng), want, atol=1e-5, err_msg=backend)
    assert not np.allclose(fn(Q, K, V, jax.random.PRNGKey(4)), want)


def test_combine_attention_over_split_keys():
    split = 9
    q_pos = np.arange(LQ) + LK - LQ

    @jax.jit
    def f(q, k, v):
        full = attention(q, k, v, causal=True, return_lse=True, mode="dense")
        parts = [
            attention(q, k[:, sl], v[:, sl], causal=True, positions=(q_pos, np.arange(LK)[sl]),
                      return_lse=True, mode="dense")
            for sl in (slice(0, split), slice(split, LK))
        ]
        return full, combine_attention(*parts[0], *parts[1])

    (full, full_lse), (out, lse) = f(Q, K, V)
    np.testing.assert_allclose(out, full, atol=1e-5)
    np.testing.assert_allclose(lse, full_lse, atol=1e-5)


@pytest.mark.parametrize("backend", ["dense", "blockwise"])
def test_causality_and_segment_isolation_in_gradients(backend):
    # d out[t] / d (q, k, v)[s] must be exactly zero for s > t or across segments.
    length = 8
    q, k, v = Q[:1, :length, :2], K[:1, :length, :1], V[:1, :length, :1]
    seg = np.array([[0, 0, 0, 1, 1, 1, 1, 2]])

    def f(q, k, v):
        return attention(q, k, v, causal=True, segment_ids=seg, **IMPLS[backend], block_size=3)

    jac = jax.jit(jax.jacrev(f, argnums=(0, 1, 2)))(q, k, v)
    t, s = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    allowed = (s <= t) & (seg[0][:, None] == seg[0][None, :])
    for name, j in zip("qkv", jac):  # [1, L, h, d, 1, L, h', d]
        per_pair = np.abs(np.asarray(j)).sum(axis=(0, 2, 3, 4, 6, 7))
        assert np.all(per_pair[~allowed] == 0.0), name
        if name != "q":  # keys and values reach every allowed earlier output
            assert np.all(per_pair[allowed & (s < t)] > 0.0), name


def _grad_case(mode):
    def f(q, k, v, bias):
        return attention(q, k, v, causal=True, window=(4, 0), num_sinks=1, softcap=3.0, bias=bias,
                         segment_ids=(Q_SEG[:1, :6], K_SEG[:1, :9]), **IMPLS[mode], block_size=(4, 4))

    return f, (Q[:1, :6], K[:1, :9], V[:1, :9], BIAS[:1, :, :6, :9])


def _x64():
    if callable(getattr(jax, "enable_x64", None)):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def test_dense_gradients_match_finite_differences():
    # The reference only, in float64 so finite differences are tight; blockwise is
    # compared with it directly below.
    f, args = _grad_case("dense")
    with _x64():
        check_grads(jax.jit(f), tuple(np.asarray(a, np.float64) for a in args), order=1, modes=["rev"],
                    atol=1e-6, rtol=1e-6, eps=1e-5)


def test_blockwise_gradients_match_dense():
    # Observed agreement ~1e-7 of each gradient's largest entry (float32).
    grads = {}
    for mode in ("dense", "blockwise"):
        f, args = _grad_case(mode)
        w = np.random.default_rng(5).normal(size=(1, 6, H, D)).astype(np.float32)
        grads[mode] = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * w), argnums=(0, 1, 2, 3)))(*args)
    for name, a, b in zip("qkvb", grads["blockwise"], grads["dense"]):
        b = np.asarray(b)
        assert np.abs(b).max() > 0, name
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * np.abs(b).max(), err_msg=name)


LONG = 1030  # crosses 9 query and 9 key blocks of 128, the last ones padded


def _long_inputs():
    r = np.random.default_rng(7)
    q, k, v = (r.normal(size=(1, LONG, 2, 16)).astype(np.float32) for _ in range(3))
    seg = np.sort(r.integers(0, 4, (1, LONG)), axis=1)
    return q, k[:, :, :1], v[:, :, :1], seg


def test_blockwise_matches_dense_at_long_lengths():
    q, k, v, seg = _long_inputs()
    opts = dict(causal=True, window=(300, 0), num_sinks=4, segment_ids=seg, bias=bias_fn_2, return_lse=True)
    fn = jax.jit(lambda q, k, v, mode: attention(q, k, v, mode=mode, block_size=128, **opts), static_argnames="mode")
    (want, want_lse), (got, lse) = fn(q, k, v, mode="dense"), fn(q, k, v, mode="blockwise")
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    np.testing.assert_allclose(lse, want_lse, rtol=1e-6, atol=1e-5)
    # Spot-check rows against the per-query loop (whole, it would take too long).
    rows = [0, 127, 128, 700, LONG - 1]
    ref, ref_lse = naive(q[:, rows], k, v, causal=True, window=(300, 0), num_sinks=4,
                         segment_ids=(seg[:, rows], seg), bias=lambda p, kp, h: naive_bias_fn(p, kp, h) / 8,
                         positions=(np.array(rows), np.arange(LONG)))
    np.testing.assert_allclose(np.asarray(got)[:, rows], ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(lse)[:, :, rows], ref_lse, rtol=1e-5, atol=1e-5)


def bias_fn_2(q_pos, k_pos):
    """``bias_fn`` at 1/8 strength over the two heads of the long case."""
    return -jnp.asarray(SLOPES[:2] / 8)[:, None, None] * jnp.abs(q_pos - k_pos)[:, None].astype(jnp.float32)


def test_bfloat16_error_is_the_references_own():
    # bf16 inputs (math in float32): blockwise must be within twice dense's own bf16 error
    # against the float32 result.
    opts = dict(causal=True, window=(5, 0), num_sinks=2, segment_ids=SEG, softcap=2.0, bias=BIAS)
    truth = np.asarray(compiled("dense", "combo")(Q, K, V))
    q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (Q, K, V))
    errors = {}
    for mode in ("dense", "blockwise"):
        got = jax.jit(lambda q, k, v: attention(q, k, v, **IMPLS[mode], block_size=(4, 8), **opts))(q16, k16, v16)
        assert got.dtype == jnp.bfloat16
        errors[mode] = np.abs(np.asarray(got, np.float32) - truth).max()
    assert 0 < errors["dense"] < 0.05, errors
    assert errors["blockwise"] <= 2 * errors["dense"], errors


def test_blockwise_memory_stays_linear():
    length = 16384
    shape = jax.ShapeDtypeStruct((1, length, 1, 64), jnp.float32)
    fn = jax.jit(lambda q, k, v: attention(q, k, v, causal=True, mode="blockwise", block_size=512))
    temp = fn.lower(shape, shape, shape).compile().memory_analysis().temp_size_in_bytes
    full_matrix = length * length * 4
    assert temp < full_matrix / 16, temp


def test_auto_picks_blockwise_for_long_inputs(monkeypatch):
    calls = []
    real = attn_lib._attention_blockwise
    monkeypatch.setattr(attn_lib, "_attention_blockwise", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    jax.jit(lambda q, k, v: attention(q, k, v, causal=True)).lower(Q, K, V)
    assert not calls
    monkeypatch.setattr(attn_lib, "AUTO_BLOCKWISE_MIN_LOGITS", LQ * LK - 1)
    got = jax.jit(lambda q, k, v: attention(q, k, v, causal=True))(Q, K, V)
    assert calls
    np.testing.assert_allclose(got, naive(Q, K, V, causal=True)[0], atol=1e-5)


def test_auto_falls_back_quietly_and_explicit_backends_refuse():
    want = compiled("dense", "combo")(Q, K, V)
    np.testing.assert_allclose(compiled("auto", "combo")(Q, K, V), want, atol=1e-6)
    q16, k16, v16 = (x.astype(jnp.bfloat16) for x in (Q, K, V))
    for option, match in (
        (dict(softcap=1.5), "softcap"), (dict(return_lse=True), "return_lse"),
        (dict(dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0)), "dropout_rate"),
        (dict(mode="dense"), "mode"), (dict(segment_ids=(Q_SEG, K_SEG)), "segment_ids"),
    ):
        with pytest.raises(ValueError, match=match):
            attention(q16, k16, v16, backend="cudnn", **option)
        # auto serves the same options quietly
        attention(q16, k16, v16, backend="auto", **option)
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match="GPU"):
            attention(q16, k16, v16, backend="cudnn")


def test_block_sparse_layout_and_mask():
    layout = block_sparse_layout(5, local_blocks=2, global_blocks=1, stride=4)
    want = np.array([
        [1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 0, 1, 1, 1],
        [1, 0, 0, 1, 1],
    ], bool)
    np.testing.assert_array_equal(layout, want)
    mask = jax.jit(lambda: attention_mask(6, 6, block_mask=(layout[:3, :3], 2)))()[0, 0]
    np.testing.assert_array_equal(mask, np.kron(layout[:3, :3], np.ones((2, 2), bool)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(q=Q[0]), "4-D"),
        (dict(k=K[:, :, :, :4], v=V[:, :, :, :4]), "head_dim"),
        (dict(v=V[:, :5]), "k and v"),
        (dict(k=K[:, :, :1].repeat(3, 2), v=V[:, :, :1].repeat(3, 2)), "multiple of kv heads"),
        (dict(bias=BIAS[:, :, :3]), "bias"),
        (dict(window=-1), "window"),
        (dict(num_sinks=-1), "num_sinks"),
        (dict(softcap=0.0), "softcap"),
        (dict(backend="flash"), "backend"),
        (dict(mode="flash"), "mode"),
        (dict(score="relu"), "score"),
        (dict(score="softplus", softplus_train_len=1), "softplus_train_len"),
        (dict(score="softplus", return_lse=True), "return_lse"),
        (dict(dropout_rate=0.1), "dropout_rng"),
        (dict(dropout_rate=1.0, dropout_rng=jax.random.PRNGKey(0)), "dropout_rate"),
        (dict(block_mask=(LAYOUT[:2, :2], 4)), "block_mask"),
        (dict(block_mask=LAYOUT), "block_mask"),
        (dict(segment_ids=Q_SEG), "segment_ids"),
        (dict(segment_ids=(Q_SEG, K_SEG[:, :3])), "segment_ids"),
        (dict(positions=(np.arange(LQ), np.arange(3))), "positions"),
        (dict(block_size=0), "block_size"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = dict(q=Q, k=K, v=V)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attention(args.pop("q"), args.pop("k"), args.pop("v"), **args)
