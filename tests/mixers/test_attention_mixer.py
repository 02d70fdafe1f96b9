"""The attention mixer: parallel form vs a naive loop, KV-cache decoding vs parallel."""

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from sequax import mixers
from sequax.mixers.attention import Attention
from sequax.ops import positional
from sequax.ops.attention import block_sparse_layout, normalize_window

B, L, D_MODEL, HEADS = 2, 64, 16, 4
X = np.random.default_rng(0).normal(size=(B, L, D_MODEL)).astype(np.float32)
KEY = jax.random.PRNGKey(0)

# Every config decodes >= 64 steps; windowed ones use a ring buffer far smaller than L.
CONFIGS = {
    "rope_full": dict(decode_cache_size=L),
    "rope_window_sinks": dict(window=8, num_sinks=2),
    "rope_lambda_capped": dict(window=(8, 0), num_sinks=2, max_distance=8, mode="blockwise"),
    "rope_capped_no_window": dict(max_distance=10, rope_scaling="ntk", rope_scale_factor=2.0),
    "alibi_full": dict(positional="alibi", decode_cache_size=L),
    "alibi_window_sinks_capped": dict(positional="alibi", window=(6, 0), num_sinks=3, max_distance=12),
    "t5_block_sparse": dict(positional="t5", t5_num_buckets=8, t5_max_distance=16, sparse_block_size=8,
                            sparse_global_blocks=1, sparse_stride=3, decode_cache_size=80),
    "nope_mqa_softplus_softcap": dict(positional="none", num_kv_heads=1, window=5, score="softplus",
                                      softplus_train_len=16, softcap=4.0),
}


def make(**kwargs):
    kwargs.setdefault("num_kv_heads", 2)
    return Attention(d_model=D_MODEL, num_heads=HEADS, causal=True, **kwargs)


def random_variables(mixer, seed=1):
    """Parameters of the right shapes, drawn with numpy (no compile for init)."""
    shapes = jax.eval_shape(mixer.init, KEY, jax.ShapeDtypeStruct((1, 8, D_MODEL), jnp.float32))
    rng = np.random.default_rng(seed)
    # Kernels ~ 1/sqrt(fan-in); the T5 table at unit scale so the learned bias matters.
    return jax.tree.map(lambda s: (rng.normal(size=s.shape) * (1.0 if len(s.shape) == 2 else 0.25)).astype(
        np.float32), shapes)


@functools.lru_cache(maxsize=None)
def setup_mixer(name):
    mixer = make(**CONFIGS[name])
    return mixer, random_variables(mixer)


def np_rope(x, pos, base, inv_freq_scale=1.0):
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d) * inv_freq_scale
    angles = np.asarray(pos, np.float64)[..., None] * inv
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * np.cos(angles) - x2 * np.sin(angles), x2 * np.cos(angles) + x1 * np.sin(angles)], -1)


