"""Ring and all-to-all attention equal single-device attention (8 simulated CPU devices)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sequax.ops.attention import attention
from sequax.parallel.attention import ring_attention, sequence_parallel_attention, _shard_map

B, L, H, KH, D = 4, 32, 4, 2, 8
RNG = np.random.default_rng(0)
Q = jnp.asarray(RNG.normal(size=(B, L, H, D)), jnp.float32)
K = jnp.asarray(RNG.normal(size=(B, L, KH, D)), jnp.float32)
V = jnp.asarray(RNG.normal(size=(B, L, KH, D)), jnp.float32)
SEG = jnp.asarray(np.sort(RNG.integers(0, 4, (B, L)), axis=1), jnp.int32)

MESHES = {"seq8": dict(sequence=8), "data2_seq4": dict(data=2, sequence=4), "data4_seq2": dict(data=4, sequence=2)}
CASES = {
    "causal": dict(causal=True),
    "bidirectional": dict(),
    "window": dict(causal=True, window=5),
    "window_sinks": dict(causal=True, window=3, num_sinks=2),
    "segments": dict(causal=True, segment_ids=SEG),
}


def make_mesh(sizes):
    axes = ("data", "sequence")
    shape = [sizes.get(a, 1) for a in axes]
    devices = np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape)
    return Mesh(devices, axes)


def loss(fn, q, k, v):
    out = fn(q, k, v)
    return jnp.sum(jnp.sin(out) * jnp.arange(out.size).reshape(out.shape) * 1e-3)


# Every case and every mesh is covered by each strategy, without the full product
# (each combination compiles a forward and a backward pass).
COMBOS = [
    ("ring", "seq8", "causal"), ("ring", "seq8", "window_sinks"), ("ring", "seq8", "segments"),
    ("ring", "data2_seq4", "bidirectional"), ("ring", "data2_seq4", "window"), ("ring", "data4_seq2", "segments"),
    ("all_to_all", "data2_seq4", "causal"), ("all_to_all", "data2_seq4", "segments"),
    ("all_to_all", "data4_seq2", "window_sinks"), ("all_to_all", "data4_seq2", "bidirectional"),
]


@pytest.mark.parametrize("strategy, mesh_name, case", COMBOS)
def test_matches_single_device(strategy, mesh_name, case):
    mesh = make_mesh(MESHES[mesh_name])
    opts = dict(CASES[case])
    seg = opts.pop("segment_ids", None)

    def ref(q, k, v):
        return attention(q, k, v, segment_ids=seg, mode="dense", **opts)

    def par(q, k, v):
        return sequence_parallel_attention(q, k, v, mesh=mesh, strategy=strategy, segment_ids=seg, **opts)

    spec = NamedSharding(mesh, P("data", "sequence"))
    q, k, v = (jax.device_put(x, spec) for x in (Q, K, V))
    np.testing.assert_allclose(jax.jit(par)(q, k, v), ref(Q, K, V), atol=2e-5, rtol=2e-5)
    grads = jax.jit(jax.grad(lambda *a: loss(par, *a), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(lambda *a: loss(ref, *a), argnums=(0, 1, 2))(Q, K, V)
    for g, w, name in zip(grads, want, "qkv"):
        np.testing.assert_allclose(g, w, atol=2e-5, rtol=2e-5, err_msg=name)


@pytest.mark.parametrize("layout, balanced", [("zigzag", True), ("contiguous", False)])
def test_causal_load_balance_counts_blocks(layout, balanced):
    num = 8
    mesh = make_mesh(dict(sequence=num))
    parts = 2 if layout == "zigzag" else 1

    def local(q, k, v):
        i = jax.lax.axis_index("sequence")
        block = q.shape[1]
        if layout == "zigzag":
            half = block // 2
            pos = jnp.concatenate([i * half + jnp.arange(half), (2 * num - 1 - i) * half + jnp.arange(half)])
        else:
            pos = i * block + jnp.arange(block)
        pos = pos.astype(jnp.int32)[None]
        _, _, count = ring_attention(q, k, v, axis_name="sequence", positions=(pos, pos), causal=True,
                                     parts=parts, debug_block_count=True)
        return count[None]

    counts = _shard_map(local, mesh, (P(None, "sequence"),) * 3, P("sequence"))(Q, K, V)
    counts = np.asarray(counts)
    if balanced:
        assert np.all(counts == 2 * num + 1), counts  # every device: 2P + 1 chunk-pair blocks
    else:
        np.testing.assert_array_equal(counts, np.arange(1, num + 1))  # device i: i + 1 blocks


def test_all_to_all_refuses_heads_that_do_not_split():
    mesh = make_mesh(dict(sequence=8))
    with pytest.raises(ValueError, match="multiple of the sequence axis"):
        sequence_parallel_attention(Q, K, V, mesh=mesh, strategy="all_to_all", causal=True)


def test_length_must_split_into_chunks():
    mesh = make_mesh(dict(sequence=8))
    with pytest.raises(ValueError, match="multiple of 16"):
        sequence_parallel_attention(Q[:, :24], K[:, :24], V[:, :24], mesh=mesh, causal=True)
