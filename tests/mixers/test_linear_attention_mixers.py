"""Tests for the linear-attention mixers (sequax/mixers/linear_attention.py) and their configs."""

import functools
import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sequax.mixers as mixers
from sequax.mixers.decoding import decode

NAMES = ("linear_attention", "hedgehog", "retention", "gla", "deltanet")
B, T, D, H = 2, 67, 16, 2  # 67 decode steps; chunks of 16 with a padded tail


def _make(name, **kw):
    return mixers.get(name)(d_model=D, num_heads=H, chunk_size=16, **kw)


_PARAMS = {}


def _init(name):
    """Parameters from ``step`` (small program); ``__call__`` must find the same ones."""
    if name not in _PARAMS:
        module, x_t = _make(name), jnp.zeros((B, D))
        init = jax.jit(lambda key: module.init(key, x_t, module.init_state(B), method="step"))
        _PARAMS[name] = init(jax.random.PRNGKey(0))
    return _PARAMS[name]


_PARALLEL = {}


def _parallel(name, **kw):
    """(module, jitted apply) per mixer configuration, compiled once for the whole file."""
    key = (name, tuple(sorted(kw.items())))
    if key not in _PARALLEL:
        module = _make(name, **kw)
        _PARALLEL[key] = module, jax.jit(lambda p, x, seg: module.apply(p, x, segment_ids=seg))
    return _PARALLEL[key]


def _decode(module):
    return jax.jit(functools.partial(decode, module))


def test_all_registered():
    assert set(NAMES) <= set(mixers.available())


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_parallel_and_segments_are_isolated(name):
    module, parallel = _parallel(name)
    params = _init(name)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
    x = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))

    y = parallel(params, x, jnp.zeros((B, T), jnp.int32))
    assert y.shape == (B, T, D) and np.isfinite(np.asarray(y)).all()
    np.testing.assert_allclose(_decode(module)(params, x), y, atol=1e-4, rtol=1e-4)

    # Pack: row 0 = [a (30 tokens) | b (37)], row 1 = [b | c]: b must come out the same in both.
    n = 30
    seg = np.array([[0] * n + [1] * (T - n), [0] * (T - n) + [1] * n], np.int32)
    x_packed = x.at[1, : T - n].set(x[0, n:])
    y_packed = parallel(params, x_packed, seg)
    np.testing.assert_allclose(y_packed[0, n:], y_packed[1, : T - n], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(y_packed[0, :n], y[0, :n], atol=1e-5, rtol=1e-5)  # a is a prefix of x[0]


def test_bfloat16_compute_keeps_float32_params():
    module, parallel16 = _parallel("gla", dtype=jnp.bfloat16)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((B, 4, D)))
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(shapes))
    params = _init("gla")  # the float32 module's parameters fit the bfloat16 one
    x = jax.random.normal(jax.random.PRNGKey(2), (B, T, D))
    seg = jnp.zeros((B, T), jnp.int32)
    y16 = parallel16(params, x, seg)
    y32 = _parallel("gla")[1](params, x, seg)
    assert y16.dtype == jnp.bfloat16
    # The tolerance is the reference's own bf16 error: the naive mode in bf16 against float32.
    own = np.abs(np.asarray(_parallel("gla", dtype=jnp.bfloat16, mode="naive")[1](params, x, seg), np.float32) - y32)
    assert 0 < own.max() < 0.1, own.max()
    assert np.abs(np.asarray(y16, np.float32) - y32).max() <= 2 * own.max()


def test_hedgehog_sows_distillation_loss():
    module = _make("hedgehog", sow_distillation_loss=True)
    x = jnp.zeros((B, 8, D))
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    assert variables["params"]["q_map_w"].shape == (H, D // H, D // H)
    _, state = jax.eval_shape(lambda v: module.apply(v, x, mutable=["intermediates"]), variables)
    (loss,) = state["intermediates"]["distillation_loss"]
    assert loss.shape == () and loss.dtype == jnp.float32


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(d_model=10, num_heads=4), "num_heads=4 must divide d_model=10"),
        (dict(d_model=16, num_heads=2, causal=False), "causal=False"),
        (dict(d_model=16, num_heads=2, mode="fast"), "mode must be one of"),
    ],
)
@pytest.mark.parametrize("name", NAMES)
def test_bad_fields_raise_value_errors(name, kwargs, message):
    module = mixers.get(name)(**kwargs)
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, kwargs["d_model"])))


@pytest.mark.parametrize(
    "name,kwargs,message",
    [
        ("linear_attention", dict(feature_map="cos"), "feature_map must be one of"),
        ("hedgehog", dict(feature_dim=-1), "feature_dim must be >= 0"),
        ("gla", dict(gate_low_rank_dim=0), "gate_low_rank_dim must be >= 1"),
        ("deltanet", dict(qk_activation="tanh"), "qk_activation must be"),
    ],
)
def test_bad_options_raise_value_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(_make(name, **kwargs).init, jax.random.PRNGKey(0), jnp.zeros((1, 4, D)))


def test_bad_input_shapes_raise_value_errors():
    module = _make("retention")
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, 4, D)))
    with pytest.raises(ValueError, match="x must be"):
        jax.eval_shape(lambda v: module.apply(v, jnp.zeros((1, 4, D + 1))), variables)
    with pytest.raises(ValueError, match="x_t must be"):
        jax.eval_shape(lambda v: module.apply(v, jnp.zeros((1, 1, D)), module.init_state(1), method="step"), variables)
    with pytest.raises(ValueError, match="segment_ids must be an int array"):
        jax.eval_shape(lambda v: module.apply(v, jnp.zeros((1, 4, D)), segment_ids=jnp.zeros((1, 5), jnp.int32)),
                       variables)


@pytest.mark.parametrize("name", NAMES)
def test_config(name):
    config = importlib.import_module(f"configs.mixers.{name}").get_config()
    assert config.model.mixer == name
    module = mixers.get(name)(
        d_model=config.model.d_model, num_heads=config.model.num_heads, causal=config.model.causal,
        dtype=config.model.dtype, **dict(config.model.mixer_kwargs),
    )
    assert isinstance(module, nn.Module)
    x = jnp.zeros((2, 8, config.model.d_model))
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    assert jax.eval_shape(module.apply, variables, x).shape == x.shape