def naive_mixer(kw, params, x):
    """Per-query loop; a key at distance dist is seen at min(dist, max_distance) by every scheme."""
    proj = {n: np.einsum("bld,dhk->blhk", x, np.asarray(params[n]["kernel"], np.float64))
            for n in ("query", "key", "value")}
    q, k, v = proj["query"], proj["key"], proj["value"]
    heads, hd = q.shape[2:]
    groups = heads // k.shape[2]
    window = normalize_window(kw.get("window"))
    sinks, cap = kw.get("num_sinks", 0), kw.get("max_distance")
    scheme = kw.get("positional", "rope")
    base = 10000.0
    if kw.get("rope_scaling") == "ntk":
        base *= kw["rope_scale_factor"] ** (hd / (hd - 2))
    slopes = 2.0 ** (-8.0 * np.arange(1, heads + 1) / heads)
    if scheme == "t5":  # bucket of each past distance (the bucketing itself is tested by hand)
        t5_buckets = np.asarray(positional.t5_relative_position_bucket(
            -np.arange(x.shape[1]), False, kw["t5_num_buckets"], kw["t5_max_distance"]))
    y = np.zeros_like(q)
    for bi in range(x.shape[0]):
        for i in range(x.shape[1]):
            js = np.arange(i + 1)
            ok = np.ones(i + 1, bool)
            if window is not None:
                ok &= (js >= i - window[0]) | (js < sinks)
            if kw.get("sparse_block_size"):
                size = kw["sparse_block_size"]
                layout = block_sparse_layout(-(-x.shape[1] // size), global_blocks=kw.get("sparse_global_blocks", 0),
                                             stride=kw.get("sparse_stride", 0))
                ok &= layout[i // size, js // size]
            js = js[ok]
            dist = i - js if cap is None else np.minimum(i - js, cap)
            for hi in range(heads):
                qi, kj = q[bi, i, hi], k[bi, js, hi // groups]
                if scheme == "rope":
                    qi, kj = np_rope(qi, i, base), np_rope(kj, i - dist, base)
                logits = kj @ qi / math.sqrt(hd)
                if scheme == "alibi":
                    logits = logits - slopes[hi] * dist
                if scheme == "t5":
                    logits = logits + np.asarray(params["t5_bias"])[t5_buckets[dist], hi]
                if kw.get("softcap"):
                    logits = kw["softcap"] * np.tanh(logits / kw["softcap"])
                if kw.get("score") == "softplus":
                    weights = np.log1p(np.exp(math.log(len(js)) / math.log(kw["softplus_train_len"]) * logits))
                else:
                    weights = np.exp(logits - logits.max())
                y[bi, i, hi] = weights @ v[bi, js, hi // groups] / weights.sum()
    return np.einsum("blhk,hkd->bld", y, np.asarray(params["out"]["kernel"], np.float64))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parallel_matches_naive_and_decode_matches_parallel(name):
    mixer, variables = setup_mixer(name)
    parallel = np.asarray(jax.jit(mixer.apply)(variables, X))
    np.testing.assert_allclose(parallel, naive_mixer(CONFIGS[name], variables["params"], X), atol=1e-5)

    state = mixer.init_state(B)
    step = jax.jit(functools.partial(mixer.apply, method="step"))
    outs = []
    for t in range(L):
        y_t, state = step(variables, X[:, t], state)
        outs.append(y_t)
    np.testing.assert_allclose(np.stack(outs, 1), parallel, atol=1e-5)
    window = normalize_window(CONFIGS[name].get("window"))
    if window is not None:
        assert state["pos"].shape[0] == CONFIGS[name].get("num_sinks", 0) + window[0] + 1 < L


def test_decoding_past_the_cache_is_an_error():
    mixer, variables = setup_mixer("rope_full")  # decode_cache_size = L
    x = np.concatenate([X, X[:, :1]], axis=1)  # one token more than the cache holds
    with pytest.raises(ValueError, match="decode_cache_size=64"):
        jax.jit(functools.partial(mixers.decode, mixer))(variables, x)
    with pytest.raises(ValueError, match="decode_cache_size=64"):
        jax.eval_shape(functools.partial(mixer.apply, return_state=True), variables, x)
    # From a given (traced) cache: NaN past the cache, and a checkify error naming the field.
    step = jax.jit(checkify.checkify(functools.partial(mixer.apply, method="step")))
    _, full = jax.jit(functools.partial(mixer.apply, return_state=True))(variables, X)
    err, (y_t, _) = step(variables, X[:, 0], full)
    assert "decode_cache_size=64" in str(err.get())
    assert np.all(np.isnan(y_t))
    err, (y_t, _) = step(variables, X[:, 0], mixer.init_state(B))
    assert err.get() is None and np.all(np.isfinite(y_t))
    # A ring buffer never fills.
    ring, ring_variables = setup_mixer("rope_window_sinks")
    assert ring.max_decode_length() is None


# Pieces of a packed sequence (one compiled piece size): segment boundaries inside the
# first piece (10) and at the edge of the second (32).
PIECE = 16
SEG = np.array([[0] * 10 + [1] * 22 + [2] * 32, [3] * 64])


@pytest.mark.parametrize("name", ["rope_lambda_capped", "t5_block_sparse", "rope_capped_no_window"])
def test_pieces_with_segments_equal_whole(name):
    # The KV cache continues a packed sequence: a ring buffer with sinks and LM-Infinite far
    # keys, block-sparse T5 over a full cache, far keys without a window; per-slot segment ids
    # keep segments apart across pieces.
    mixer, variables = setup_mixer(name)
    whole, whole_state = jax.jit(lambda x, s: mixer.apply(variables, x, segment_ids=s, return_state=True))(X, SEG)
    piece = jax.jit(lambda x, s, st: mixer.apply(variables, x, segment_ids=s, initial_state=st, return_state=True))
    state, outs = mixer.init_state(B), []
    for start in range(0, L, PIECE):
        y, state = piece(X[:, start:start + PIECE], SEG[:, start:start + PIECE], state)
        outs.append(y)
    np.testing.assert_allclose(np.concatenate(outs, 1), whole, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(whole_state)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Decoding continues the last segment from the prefilled cache.
    y_t, _ = jax.jit(functools.partial(mixer.apply, method="step"))(variables, X[:, 0], state)
    longer = np.concatenate([X, X[:, :1]], 1)
    seg = np.concatenate([SEG, SEG[:, -1:]], 1)
    want = jax.jit(lambda x, s: mixer.apply(variables, x, segment_ids=s))(longer, seg)[:, -1]
    np.testing.assert_allclose(y_t, want, atol=1e-5)


def test_state_needs_a_causal_mixer():
    mixer = Attention(d_model=D_MODEL, num_heads=HEADS, causal=False, decode_cache_size=8)
    variables = random_variables(mixer)
    with pytest.raises(ValueError, match="causal=True"):
        jax.eval_shape(functools.partial(mixer.apply, return_state=True), variables, X[:, :8])


def test_registered_and_parameter_names():
    assert mixers.get("attention") is Attention
    mixer, variables = setup_mixer("t5_block_sparse")
    assert set(variables["params"]) == {"query", "key", "value", "out", "t5_bias"}
    assert variables["params"]["t5_bias"].shape == (8, HEADS)
    assert variables["params"]["key"]["kernel"].shape == (D_MODEL, 2, D_MODEL // HEADS)


def test_segment_isolation():
    mixer, variables = setup_mixer("rope_window_sinks")
    seg = np.repeat(np.array([[0] * 20 + [1] * 44]), B, axis=0)
    changed = X.copy()
    changed[:, 20:] += 1.0
    apply = jax.jit(lambda x: mixer.apply(variables, x, segment_ids=seg))
    a, b = np.asarray(apply(X)), np.asarray(apply(changed))
    np.testing.assert_array_equal(a[:, :20], b[:, :20])
    assert not np.allclose(a[:, 20:], b[:, 20:])


def test_dropout_only_when_not_deterministic():
    mixer = make(dropout_rate=0.5)
    x = X[:, :16]
    variables = random_variables(mixer)
    plain = jax.jit(make().apply)(variables, x)

    @jax.jit
    def run(rng):
        return mixer.apply(variables, x, deterministic=False, rngs={"dropout": rng})

    np.testing.assert_allclose(jax.jit(mixer.apply)(variables, x), plain, atol=1e-6)
    a, b, c = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain) and not np.allclose(a, c)


CONFIG_MODULES = ["attention_window_sinks", "attention_alibi", "attention_t5", "softplus_attention",
                  "attention_gqa", "attention_block_sparse"]


@pytest.mark.parametrize("module", CONFIG_MODULES)
def test_configs_build(module):
    config = importlib.import_module(f"configs.mixers.{module}").get_config()
    assert config.model.mixer == "attention"
    mixer = Attention(d_model=config.model.d_model, num_heads=config.model.num_heads,
                      causal=config.model.causal, **config.model.mixer_kwargs)
    x = jax.ShapeDtypeStruct((2, config.data.task_kwargs.seq_len, config.model.d_model), jnp.float32)
    variables = jax.eval_shape(mixer.init, KEY, x)
    assert jax.eval_shape(mixer.apply, variables, x).shape == x.shape
    state = jax.eval_shape(functools.partial(mixer.init_state, 2))
    x_t = jax.ShapeDtypeStruct((2, config.model.d_model), jnp.float32)
    y_t, _ = jax.eval_shape(functools.partial(mixer.apply, method="step"), variables, x_t, state)
    assert y_t.shape == x_t.shape


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(positional="sinusoidal"), "positional"),
        (dict(num_kv_heads=3), "num_kv_heads"),
        (dict(rope_scaling="yarn"), "rope_scaling"),
        (dict(score="relu"), "score"),
        (dict(dropout_rate=1.5), "dropout_rate"),
        (dict(window=-2), "window"),
        (dict(max_distance=4, window=8), "max_distance"),
        (dict(max_distance=4, score="softplus"), "max_distance"),
        (dict(max_distance=4, causal=False), "causal"),
        (dict(sparse_block_size=-1), "sparse_block_size"),
    ],
)
def test_bad_options_raise(kwargs, match):
    kwargs.setdefault("causal", True)
    mixer = Attention(d_model=D_MODEL, num_heads=HEADS, **kwargs)
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(mixer.init, KEY, jax.ShapeDtypeStruct((1, 8, D_MODEL), jnp.float32))


def test_step_refuses_non_causal():
    mixer = Attention(d_model=D_MODEL, num_heads=HEADS, causal=False, decode_cache_size=8)
    variables = jax.eval_shape(mixer.init, KEY, jax.ShapeDtypeStruct((1, 8, D_MODEL), jnp.float32))
    with pytest.raises(ValueError, match="causal"):
        jax.eval_shape(functools.partial(mixer.apply, method="step"), variables,
                       jax.ShapeDtypeStruct((1, D_MODEL), jnp.float32), mixer.init_state(1))


def test_lambda_capped_rope_gradients_are_finite():
    # Early queries have no far keys (lse -inf in the second pass); the merge must not leak NaN.
    mixer = make(window=(8, 0), num_sinks=2, max_distance=8, mode="dense")
    variables = random_variables(mixer)
    grads = jax.jit(jax.grad(lambda v, x: jnp.sum(mixer.apply(v, x) ** 2), argnums=(0, 1)))(variables, X[:, :24])
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert np.any(np.asarray(grads[1])[:, :2] != 0)  # the sinks get gradient from far queries
