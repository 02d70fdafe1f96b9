"""pallas_kernels.linear_attention against sequax.ops.linear_attention's pure-JAX modes.

Marked `gpu`: interpreted on CPU, compiled on a GPU (`JAX_PLATFORMS=cuda pytest -m gpu`). Every
numeric test is one jitted forward+backward per backend, so each kernel configuration compiles once.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.linear_attention import api
from sequax.ops import linear_attention as la

pytestmark = pytest.mark.gpu

RNG = np.random.default_rng(0)
B, T, H, DK, DV = 2, 45, 2, 16, 24  # T: a partial last chunk; DV: padded to 32 inside the kernel
SEGMENTS = np.zeros((B, T), np.int32)
# Row 0: starts inside chunks, at a chunk boundary (32), a one-token segment (17), ids reused later
# (0, 1, 0, ...: each change is a new segment). Row 1: one segment, fed by the initial state.
SEGMENTS[0] = np.cumsum(np.isin(np.arange(T), [5, 17, 18, 32, 40])) % 2
OPTIONS = {"initial_state": None, "segment_ids": jnp.asarray(SEGMENTS)}


@pytest.fixture(autouse=True)
def _float32_references():
    """XLA runs float32 matmuls in TF32 on GPUs by default; a reference must be float32."""
    with jax.default_matmul_precision("highest"):
        yield


def _normal(*shape):
    return jnp.asarray(RNG.normal(size=shape), jnp.float32)


def _unit(x):
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


Q, K, V = _normal(B, T, H, DK), _normal(B, T, H, DK), _normal(B, T, H, DV)
H0 = _normal(B, H, DK, DV)
GATES = {
    "gla": jax.nn.log_sigmoid(2.0 * _normal(B, T, H, DK) + 1.0),
    "retention": jnp.log(jnp.asarray([0.9, 0.6])),
    "linear_attention": None,
    "delta_rule": jax.nn.sigmoid(_normal(B, T, H)),
}
COT_O = _normal(B, T, H, DV)  # a random cotangent for o


def _state_cotangent(shape):
    """A fixed pseudo-random cotangent for a final state of any head dim."""
    return jnp.sin(1.7 * jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape))


def _inputs(op):
    q, k = (_unit(Q), _unit(K)) if op == "delta_rule" else (Q, K)
    return q, k, V, GATES[op], H0


def _call(op, q, k, v, x, h0, *, backend, mode, chunk_size, segments):
    kw = dict(initial_state=h0, return_state=True, backend=backend, mode=mode, chunk_size=chunk_size,
              segment_ids=OPTIONS["segment_ids"] if segments else None)
    if op == "linear_attention":
        return la.linear_attention(q, k, v, **kw)
    return getattr(la, op)(q, k, v, x, **kw)


@functools.partial(jax.jit, static_argnames=("op", "backend", "mode", "chunk_size", "segments"))
def _value_and_grads(q, k, v, x, h0, *, op, backend, mode, chunk_size, segments):
    """``(o, final_state)`` and the gradients of a random linear functional of both."""

    def loss(q, k, v, x, h0):
        o, s = _call(op, q, k, v, x, h0, backend=backend, mode=mode, chunk_size=chunk_size, segments=segments)
        return jnp.sum(o.astype(jnp.float32) * COT_O) + jnp.sum(s * _state_cotangent(s.shape)), (o, s)

    argnums = (0, 1, 2, 4) if x is None else (0, 1, 2, 3, 4)
    (_, out), grads = jax.value_and_grad(loss, argnums=argnums, has_aux=True)(q, k, v, x, h0)
    return out, grads


def _assert_close(x, ref, tol, what):
    x, ref = np.asarray(x, np.float32), np.asarray(ref, np.float32)
    err = float(np.max(np.abs(x - ref)))
    scale = float(np.max(np.abs(ref))) + 1e-30
    assert np.all(np.isfinite(x)), f"{what}: non-finite values"
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol} x max|ref| ({scale:.3g})"


def _compare(op, inputs, *, chunk_size, segments, tol=1e-4, modes=("naive", "chunked")):
    kw = dict(op=op, chunk_size=chunk_size, segments=segments)
    out, grads = _value_and_grads(*inputs, backend="pallas", mode=None, **kw)
    names = ("o", "final_state", "dq", "dk", "dv") + ("dgate",) * (len(grads) == 5) + ("dh0",)
    for mode in modes:
        ref_out, ref_grads = _value_and_grads(*inputs, backend="xla", mode=mode, **kw)
        for name, x, ref in zip(names, out + grads, ref_out + ref_grads):
            _assert_close(x, ref, tol, f"{op} vs {mode}: {name}")


@pytest.mark.parametrize(
    "op, chunk_size, segments",
    [("gla", 64, True), ("retention", 32, True), ("linear_attention", 32, False), ("delta_rule", 32, True),
     ("delta_rule", 32, False)],
)
def test_forward_state_and_every_gradient_match_references(op, chunk_size, segments):
    # initial_state in, final state out, a partial last chunk, padded dv; with segments: resets
    # inside chunks, at a chunk boundary and one-token segments (checked against both pure-JAX modes).
    _compare(op, _inputs(op), chunk_size=chunk_size, segments=segments,
             modes=("naive", "chunked") if segments else ("naive",))


def test_extreme_gates_stay_finite_and_exact():
    # GLA without segments (the fast path) with log gates down to -30 per step and full forgets
    # (-inf) for some features / whole tokens.
    g = jnp.asarray(RNG.uniform(-30.0, 0.0, (B, T, H, DK)), jnp.float32)
    g = g.at[0, 10, 0, :5].set(-jnp.inf).at[1, 33].set(-jnp.inf)
    q, k, v, _, h0 = _inputs("gla")
    _compare("gla", (q, k, v, g, h0), chunk_size=32, segments=False, modes=("naive",))


def test_gla_at_the_h200_rows_vector_tiles_matches_reference(monkeypatch):
    """The H200 row gives vector gates their own feature tile (64: one block at head dim 64, where
    the default row's 32 makes two); forward, state and every gradient against the naive form."""
    from pallas_kernels.linear_attention.block_sizes import TABLE

    row = {**TABLE["default"], **TABLE["nvidia h200"]}
    assert row["vector_bk"] != row["bk"]
    monkeypatch.setattr(api, "block_sizes", lambda: row)
    _value_and_grads.clear_cache()  # the tiles are read while tracing
    try:
        q, k, g = _normal(B, T, H, 64), _normal(B, T, H, 64), jax.nn.log_sigmoid(_normal(B, T, H, 64) + 1.0)
        _compare("gla", (q, k, V, g, _normal(B, H, 64, DV)), chunk_size=64, segments=True, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


def _with_row(monkeypatch, **row):
    """The kernels' table row with ``row`` applied (read while tracing: the jit cache is cleared)."""
    from pallas_kernels.linear_attention.block_sizes import TABLE

    monkeypatch.setattr(api, "block_sizes", lambda: {**TABLE["default"], **row})
    _value_and_grads.clear_cache()


@pytest.mark.parametrize("log_space", [0.0, float("inf")])
def test_gla_sub_chunk_and_chunk_start_forms_each_match_reference(log_space, monkeypatch):
    """Either form of GLA's intra-chunk scores alone (0: always the secondary chunks; inf: always
    through the chunk start) gives the reference's output, state and gradients at ordinary gates."""
    _with_row(monkeypatch, log_space_nats=log_space)
    try:
        _compare("gla", _inputs("gla"), chunk_size=32, segments=True, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


@pytest.mark.parametrize("op", ["gla", "retention"])
def test_states_kept_for_the_backward_give_the_same_gradients(op, monkeypatch):
    """``save_states``: the backward reads the forward's per-chunk states instead of recomputing them."""
    _with_row(monkeypatch, save_states=True)
    try:
        _compare(op, _inputs(op), chunk_size=32, segments=True, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


@pytest.mark.parametrize("blocks", [1, 2, 4, 16])
def test_triangular_inverse_on_diagonal_blocks_is_exact(blocks):
    """``tiles.inverse_unit_lower`` on 1 ... 16 diagonal blocks of a 16 x 16 tile: the float64 inverse,
    for random unit keys and for the worst case of equal keys (beta = 1: entries up to 1 in size)."""
    from pallas_kernels.linear_attention.tiles import inverse_unit_lower

    n = 16
    keys = np.asarray(RNG.standard_normal((n, 32)))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    for k, beta in ((keys, 1.0 / (1.0 + np.exp(-RNG.standard_normal(n)))), (np.ones((n, 32)) / 32**0.5, np.ones(n))):
        lower = np.tril(beta[:, None] * (k @ k.T), -1)
        want = np.linalg.inv(np.eye(n) + lower)
        got = np.asarray(inverse_unit_lower(jnp.asarray(lower, jnp.float32), blocks))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * max(1.0, np.max(np.abs(want))))
    with pytest.raises(ValueError, match="power of two"):
        inverse_unit_lower(jnp.zeros((n, n), jnp.float32), 3)


def test_delta_rule_backward_from_kept_factors_matches_reference(monkeypatch):
    """``delta_save``: the backward reads the forward's U, W, T and states and forms only P^T dO;
    forward, state and every gradient against the naive form, with segment resets."""
    _with_row(monkeypatch, delta_save=True)
    try:
        _compare("delta_rule", _inputs("delta_rule"), chunk_size=32, segments=True, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


def test_delta_rule_with_blocked_inverses_matches_reference(monkeypatch):
    """The delta-rule kernels with their inverses on 4 diagonal blocks (``delta_inverse_blocks``):
    forward, state and every gradient against the naive form, with segment resets."""
    _with_row(monkeypatch, delta_inverse_blocks=4)
    try:
        _compare("delta_rule", _inputs("delta_rule"), chunk_size=32, segments=True, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


@pytest.mark.parametrize("row", [dict(delta_inverse_warps=2), dict(delta_inverse_warps=1, delta_save=True)])
def test_delta_rule_with_inverses_in_their_own_kernel_matches_reference(row, monkeypatch):
    """``delta_inverse_warps``: ``T`` from its own kernel, read by the WY kernels (forward; backward
    recomputing, or from the kept factors): forward, state and every gradient against the naive form,
    with segment resets."""
    _with_row(monkeypatch, **row)
    try:
        _compare("delta_rule", _inputs("delta_rule"), chunk_size=32, segments=True, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


def test_gla_picks_the_form_per_chunk(monkeypatch):
    """Mild gates in batch row 0, log gates down to -30 in row 1: the default limit takes the chunk-start
    form for row 0's chunks and the exact one for row 1's, and matches the reference; forcing the
    chunk-start form everywhere overflows on row 1, so the choice is what keeps it exact."""
    q, k, v, g, h0 = _inputs("gla")
    g = g.at[1].set(jnp.asarray(RNG.uniform(-30.0, 0.0, (T, H, DK)), jnp.float32))
    _compare("gla", (q, k, v, g, h0), chunk_size=32, segments=False, modes=("naive",))
    _with_row(monkeypatch, log_space_nats=float("inf"))
    try:
        (o, _), _ = _value_and_grads(q, k, v, g, h0, op="gla", backend="pallas", mode=None, chunk_size=32,
                                     segments=False)
        assert not np.all(np.isfinite(np.asarray(o[1])))
    finally:
        _value_and_grads.clear_cache()


@pytest.mark.parametrize("op", ["gla", "delta_rule"])
def test_bfloat16_error_is_within_the_references_own(op):
    """bf16 inputs: the kernel's error against the float32 reference stays within 3x the pure-JAX
    path's own bf16 error (both see the same rounded inputs; the kernel also rounds its matmul
    operands and per-chunk states to bf16, which measured 1.05-2x on these inputs)."""
    q, k, v, x, h0 = _inputs(op)
    q16, k16, v16 = (a.astype(jnp.bfloat16) for a in (q, k, v))
    kw = dict(op=op, chunk_size=32, segments=False)
    ref_out, ref_grads = _value_and_grads(q, k, v, x, h0, backend="xla", mode="naive", **kw)
    own_out, own_grads = _value_and_grads(q16, k16, v16, x, h0, backend="xla", mode="naive", **kw)
    out, grads = _value_and_grads(q16, k16, v16, x, h0, backend="pallas", mode=None, **kw)
    assert out[0].dtype == jnp.bfloat16 and out[1].dtype == jnp.float32
    for i, (x_, own, ref) in enumerate(zip(out + grads, own_out + own_grads, ref_out + ref_grads)):
        ref = np.asarray(ref, np.float32)
        own_err = float(np.max(np.abs(np.asarray(own, np.float32) - ref)))
        err = float(np.max(np.abs(np.asarray(x_, np.float32) - ref)))
        assert err <= 3.0 * own_err + 1e-6 * float(np.max(np.abs(ref))), (op, i, err, own_err)


@pytest.mark.parametrize("op", ["gla", "retention", "delta_rule"])
def test_tpu_kernels_interpreted_match_reference(op, monkeypatch):
    # The Mosaic TPU kernels through the same api, run by Pallas' interpreter on this CPU.
    if jax.default_backend() != "cpu":
        pytest.skip("the TPU kernels run interpreted only on a CPU")
    monkeypatch.setattr(api, "_platform", lambda: "tpu")
    _value_and_grads.clear_cache()  # the kernel choice is made while tracing
    try:
        _compare(op, _inputs(op), chunk_size=32, segments=True, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


def test_tpu_gla_takes_either_form_per_chunk(monkeypatch):
    """The TPU kernels' two intra-chunk forms: mild gates in row 0 (chunk-start form), log gates down
    to -30 in row 1 (sub-chunks), then the sub-chunk form everywhere (``log_space_nats=0``)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the TPU kernels run interpreted only on a CPU")
    monkeypatch.setattr(api, "_platform", lambda: "tpu")
    q, k, v, g, h0 = _inputs("gla")
    g = g.at[1].set(jnp.asarray(RNG.uniform(-30.0, 0.0, (T, H, DK)), jnp.float32))
    _value_and_grads.clear_cache()
    try:
        _compare("gla", (q, k, v, g, h0), chunk_size=32, segments=True, modes=("naive",))
        _with_row(monkeypatch, log_space_nats=0.0)
        _compare("gla", (q, k, v, g, h0), chunk_size=32, segments=False, modes=("naive",))
    finally:
        _value_and_grads.clear_cache()


# --------------------------------------------------------------------------- lowering without hardware


@pytest.fixture
def as_if_on_gpu(monkeypatch):
    """Build the compiled (not interpreted) Triton kernels on this CPU-only machine."""
    monkeypatch.setattr(api, "_platform", lambda: "gpu")
    monkeypatch.setattr(api, "_interpret", lambda: False)


@pytest.fixture
def as_if_on_tpu(monkeypatch):
    """Build the compiled Mosaic TPU kernels on this CPU-only machine."""
    monkeypatch.setattr(api, "_platform", lambda: "tpu")
    monkeypatch.setattr(api, "_interpret", lambda: False)


def _lower_fwd_bwd(op, dtype, platform, segments):
    b, t, h, d = 2, 256, 2, 128  # head dim and chunk of the benchmark (block sizes from the table)
    q = jnp.ones((b, t, h, d), dtype)
    x = {"gla": -jnp.ones((b, t, h, d)), "retention": -jnp.ones((b, t, h, 1)), "delta_rule": jnp.ones((b, t, h))}[op]
    seg = jnp.zeros((b, t), jnp.int32) if segments else None
    fn = api.delta_rule if op == "delta_rule" else api.gated

    def loss(q, k, v, x):
        o, s = fn(q, k, v, x, segment_ids=seg, chunk_size=64)
        return jnp.sum(o.astype(jnp.float32)) + jnp.sum(s)

    jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3))).trace(q, q, q, x).lower(lowering_platforms=(platform,))


@pytest.mark.parametrize("op", ["gla", "retention", "delta_rule"])
@pytest.mark.parametrize("dtype, segments", [(jnp.bfloat16, False), (jnp.float32, True)])
def test_triton_kernels_lower_at_benchmark_block_sizes(op, dtype, segments, as_if_on_gpu):
    _lower_fwd_bwd(op, dtype, "cuda", segments)


@pytest.mark.parametrize("row", [dict(delta_inverse_blocks=2), dict(delta_inverse_blocks=4), dict(delta_save=True),
                                 dict(delta_inverse_warps=1), dict(delta_inverse_warps=2, delta_save=True)])
def test_triton_delta_rule_lowers_with_its_options(row, as_if_on_gpu, monkeypatch):
    _with_row(monkeypatch, **row)
    _lower_fwd_bwd("delta_rule", jnp.bfloat16, "cuda", True)


@pytest.mark.parametrize("op", ["gla", "retention", "delta_rule"])
@pytest.mark.parametrize("dtype, segments", [(jnp.bfloat16, True), (jnp.float32, False)])
def test_tpu_kernels_lower_at_benchmark_block_sizes(op, dtype, segments, as_if_on_tpu):
    _lower_fwd_bwd(op, dtype, "tpu", segments)


# --------------------------------------------------------------------------- dispatch


def test_why_not_refuses_what_the_kernels_cannot_do():
    q, k, v, g, _ = _inputs("gla")
    with pytest.raises(ValueError, match="mode=None or 'chunked'"):
        la.gla(q, k, v, g, backend="pallas", mode="naive")
    with pytest.raises(ValueError, match="chunk_size in"):
        la.gla(q, k, v, g, backend="pallas", chunk_size=48)
    with pytest.raises(ValueError, match="head dims up to"):
        la.delta_rule(*(jnp.zeros((1, 4, 1, 512)),) * 3, jnp.zeros((1, 4, 1)), backend="pallas")
    assert api.why_not(q, k, v, g, mode="chunked", chunk_size=64) is None
    assert api.why_not_delta(q, k, v, GATES["delta_rule"], chunk_size=128) is None
    assert "float" in api.why_not(q, k, v, g.astype(jnp.int32))
    # auto never raises: it falls back to the pure-JAX path.
    assert la.GLA.resolve("auto", q=q, k=k, v=v, x=g, scale=None, initial_state=None, segment_ids=None,
                          mode=None, chunk_size=48) == "xla"
