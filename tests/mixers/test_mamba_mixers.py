"""Mamba and Mamba-2 blocks: decode == parallel, causality, packing, init, bf16, configs.

(State in/out of the parallel form: tests/mixers/test_state_continuation.py.)"""

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.mixers import get
from sequax.mixers.decoding import decode

B, D, L = 2, 8, 64
SMALL = {
    "mamba": dict(d_state=4, chunk_size=16),
    "mamba2": dict(head_dim=4, d_state=4, ngroups=2, chunk_size=16),
}


def _x(length=L, seed=0):
    return np.random.default_rng(seed).standard_normal((B, length, D)).astype(np.float32)


_BUILT = {}


def _build(name):
    """Module, variables and a jitted apply, built once per mixer for the whole file.

    Parameters are created through ``step`` (it touches every parameter and
    compiles much faster than the parallel form).
    """
    if name not in _BUILT:
        module = get(name)(d_model=D, **SMALL[name])
        state = module.init_state(B)
        variables = jax.jit(lambda key: module.init(key, _x()[:, 0], state, method="step"))(
            jax.random.PRNGKey(1)
        )
        _BUILT[name] = module, variables, jax.jit(module.apply)
    return _BUILT[name]


def _decode(module, variables, x):
    """``step`` over every position of ``x`` inside one jitted ``lax.scan``."""
    return jax.jit(functools.partial(decode, module))(variables, x)


def close(x, ref, rtol=1e-5):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=rtol, atol=rtol * np.abs(ref).max())


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_decode_matches_parallel_and_is_causal(name):
    module, variables, apply = _build(name)
    x = _x()
    y = np.asarray(apply(variables, x))
    assert y.shape == x.shape and y.dtype == np.float32
    close(_decode(module, variables, x), y, rtol=1e-4)
    # Causality: changing inputs after t0 leaves outputs up to t0 untouched.
    t0 = 20
    x2 = x.copy()
    x2[:, t0 + 1 :] += _x(seed=1)[:, t0 + 1 :]
    y2 = np.asarray(apply(variables, x2))
    np.testing.assert_allclose(y2[:, : t0 + 1], y[:, : t0 + 1], rtol=0, atol=1e-6)
    assert np.abs(y2[:, t0 + 1] - y[:, t0 + 1]).min() > 0


@pytest.mark.parametrize("mode", ["sequential", "chunked"])
def test_mamba_scan_modes_agree(mode):
    _, variables, apply = _build("mamba")  # associative
    other = get("mamba")(d_model=D, **{**SMALL["mamba"], "mode": mode})
    x = _x()
    close(jax.jit(other.apply)(variables, x), apply(variables, x), rtol=1e-4)


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_packed_segments_equal_separate_sequences(name):
    module, variables, apply = _build(name)
    x = _x()
    # Ids repeat in row 0 (7, 3, 7): segments are runs, not id values.
    seg = np.array([[7] * 24 + [3] * 8 + [7] * 32, [0] * 32 + [1] * 32])
    y = np.asarray(jax.jit(lambda v, x, s: module.apply(v, x, segment_ids=s))(variables, x, seg))
    # By causality, the first 32 outputs of a sequence only see its first 32 inputs,
    # so full-length unpacked runs give each segment's standalone output.
    first = np.asarray(apply(variables, x))
    second = np.asarray(apply(variables, np.roll(x, -32, axis=1)))[:, :32]
    close(y[1, :32], first[1, :32])
    close(y[1, 32:], second[1])
    close(y[0, 32:], second[0])
    close(y[0, :24], first[0, :24])
    assert np.abs(y[0, 24:32] - first[0, 24:32]).max() > 1e-3  # a new segment starts at 24


def test_init_values():
    p = _build("mamba")[1]["params"]
    d_inner, n = 2 * D, 4
    np.testing.assert_allclose(np.exp(p["A_log"]), np.tile(np.arange(1, n + 1), (d_inner, 1)), rtol=1e-6)
    dt = np.log1p(np.exp(np.asarray(p["dt_bias"])))  # softplus(bias) is the initial dt
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 1e-1 * (1 + 1e-4)
    rank = math.ceil(D / 16)
    assert p["dt_proj"]["kernel"].shape == (rank, d_inner)
    assert np.abs(p["dt_proj"]["kernel"]).max() <= rank**-0.5
    assert p["x_proj"]["kernel"].shape == (d_inner, rank + 2 * n)
    assert p["conv_kernel"].shape == (4, d_inner) and p["conv_bias"].shape == (d_inner,)
    np.testing.assert_array_equal(p["D"], np.ones(d_inner))
    p = _build("mamba2")[1]["params"]
    heads = 2 * D // 4
    A = np.exp(np.asarray(p["A_log"]))
    assert A.shape == (heads,) and A.min() >= 1.0 and A.max() <= 16.0
    assert p["in_proj"]["kernel"].shape == (D, 2 * 2 * D + 2 * 2 * 4 + heads)
    assert p["conv_kernel"].shape == (4, 2 * D + 2 * 2 * 4)
    assert p["D"].shape == (heads,) and p["norm"].shape == (2 * D,)


REFERENCE_MODE = {"mamba": "sequential", "mamba2": "naive"}


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_bfloat16_compute(name):
    """bf16 projections and conv, float32 scans: the default mode's error against float32 is
    that of the reference mode run in bf16 too (measured here), within 25%."""
    _, variables, apply = _build(name)
    x = _x()
    y32 = np.asarray(apply(variables, x))
    err = {}
    for mode in (None, REFERENCE_MODE[name]):
        low = get(name)(d_model=D, dtype=jnp.bfloat16, **{**SMALL[name], "mode": mode})
        y16 = jax.jit(low.apply)(variables, jnp.asarray(x, jnp.bfloat16))
        assert y16.dtype == jnp.bfloat16
        err[mode] = np.abs(np.asarray(y16, np.float32) - y32).max() / np.abs(y32).max()
    assert variables["params"]["D"].dtype == jnp.float32
    assert err[None] <= 1.25 * err[REFERENCE_MODE[name]], err


def test_errors():
    x = _x(16)
    module, variables, _ = _build("mamba2")
    with pytest.raises(ValueError, match="segment_ids"):
        module.apply(variables, x, segment_ids=np.zeros((B + 1, 16), np.int32))
    for name in ("mamba", "mamba2"):
        with pytest.raises(ValueError, match="causal"):
            get(name)(d_model=D, causal=False).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="mode"):
        get("mamba")(d_model=D, mode="fast").init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="head_dim"):
        get("mamba2")(d_model=D, head_dim=5).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="ngroups"):
        get("mamba2")(d_model=D, head_dim=4, ngroups=3).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="d_model"):
        get("mamba")(d_model=D).init(jax.random.PRNGKey(0), x[..., :4])


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_config(name):
    config = importlib.import_module(f"configs.mixers.{name}").get_config()
    assert config.model.mixer == name
    module = get(name)(d_model=config.model.d_model, causal=config.model.causal,
                       **dict(config.model.mixer_kwargs))
    assert module.d_inner % 16 == 0
