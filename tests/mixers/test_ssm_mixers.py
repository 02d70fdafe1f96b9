"""S4, S4D, S5 and H3 mixers: decode == parallel, causality, bidirectional reach,
packed sequences, argument errors, bf16, configs, parameter names (state in/out of the
parallel form: tests/mixers/test_state_continuation.py).

Each model is compiled a few times at most (CPU compile time dominates): one
jitted forward pass (reach is checked by perturbing inputs, which needs no
gradient compile) and one jitted scan over ``step`` for decoding.
"""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.mixers import available, get
from sequax.mixers.decoding import decode as decode_steps
from sequax.mixers.s5 import SSM_PARAM_NAMES

B, D, L = 2, 4, 64
T0 = 20  # inputs after T0 are perturbed by the reach checks
KEY = jax.random.PRNGKey(0)
X = np.random.default_rng(0).standard_normal((B, L, D)).astype(np.float32)
X_FUTURE = X.copy()  # X with every input after T0 changed
X_FUTURE[:, T0 + 1 :] = np.random.default_rng(1).standard_normal((B, L - T0 - 1, D))

CAUSAL = {
    "s4d": dict(d_state=8),
    "s4": dict(d_state=8, l_max=L),
    "s5": dict(state_size=8, blocks=2),
    "h3": dict(d_state=8, num_heads=2),
}


def close(x, ref, tol=1e-4):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=tol, atol=tol * np.abs(ref).max())


class Built:
    """A mixer, its variables and a jitted ``run(x, segment_ids=None) -> y``.

    ``variables`` defaults to a fresh init; bidirectional models reuse the
    causal model's (initialising is a costly compile) with a second ``C``.
    """

    def __init__(self, name, variables=None, **kwargs):
        self.module = module = get(name)(d_model=D, **{**CAUSAL[name], **kwargs})
        if variables is None:
            variables = jax.jit(module.init)(KEY, X[:, :8])
        self.variables = variables

        run = jax.jit(lambda v, x, segment_ids: module.apply(v, x, segment_ids=segment_ids))
        self.run = lambda x, segment_ids=None: run(self.variables, x, segment_ids)

    def decode(self, x):
        return jax.jit(functools.partial(decode_steps, self.module))(self.variables, x)


@functools.lru_cache(maxsize=None)
def causal(name):
    return Built(name)


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_decode_equals_parallel_and_causal(name):
    built = causal(name)
    y = built.run(X)
    assert y.shape == X.shape and bool(jnp.all(jnp.isfinite(y)))
    close(built.decode(X), y)  # 64 steps of the recurrence == the parallel form
    y_future = built.run(X_FUTURE)
    close(y_future[:, : T0 + 1], y[:, : T0 + 1], 1e-5)  # the past ignores the future
    assert not np.allclose(y_future[:, T0 + 1 :], y[:, T0 + 1 :], atol=1e-3)


@pytest.mark.parametrize("name", ["s4d", "s4", "s5"])
def test_bidirectional_sees_the_future(name):
    params = dict(causal(name).variables["params"])
    C = params["C"]
    params["C"] = jnp.concatenate([C, jnp.flip(C, axis=-2)], axis=0)  # a second, different C
    built = Built(name, variables={"params": params}, causal=False)
    assert jax.tree.map(jnp.shape, built.variables) == jax.tree.map(
        jnp.shape, jax.eval_shape(built.module.init, KEY, X[:, :8])
    )
    y, y_future = built.run(X), built.run(X_FUTURE)
    assert y.shape == X.shape
    change = np.abs(np.asarray(y_future - y))[:, :T0]
    assert change.min(axis=1).max() > 0 and change.max() > 1e-2 * np.abs(np.asarray(y)).max()
    with pytest.raises(ValueError, match="causal"):
        built.module.apply(built.variables, X[:, 0], None, method="step")
    with pytest.raises(ValueError, match="causal"):  # no state in/out either
        built.module.apply(built.variables, X, return_state=True)


