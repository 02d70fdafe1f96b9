"""Sequence-level heads with ``lengths``: pooling against a numpy reference, padding ignored."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.models import build_model
from sequax.models.heads import ClassificationHead, pool
from sequax.train.config import default_config

X = np.random.default_rng(0).normal(size=(3, 7, 5)).astype(np.float32)
LENGTHS = np.array([7, 1, 4], np.int32)


def naive_pool(x, lengths, pooling):
    rows = []
    for features, n in zip(x, lengths):
        rows.append(features[:n].mean(0) if pooling == "mean" else features[n - 1])
    return np.stack(rows)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pool_matches_numpy(pooling):
    np.testing.assert_allclose(pool(jnp.asarray(X), jnp.asarray(LENGTHS), pooling),
                               naive_pool(X, LENGTHS, pooling), rtol=1e-6, atol=1e-7)
    full = np.full(3, 7, np.int32)
    np.testing.assert_allclose(pool(jnp.asarray(X), None, pooling), naive_pool(X, full, pooling), rtol=1e-6)


def test_pool_refuses_an_unknown_pooling():
    with pytest.raises(ValueError, match="unknown pooling 'max'; choose one of"):
        pool(jnp.asarray(X), None, "max")


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_classification_head_is_a_dense_layer_on_the_pooled_features(pooling):
    head = ClassificationHead(num_classes=3, pooling=pooling)
    params = head.init(jax.random.PRNGKey(0), X, LENGTHS)["params"]
    expected = naive_pool(X, LENGTHS, pooling) @ np.asarray(params["logits"]["kernel"]) + params["logits"]["bias"]
    np.testing.assert_allclose(head.apply({"params": params}, X, LENGTHS), expected, rtol=1e-5, atol=1e-6)
    # Features past each length get no gradient.
    grad = jax.grad(lambda x: head.apply({"params": params}, x, LENGTHS).sum())(jnp.asarray(X))
    for row, n in zip(np.asarray(grad), LENGTHS):
        assert not row[n:].any() and row[:n].any()


def model_config(head, pooling):
    c = default_config().model
    c.update(dict(vocab_size=16, d_model=8, num_layers=1, num_heads=2, mlp_ratio=0.0, causal=True, head=head,
                  num_classes=3, pooling=pooling))
    return c


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_classifier_ignores_tokens_past_each_length(pooling):
    """A causal backbone: tokens at or past ``lengths`` cannot change the logits; earlier ones do."""
    model = build_model(model_config("classification", pooling))
    tokens = np.random.default_rng(1).integers(0, 16, size=(3, 7)).astype(np.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, lengths=LENGTHS)["params"]
    apply = jax.jit(lambda t: model.apply({"params": params}, t, lengths=LENGTHS))
    logits = apply(tokens)
    assert logits.shape == (3, 3)
    padded = tokens.copy()
    for row, n in enumerate(LENGTHS):
        padded[row, n:] = (padded[row, n:] + 5) % 16
    np.testing.assert_array_equal(apply(padded), logits)
    changed = tokens.copy()
    changed[:, 0] = (changed[:, 0] + 5) % 16
    assert np.all(np.abs(np.asarray(apply(changed) - logits)) > 0)


def test_retrieval_scores_each_pair_from_its_two_pooled_documents(pooling="last"):
    model = build_model(model_config("retrieval", pooling))
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 16, size=(2, 2, 6)).astype(np.int32)  # [batch, 2 documents, length]
    lengths = np.array([[6, 3], [2, 5]], np.int32)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens, lengths=lengths)["params"]
    logits = np.asarray(jax.jit(model.apply)({"params": params}, tokens, lengths=lengths))
    encode = jax.jit(lambda t: model.apply({"params": params}, t, method=model.encode))
    feats = np.asarray(encode(tokens.reshape(4, 6)))
    pooled = naive_pool(feats, lengths.reshape(4), pooling).reshape(2, 2, -1)
    u, v = pooled[:, 0], pooled[:, 1]
    head = params["classifier"]
    hidden = np.concatenate([u, v, u * v, u - v], -1) @ np.asarray(head["hidden"]["kernel"]) + head["hidden"]["bias"]
    hidden = np.asarray(jax.nn.gelu(hidden))
    expected = hidden @ np.asarray(head["logits"]["kernel"]) + head["logits"]["bias"]
    np.testing.assert_allclose(logits, expected, rtol=2e-5, atol=2e-6)
