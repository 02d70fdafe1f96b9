"""Sequence-parallel mixers equal their single-device selves, and only compact states cross shards.

Mesh ``(data=2, sequence=4)`` of the 8 simulated CPU devices; packed segments
put a boundary exactly on a shard edge, one inside a shard and a reused id.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax import mixers
from sequax.ops import linear_attention as la_ops
from sequax.parallel import sequence
from sequax.parallel import context as parallel_context
from sequax.parallel.context import sequence_parallel_for, use_layout, use_sequence_parallel
from sequax.parallel.mesh import make_mesh

SPLIT = sequence_parallel_for(make_mesh(dict(data=2, fsdp=1, tensor=1, sequence=4)))
B, L, D = 2, 16, 16  # shards of 4 positions
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.normal(size=(B, L, D)), jnp.float32)
# Boundaries at 4 (a shard edge), 7 (inside a shard) and 12 (an edge); segment 1 comes back.
SEGMENTS = jnp.asarray(np.repeat([[0, 1, 2, 1], [0, 0, 3, 3]], [4, 3, 5, 4], axis=1), jnp.int32)

CASES = {  # mixer -> (options, honours segment_ids)
    "gla": (dict(num_heads=2, chunk_size=4), True),
    "deltanet": (dict(num_heads=2, chunk_size=4), True),
    "retention": (dict(num_heads=2, chunk_size=4), True),
    "mamba": (dict(d_state=4), True),
    "mamba2": (dict(head_dim=8, d_state=4, chunk_size=4), True),
    "s5": (dict(state_size=8, blocks=2), True),
    "hyena": (dict(max_length=64), False),  # reach 64 > shard: history from several shards
}


def build(name):
    options, segmented = CASES[name]
    module = mixers.get(name)(d_model=D, **options)
    params = module.init(jax.random.PRNGKey(1), X[:, :8])
    return module, params, (SEGMENTS if segmented else None)


def loss_fn(module, segment_ids, split):
    def loss(params, x):
        with use_sequence_parallel(split):
            y = module.apply(params, x, segment_ids=segment_ids)
        return jnp.sum(jnp.sin(y) * jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape)), y

    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sequence_parallel_mixer_matches_single_device(name):
    module, params, segment_ids = build(name)
    both = jax.jit(lambda p, x: (loss_fn(module, segment_ids, None)(p, x), loss_fn(module, segment_ids, SPLIT)(p, x)))
    ((_, want), want_grads), ((_, got), got_grads) = both(params, X)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got_grads)[0], jax.tree_util.tree_leaves(want_grads)):
        scale = float(jnp.max(jnp.abs(w))) + 1e-6
        np.testing.assert_allclose(g / scale, w / scale, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def state_elements(module, params, batch):
    state = module.apply(params, batch, method="init_state")
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(state))


def sent(module, params, segment_ids, length):
    x = jnp.zeros((B, length, D))
    seg = None if segment_ids is None else jnp.zeros((B, length), jnp.int32)

    def apply(params, x):
        with use_sequence_parallel(SPLIT):
            return module.apply(params, x, segment_ids=seg)

    return sequence.collectives(apply, params, x)


@pytest.mark.parametrize("name", sorted(CASES))
def test_only_states_cross_shards(name):
    """Per layer each device sends at most twice its mixer state (state + transition, or the input
    history for convolutions), and for the state-passing mixers the same whatever the length."""
    module, params, segment_ids = build(name)
    found = sent(module, params, segment_ids, L)
    assert found and {p for p, _, _ in found} <= {"all_gather", "ppermute"}
    local_batch = B // SPLIT.mesh.shape["data"]
    total = sum(int(np.prod(shape)) for _, shape, _ in found)
    assert total <= 2 * state_elements(module, params, local_batch), found
    if name != "hyena":  # a long filter's history grows with the length, up to max_length
        assert sent(module, params, segment_ids, 2 * L) == found


SUPPORTED = ("attention", "deltanet", "gla", "h3", "hyena", "long_conv", "mamba", "mamba2", "retention", "s4",
             "s4d", "s5", "sgconv")


@pytest.mark.parametrize("name", mixers.available())
def test_every_mixer_splits_the_sequence_or_says_it_cannot(name):
    cls = mixers.get(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    options = {k: v for k, v in dict(num_heads=4, max_length=64).items() if k in fields}
    module = cls(d_model=D, **options)
    params = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), X[:, :8]))

    def apply(params, x):
        with use_sequence_parallel(SPLIT):
            return module.apply(params, x)

    if name in SUPPORTED:
        assert jax.eval_shape(apply, params, X).shape == X.shape
    else:
        with pytest.raises(ValueError, match=f"{cls.__name__} has no sequence-parallel form; set mesh.sequence=1"):
            jax.eval_shape(apply, params, X)


def test_options_without_a_sequence_parallel_form_are_refused():
    module = mixers.get("attention")(d_model=D, num_heads=2, positional="t5")
    params = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), X[:, :8]))
    with use_sequence_parallel(SPLIT), pytest.raises(ValueError, match=r"attention \(positional='t5' with"):
        jax.eval_shape(module.apply, params, X)
    module = mixers.get("s5")(d_model=D, causal=False)
    params = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), X[:, :8]))
    with use_sequence_parallel(SPLIT), pytest.raises(ValueError, match=r"s5 \(causal=False"):
        jax.eval_shape(module.apply, params, X)
    with pytest.raises(ValueError, match="sequence length 14 must be a multiple of mesh.sequence=4"):
        sequence.fft_conv(X[:, :14], X[0, :4], split=SPLIT)


def test_doubling_prefix_equals_all_gather():
    """The log2(P)-round ppermute prefix gives the all-gather result (GLA, with segments)."""
    q, k, v = (jnp.asarray(RNG.normal(size=(B, L, 2, 4)), jnp.float32) for _ in range(3))
    g = jax.nn.log_sigmoid(jnp.asarray(RNG.normal(size=(B, L, 2, 4)), jnp.float32))
    both = jax.jit(lambda *a: (sequence.gla(*a, segment_ids=SEGMENTS, split=SPLIT, method="doubling"),
                               la_ops.gla(*a, segment_ids=SEGMENTS)))
    got, want = both(q, k, v, g)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    kinds = {p for p, _, _ in sequence.collectives(
        lambda *a: sequence.gla(*a, split=SPLIT, method="doubling"), q, k, v, g)}
    assert kinds == {"ppermute"}


def test_a_mesh_that_does_not_split_the_sequence_takes_the_single_device_path():
    """At mesh.sequence = 1 no sequence-parallel code runs (its overhead there is zero by
    construction; BENCHMARKS.md times the split code forced onto one device)."""
    for sizes in (dict(data=8, fsdp=1, tensor=1, sequence=1), dict(data=2, fsdp=2, tensor=2, sequence=1)):
        assert sequence_parallel_for(make_mesh(sizes)) is None
        with use_layout(make_mesh(sizes)):  # as the trainer traces its step
            assert parallel_context.sequence_parallel() is None
    assert sequence_parallel_for(None) is None
    assert sequence_parallel_for(make_mesh(dict(data=4, fsdp=1, tensor=1, sequence=2))) is not None