def test_s5_honours_segment_ids():
    built = causal("s5")
    seg = jnp.asarray(np.repeat([[0] * (T0 + 1) + [1] * (L - T0 - 1)], B, 0))
    y = built.run(X, seg)
    assert np.array_equal(built.run(X_FUTURE, seg)[:, : T0 + 1], y[:, : T0 + 1])
    x_past = X_FUTURE.copy()  # change segment 0 only
    x_past[:, : T0 + 1] = 2.0
    x_past[:, T0 + 1 :] = X[:, T0 + 1 :]
    y_past = built.run(x_past, seg)
    close(y_past[:, T0 + 1 :], y[:, T0 + 1 :], 1e-6)  # segment 1 restarts from zero state
    assert not np.allclose(y_past[:, : T0 + 1], y[:, : T0 + 1], atol=1e-3)
    # without segment ids the second part does see the first
    assert not np.allclose(built.run(x_past)[:, T0 + 1 :], built.run(X)[:, T0 + 1 :], atol=1e-3)


@pytest.mark.parametrize("name", ["s4d", "s4", "h3"])
def test_convolutions_refuse_segment_ids(name):
    built = causal(name)
    with pytest.raises(NotImplementedError, match="segment_ids"):
        built.module.apply(built.variables, X, segment_ids=jnp.zeros((B, L), jnp.int32))


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("s4d", dict(d_state=7), "d_state must be an even int"),
        ("s4d", dict(ssm_init="hippo"), "ssm_init must be one of"),
        ("s4", dict(l_max=0), "l_max must be"),
        ("s5", dict(state_size=12, blocks=4), r"state_size \(12\) / blocks \(4\)"),
        ("s5", dict(discretization="euler"), "discretization must be one of"),
        ("h3", dict(causal=False), "h3 is causal only"),
        ("h3", dict(num_heads=3), r"num_heads \(3\) must divide d_model"),
    ],
)
def test_bad_options(name, kwargs, match):
    module = get(name)(d_model=D, **{**CAUSAL[name], **kwargs})
    with pytest.raises(ValueError, match=match):
        module.init(KEY, X[:, :8])


def test_s4_input_longer_than_l_max():
    module = get("s4")(d_model=D, d_state=8, l_max=L // 2)  # same parameter shapes
    with pytest.raises(ValueError, match="l_max"):
        module.apply(causal("s4").variables, X)


def test_bfloat16_compute():
    """s4d with dtype=bfloat16 (params float32) against float32: the convolution's error is
    that of the reference recurrence (decoding) run in bf16 too, measured here, within 25%."""
    module = get("s4d")(d_model=D, d_state=8, dtype=jnp.bfloat16)
    variables = causal("s4d").variables
    x16 = X.astype(jnp.bfloat16)
    y16 = jax.jit(module.apply)(variables, x16)
    assert y16.dtype == jnp.bfloat16
    decoded16 = jax.jit(functools.partial(decode_steps, module))(variables, x16)
    y32 = np.asarray(causal("s4d").run(X))
    err = lambda y: np.abs(np.asarray(y, np.float32) - y32).max() / np.abs(y32).max()  # noqa: E731
    assert err(y16) <= 1.25 * err(decoded16), (err(y16), err(decoded16))
    leaves = jax.tree.leaves(variables)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)


def test_ssm_parameter_names():
    """Every mixer here has SSM parameters the optimizer can find by leaf name."""
    shapes = {name: causal(name).variables["params"] for name in CAUSAL}
    for name, params in shapes.items():
        ssm = {k for k in params if k in SSM_PARAM_NAMES}
        assert {"Lambda_re", "Lambda_im", "log_dt"} <= ssm, name
    assert {"P", "B"} <= set(shapes["s4"]) and "B" in shapes["s5"]


@pytest.mark.parametrize("name", sorted(CAUSAL))
def test_config_names_a_registered_mixer_with_known_options(name):
    config = importlib.import_module(f"configs.mixers.{name}").get_config()
    assert config.model.mixer == name and name in available()
    fields = set(get(name).__dataclass_fields__)
    assert set(config.model.mixer_kwargs) <= fields
