"""State in and out of the parallel form, for every causal mixer.

The contract (sequax/mixers/__init__.py): ``module.apply(variables, x,
initial_state=state, return_state=True)`` returns ``(y, state)`` with the layout
of ``init_state``; running a sequence in pieces, each starting from the state
the previous piece returned, equals running it whole, and equals token-by-token
``step`` decoding. The state remembers the segment id of the last token it saw,
so a piece that starts a new packed segment does not inherit the previous one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.mixers import decode, get

B, D, L = 2, 8, 24
PIECES = (7, 9, 8)  # boundaries at 7 and 16
KEY = jax.random.PRNGKey(0)
X = np.random.default_rng(0).standard_normal((B, L, D)).astype(np.float32)
# Segments: a boundary inside the first piece, one exactly at the second piece's
# first position (7), and one inside the last piece; row 1 differs.
SEG = np.array([[0] * 3 + [1] * 4 + [2] * 12 + [3] * 5, [5] * 7 + [5] * 9 + [6] * 8], np.int32)

# Small settings per causal mixer; `segments` says whether it honours segment_ids.
MIXERS = {
    "attention": (dict(num_heads=2, decode_cache_size=L), True),
    "attention_window": (dict(num_heads=2, window=5), True),
    # Sinks are the row's first positions, so a packed segment with sinks is not the segment
    # alone (it has no sink of its own); its pieces with segments: test_attention_mixer.py.
    "attention_sinks": (dict(num_heads=2, window=5, num_sinks=2), False),
    "linear_attention": (dict(num_heads=2, chunk_size=4), True),
    "hedgehog": (dict(num_heads=2, chunk_size=4), True),
    "retention": (dict(num_heads=2, chunk_size=4), True),
    "gla": (dict(num_heads=2, chunk_size=4), True),
    "deltanet": (dict(num_heads=2, chunk_size=4), True),
    "mamba": (dict(d_state=4, mode="chunked", chunk_size=4), True),
    "mamba2": (dict(head_dim=4, d_state=4, chunk_size=4), True),
    "s5": (dict(state_size=8, blocks=2), True),
    "s4d": (dict(d_state=8), False),
    "s4": (dict(d_state=8, l_max=L), False),
    "h3": (dict(d_state=8, num_heads=2), False),
    "hyena": (dict(max_length=L), False),
    "sgconv": (dict(max_length=L, kernel_dim=4), False),
    "long_conv": (dict(max_length=L), False),
}


def _module(name):
    kwargs, _ = MIXERS[name]
    return get("attention" if name.startswith("attention_") else name)(d_model=D, **kwargs)


_BUILT = {}


def _build(name):
    if name not in _BUILT:
        module = _module(name)
        variables = module.init(KEY, jnp.asarray(X))
        # One compiled parallel form per input shape (eager flax is slow on CPU).
        apply = jax.jit(module.apply, static_argnames=("return_state",))
        _BUILT[name] = module, variables, apply
    return _BUILT[name]


def _pieces(module, variables, apply, x, seg):
    state = module.apply(variables, x.shape[0], method="init_state")
    outs, start = [], 0
    for size in PIECES:
        sl = slice(start, start + size)
        kw = {} if seg is None else {"segment_ids": seg[:, sl]}
        y, state = apply(variables, x[:, sl], initial_state=state, return_state=True, **kw)
        outs.append(y)
        start += size
    return jnp.concatenate(outs, axis=1), state


def close(x, ref, tol=1e-4):
    ref = np.asarray(ref)
    np.testing.assert_allclose(np.asarray(x), ref, rtol=tol, atol=tol * max(np.abs(ref).max(), 1.0))


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_three_pieces_equal_whole_and_decode(name):
    module, variables, apply = _build(name)
    x = jnp.asarray(X)
    whole, whole_state = apply(variables, x, return_state=True)
    pieced, state = _pieces(module, variables, apply, x, None)
    close(pieced, whole)
    jax.tree_util.tree_map(close, state, whole_state)
    close(decode(module, variables, x), whole)
    # The state layout is init_state's.
    init = module.apply(variables, B, method="init_state")
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(init)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(init)):
        assert a.shape == b.shape and a.dtype == b.dtype


@pytest.mark.parametrize("name", sorted(n for n, (_, segments) in MIXERS.items() if segments))
def test_pieces_with_a_segment_boundary_at_a_piece_edge(name):
    module, variables, apply = _build(name)
    x, seg = jnp.asarray(X), jnp.asarray(SEG)
    whole = apply(variables, x, segment_ids=seg)
    pieced, _ = _pieces(module, variables, apply, x, seg)
    close(pieced, whole)
    # Each segment alone gives the same outputs: nothing crossed a boundary.
    row, (lo, hi) = 0, (7, 19)  # segment 2 of row 0 spans the piece edge at 16
    alone = apply(variables, x[row:row + 1, lo:hi])
    close(whole[row, lo:hi], alone[0])
