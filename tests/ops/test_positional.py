"""sequax.ops.positional: RoPE (+ scaling), ALiBi, T5 buckets."""

import jax
import numpy as np
import pytest

from sequax.ops import positional

RNG = np.random.default_rng(0)
# Compiled once per shape: cheaper than op-by-op dispatch on a busy CPU.
rope = jax.jit(positional.apply_rope, static_argnames=("base", "scaling", "scale_factor"))
bucket = jax.jit(positional.t5_relative_position_bucket, static_argnums=(1, 2, 3))


def test_rope_scores_depend_only_on_position_difference():
    q = RNG.normal(size=(1, 1, 1, 16)).astype(np.float32)
    k = RNG.normal(size=(1, 1, 1, 16)).astype(np.float32)

    def score(pq, pk):
        qr = rope(q, np.array([pq]))
        kr = rope(k, np.array([pk]))
        return float(np.sum(np.asarray(qr) * np.asarray(kr)))

    for pq, pk in [(5, 2), (7, 7), (3, 9)]:
        for shift in (1, 13, 100):
            assert score(pq, pk) == pytest.approx(score(pq + shift, pk + shift), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-3)
    # A rotation: norms are preserved.
    x = RNG.normal(size=(2, 6, 3, 8)).astype(np.float32)
    rotated = rope(x, np.arange(6) * 3)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rope_linear_interpolation_divides_positions():
    x = RNG.normal(size=(2, 5, 2, 8)).astype(np.float32)
    positions = np.array([[0, 3, 6, 9, 12], [1, 2, 3, 4, 5]])
    got = rope(x, positions, scaling="linear", scale_factor=3.0)
    want = rope(x, positions / 3.0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_rope_ntk_scaling_formula():
    d, base, factor = 8, 10000.0, 4.0
    got = np.asarray(positional.rope_frequencies(d, base, scaling="ntk", scale_factor=factor))
    new_base = base * factor ** (d / (d - 2))
    np.testing.assert_allclose(got, new_base ** (-np.arange(0, d, 2) / d), rtol=1e-5)
    plain = np.asarray(positional.rope_frequencies(d, base))
    assert got[0] == pytest.approx(plain[0])  # highest frequency unchanged
    assert got[-1] == pytest.approx(plain[-1] / factor, rel=1e-5)  # lowest interpolated by the factor
    np.testing.assert_allclose(plain, base ** (-np.arange(0, d, 2) / d), rtol=1e-6)


def test_alibi_slopes():
    np.testing.assert_allclose(positional.alibi_slopes(8), 2.0 ** -np.arange(1, 9), rtol=1e-6)
    # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence.
    want6 = 2.0 ** -np.array([2, 4, 6, 8, 1, 3], np.float64)
    np.testing.assert_allclose(positional.alibi_slopes(6), want6, rtol=1e-6)
    np.testing.assert_allclose(positional.alibi_slopes(1), [2.0**-8], rtol=1e-6)


def test_alibi_bias_uses_the_last_positions_convention():
    slopes = positional.alibi_slopes(2)
    bias = np.asarray(positional.alibi_bias(slopes, 2, 4))
    assert bias.shape == (1, 2, 2, 4)
    # Queries sit at positions 2 and 3.
    np.testing.assert_allclose(bias[0, 0], -2.0**-4 * np.array([[2, 1, 0, 1], [3, 2, 1, 0]]), rtol=1e-6)
    np.testing.assert_allclose(bias[0, 1], -2.0**-8 * np.array([[2, 1, 0, 1], [3, 2, 1, 0]]), rtol=1e-6)
    capped = np.asarray(positional.alibi_bias(slopes, 2, 4, max_distance=1))
    np.testing.assert_allclose(capped[0, 0], -2.0**-4 * np.array([[1, 1, 0, 1], [1, 1, 1, 0]]), rtol=1e-6)


def test_t5_buckets_hand_computed():
    rel = np.array([0, -1, -3, -4, -5, -7, -10, -15, -20, -100, 1, 5])  # key - query
    # Causal, 8 buckets, max_distance 20: distances 0..3 exact; beyond,
    # 4 + floor(log(d / 4) / log(5) * 4), capped at 7; future keys -> 0.
    causal = bucket(rel, False, 8, 20)
    np.testing.assert_array_equal(causal, [0, 1, 3, 4, 4, 5, 6, 7, 7, 7, 0, 0])
    # Bidirectional, 8 buckets: 4 per side; distances 0, 1 exact; beyond,
    # 2 + floor(log(d / 2) / log(10) * 2), capped at 3; future keys offset by 4.
    rel = np.array([0, -1, -2, -5, -10, -20, 1, 2, 10, 50])
    both = bucket(rel, True, 8, 20)
    np.testing.assert_array_equal(both, [0, 1, 2, 2, 3, 3, 5, 6, 7, 7])


def test_t5_bias_gathers_the_table():
    table = RNG.normal(size=(8, 3)).astype(np.float32)
    rel = positional.relative_positions(3, 5)
    np.testing.assert_array_equal(rel, [[-2, -1, 0, 1, 2], [-3, -2, -1, 0, 1], [-4, -3, -2, -1, 0]])
    bias = np.asarray(jax.jit(lambda t, r: positional.t5_bias(t, r, bidirectional=False, max_distance=20))(
        table, rel[None]))
    assert bias.shape == (1, 3, 3, 5)
    buckets = np.asarray(bucket(rel, False, 8, 20))
    np.testing.assert_allclose(bias[0], np.moveaxis(table[buckets], -1, 0))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: positional.apply_rope(np.zeros((1, 2, 1, 5)), np.arange(2)), "head_dim"),
        (lambda: positional.apply_rope(np.zeros((2, 1, 4)), np.arange(2)), "x must be"),
        (lambda: positional.apply_rope(np.zeros((1, 2, 1, 4)), np.arange(3)), "positions"),
        (lambda: positional.apply_rope(np.zeros((1, 2, 1, 4)), np.arange(2), scaling="yarn"), "scaling"),
        (lambda: positional.rope_frequencies(8, scaling="ntk", scale_factor=0.0), "scale_factor"),
        (lambda: positional.alibi_slopes(0), "num_heads"),
        (lambda: positional.t5_relative_position_bucket(np.arange(3), True, 2, 8), "num_buckets"),
        (lambda: positional.t5_relative_position_bucket(np.arange(3), False, 8, 4), "max_distance"),
        (lambda: positional.t5_bias(np.zeros(8), np.arange(3)), "table"),
    ],
)
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
