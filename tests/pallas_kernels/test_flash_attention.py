"""pallas_kernels.flash_attention against sequax.ops.attention's pure-JAX path (backend="xla").

Marked `gpu`: interpreted on CPU, compiled on a GPU
(`JAX_PLATFORMS=cuda python -m pytest -m gpu tests/pallas_kernels/test_flash_attention.py`).
Interpreted kernels are slow to compile, so each case combines several options
and checks the output, the lse and every gradient (through a loss that also
uses the lse) in one compiled function. Lengths (37 queries, 45 keys) are not
multiples of the 16-row interpret-mode blocks, the head dim (24) is padded to 32,
and heads are grouped (GQA 4:2, MQA 4:1).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.flash_attention import api, masks
from pallas_kernels.flash_attention.block_sizes import TABLE
from pallas_kernels.flash_attention.scores import tanh_exp2
from sequax.ops import positional
from sequax.ops.attention import attention, attention_mask, block_sparse_layout, combine_attention
from tests.conftest import requires_gpu

pytestmark = pytest.mark.gpu
ON_CPU = jax.default_backend() == "cpu"

B, LQ, LK, H, D = 2, 37, 45, 4, 24
RNG = np.random.default_rng(0)
Q = jnp.asarray(RNG.normal(size=(B, LQ, H, D)), jnp.float32)
KV = {kh: tuple(jnp.asarray(RNG.normal(size=(B, LK, kh, D)), jnp.float32) for _ in range(2)) for kh in (1, 2)}
# Packed documents; segment 9 has queries but no keys: those rows see nothing (zeros, lse -inf).
Q_SEG = np.sort(RNG.integers(0, 3, (B, LQ)), axis=1)
Q_SEG[:, 20:23] = 9
K_SEG = np.sort(RNG.integers(0, 3, (B, LK)), axis=1)
SEG = (jnp.asarray(Q_SEG), jnp.asarray(K_SEG))
# Ring-buffer positions: keys out of order, empty slots (-1), a different rotation per batch row.
K_POS = np.stack([np.roll(np.arange(LK), 11), np.roll(np.arange(LK), 30)])
K_POS[:, [4, 17]] = -1
Q_POS = np.stack([np.arange(LQ) + 8, np.arange(LQ) + 5])
LAYOUT = block_sparse_layout(3, local_blocks=1, global_blocks=1)  # 3 blocks of 16 cover the 45 keys


def alibi(cap=None, heads=H):
    """The attention mixer's ALiBi bias as a callable the kernel recognises (attributes of api.py)."""
    slopes = positional.alibi_slopes(heads)

    def bias(q_pos, k_pos):
        relative = k_pos - q_pos
        if cap is not None:
            relative = jnp.clip(relative, -cap, cap)
        return positional.alibi_bias_from_relative(slopes, relative)

    setattr(bias, api.ALIBI_SLOPES_ATTR, slopes)
    setattr(bias, api.ALIBI_CAP_ATTR, cap)
    return bias


# name: (kv heads, options)
CASES = {
    "causal_gqa": (2, dict(causal=True)),
    "window_alibi_softcap": (2, dict(window=(7, 4), bias=alibi(cap=10), softcap=3.0)),
    "lambda_segments_empty_rows": (2, dict(causal=True, window=(6, 0), num_sinks=3, segment_ids=SEG)),
    "block_sparse_q_offset": (2, dict(causal=True, block_mask=(LAYOUT, 16), bias=alibi())),
    "ring_buffer_positions": (2, dict(causal=True, window=(9, 0), num_sinks=2, positions=(Q_POS, K_POS))),
    "mqa_segments_softcap": (1, dict(segment_ids=SEG, softcap=2.0, scale=0.3)),
}


def _value_and_grads(backend, opts):
    def loss(q, k, v):
        o, lse = attention(q, k, v, backend=backend, return_lse=True, **opts)
        finite = jnp.where(jnp.isfinite(lse), lse, 0.0)
        weights = jnp.cos(jnp.arange(o.shape[-1], dtype=jnp.float32))
        return jnp.sum(jnp.sin(o.astype(jnp.float32)) * weights) + 0.3 * jnp.sum(finite), (o, lse)

    return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)


def _run(backend, opts, q, k, v):
    return jax.jit(_value_and_grads(backend, opts))(q, k, v)


def _reference(opts, q, k, v):
    with jax.default_matmul_precision("highest"):  # no TF32 in the float32 reference on a GPU
        return _run("xla", opts, q, k, v)


def _max_err(a, b):
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))


@pytest.mark.parametrize("case", list(CASES))
def test_forward_lse_and_gradients_match_reference(case):
    kv_heads, opts = CASES[case]
    k, v = KV[kv_heads]
    (gq, gk, gv), (out, lse) = _run("pallas", opts, Q, k, v)
    (rq, rk, rv), (ref, ref_lse) = _reference(opts, Q, k, v)
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_array_equal(np.isfinite(lse), np.isfinite(ref_lse))
    finite = np.isfinite(ref_lse)
    np.testing.assert_allclose(np.asarray(lse)[finite], np.asarray(ref_lse)[finite], rtol=2e-5, atol=2e-5)
    for name, g, r in (("dq", gq, rq), ("dk", gk, rk), ("dv", gv, rv)):
        np.testing.assert_allclose(g, r, rtol=5e-5, atol=5e-5, err_msg=name)
    if case == "lambda_segments_empty_rows":  # rows with no visible key: zeros and -inf
        assert not np.isfinite(np.asarray(lse)[:, :, 20:23]).any()
        np.testing.assert_array_equal(np.asarray(out)[:, 20:23], 0.0)


def test_softcap_tanh_through_exp2_matches_tanh():
    """The kernels' tanh (exp2 and a division) is within 4e-7 (a few float32 ulps of 1) of ``jnp.tanh``, saturating exactly."""
    x = jnp.concatenate([jnp.linspace(-30.0, 30.0, 20001), jnp.array([-1e30, -jnp.inf, 1e30, jnp.inf, 0.0])])
    got, want = tanh_exp2(x), jnp.tanh(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=4e-7)
    assert float(got[-5]) == -1.0 and float(got[-2]) == 1.0 and float(got[-1]) == 0.0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_error_is_that_of_the_reference(dtype):
    """The kernel's half-precision error is bounded by the reference's own, measured here.

    Both get the same rounded inputs. The reference (backend="xla") does
    float32 math on them and rounds its output and gradients once; the kernel
    also rounds ``p`` and ``ds`` to the input dtype for its tensor-core matmuls
    (as cuDNN and every flash kernel do). Measured on CPU: 1.0-1.8x the
    reference's error (dk in float16 is the largest); the bound is 2.5x.
    """
    opts = dict(causal=True, segment_ids=SEG, num_sinks=2, window=(12, 0))
    k, v = KV[2]
    q16, k16, v16 = (x.astype(dtype) for x in (Q, k, v))
    (gq, gk, gv), (out, lse) = _run("pallas", opts, q16, k16, v16)
    assert out.dtype == dtype and gq.dtype == dtype and lse.dtype == jnp.float32
    (rq, rk, rv), (ref, ref_lse) = _reference(opts, *(x.astype(jnp.float32) for x in (q16, k16, v16)))
    (oq, ok, ov), (own, _) = _run("xla", opts, q16, k16, v16)
    for name, mine, theirs, exact in (("out", out, own, ref), ("dq", gq, oq, rq), ("dk", gk, ok, rk),
                                      ("dv", gv, ov, rv)):
        own_err = _max_err(theirs, exact)
        assert _max_err(mine, exact) <= 2.5 * own_err + 1e-6, name


def test_lse_merges_split_keys_like_ring_attention():
    """Attention over two key halves (explicit positions), merged by lse, equals attention over all keys."""
    k, v = KV[2]
    q_pos, k_pos = jnp.arange(LQ) + LK - LQ, jnp.arange(LK)
    half = 24  # one block of keys and the rest

    def split(q, k, v):
        parts = [attention(q, k[:, s], v[:, s], causal=True, positions=(q_pos, k_pos[s]), return_lse=True,
                           backend="pallas") for s in (slice(0, half), slice(half, None))]
        return combine_attention(*parts[0], *parts[1])

    out, lse = jax.jit(split)(Q, k, v)
    ref, ref_lse = attention(Q, k, v, causal=True, return_lse=True, backend="xla")
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(lse, ref_lse, rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------
# Tile visibility (no kernels: fast)
# ----------------------------------------------------------------------------


def _dense_truth(opts, q_len, kv_len, q_pad, kv_pad):
    mask = np.asarray(attention_mask(q_len, kv_len, **opts))[:, 0]  # [b, q, k]
    out = np.zeros((mask.shape[0], q_pad, kv_pad), bool)
    out[:, :q_len, :kv_len] = mask
    return out


@pytest.mark.parametrize("opts", [
    dict(causal=True),
    dict(window=(5, 9), num_sinks=3),
    dict(causal=True, segment_ids=SEG, window=(20, 0)),
    dict(causal=True, block_mask=(LAYOUT, 16)),
    dict(positions=(Q_POS, K_POS), causal=True, window=(7, 0)),
], ids=["causal", "window_sinks", "segments", "block_mask", "positions"])
def test_tile_status_is_conservative_and_lists_are_complete(opts):
    bq, bk, q_pad, kv_pad = 16, 8, 48, 48
    truth = _dense_truth(opts, LQ, LK, q_pad, kv_pad)
    spec = masks.MaskSpec(causal=opts.get("causal", False), window=opts.get("window"),
                          num_sinks=opts.get("num_sinks", 0), segments="segment_ids" in opts,
                          layout_block=16 if "block_mask" in opts else None,
                          explicit_positions="positions" in opts, q_offset=LK - LQ, kv_len=LK)
    positions = segments = None
    if "positions" in opts:
        positions = (jnp.pad(jnp.asarray(Q_POS), ((0, 0), (0, q_pad - LQ))),
                     jnp.pad(jnp.asarray(K_POS), ((0, 0), (0, kv_pad - LK)), constant_values=-1))
    if "segment_ids" in opts:
        segments = tuple(jnp.pad(s, ((0, 0), (0, p - s.shape[1]))) for s, p in zip(SEG, (q_pad, kv_pad)))
    layout = LAYOUT if "block_mask" in opts else None

    @jax.jit  # the traced (XLA) path, as with dynamic segment ids or positions
    def lists(positions, segments):
        tl = masks.tile_lists(spec, q_len_padded=q_pad, kv_len_padded=kv_pad, q_len=LQ, block_q=bq, block_k=bk,
                              positions=positions, segments=segments, layout=layout)
        return tl.order, tl.counts, tl.order_t, tl.counts_t

    order, counts, order_t, counts_t = (np.asarray(x) for x in lists(positions, segments))
    real_rows = np.arange(q_pad) < LQ
    for b in range(truth.shape[0]):
        lb = min(b, order.shape[0] - 1)
        for i in range(q_pad // bq):
            tiles = truth[b, i * bq:(i + 1) * bq, :][real_rows[i * bq:(i + 1) * bq]]
            full, seen = counts[lb, i]
            listed = set(order[lb, i, :seen].tolist())
            for j in range(kv_pad // bk):
                tile = tiles[:, j * bk:(j + 1) * bk]
                if tile.any():
                    assert j in listed, (b, i, j)  # every tile with a visible pair is visited
                if j in order[lb, i, :full]:
                    assert tile.all() or not tiles.size, (b, i, j)  # FULL tiles need no element mask
            for j in order[lb, i, :seen]:  # the transposed lists name the same tiles
                assert i in order_t[lb, j, :counts_t[lb, j, 1]]


def test_window_visits_only_its_band_at_benchmark_sizes():
    """Window 4096 at L = 32768: the forward visits ~4.4x fewer tiles than full causal (cost ~ visible area)."""
    bq, bk = TABLE["nvidia h200"][128]["fwd"][:2]
    length = 32768

    def visited(**mask):
        spec = masks.MaskSpec(kv_len=length, **mask)
        lists = masks.tile_lists(spec, q_len_padded=length, kv_len_padded=length, q_len=length, block_q=bq,
                                 block_k=bk, transposed=False)
        return int(jnp.sum(lists.counts[..., 1]))

    causal, window = visited(causal=True), visited(causal=True, window=(4096, 0))
    nq = length // bq
    assert causal == nq * (nq + 1) * (bq // bk) // 2
    assert causal / window > 4.0


# ----------------------------------------------------------------------------
# Dispatch, lowering
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("opts, match", [
    (dict(dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0)), "dropout"),
    (dict(score="softplus"), "softmax attention only"),
    (dict(bias=jnp.zeros((1, H, LQ, LK))), "bias array"),
    (dict(bias=lambda q_pos, k_pos: jnp.zeros((1, 1) + q_pos.shape[1:2] + k_pos.shape[2:])), "other than ALiBi"),
    (dict(mode="dense"), "mode=None"),
    (dict(block_mask=(LAYOUT, 16), positions=(Q_POS, K_POS)), "default positions"),
    (dict(block_mask=(block_sparse_layout(6), 8)), "block_size >= 16"),
])
def test_dispatch_refuses_what_the_kernel_cannot_do(opts, match):
    k, v = KV[2]
    with pytest.raises(ValueError, match=match):
        attention(Q, k, v, backend="pallas", **opts)


def test_why_not_checks_shapes_and_dtypes():
    q = jnp.zeros((1, 8, 2, 512))
    with pytest.raises(ValueError, match="head dims up to 256"):
        attention(q, q, q, backend="pallas")
    qi = jnp.zeros((1, 8, 2, 16), jnp.int32)
    assert "bfloat16, float16 or float32" in api.why_not(qi, qi, qi)
    assert "one entry per head" in api.why_not(Q, *KV[2], bias=alibi(heads=2))
    assert api.why_not(Q, *KV[2], bias=alibi(cap=4)) is None


def _all_options(heads, length):
    return dict(causal=True, window=(256, 0), num_sinks=4, softcap=30.0, segment_ids=jnp.zeros((1, length), jnp.int32),
                alibi_slopes=positional.alibi_slopes(heads), alibi_max_distance=100, return_lse=True)


@pytest.mark.parametrize("dtype, head_dim", [(jnp.bfloat16, 128), (jnp.float32, 64), (jnp.float16, 256)])
def test_triton_kernels_lower_for_cuda_at_benchmark_blocks(dtype, head_dim):
    length, heads = 1024, 4
    q = jnp.ones((1, length, heads, head_dim), dtype)
    k = jnp.ones((1, length, 2, head_dim), dtype)
    rows = TABLE["nvidia h200"][head_dim]
    for opts in (_all_options(heads, length), dict(causal=True, block_mask=(block_sparse_layout(8), 128))):
        def loss(q, k, v, opts=opts):
            out = api.flash_attention(q, k, v, interpret=False, block_sizes=rows, backend="triton", **opts)
            return jnp.sum(jax.tree_util.tree_leaves(out)[0].astype(jnp.float32))

        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, k, k).lower(lowering_platforms=("cuda",))


def test_softcap_tanh_approx_lowers_for_cuda_and_is_kept_off_interpret_and_float32(monkeypatch):
    from pallas_kernels.flash_attention import block_sizes as table

    monkeypatch.setattr(table, "SOFTCAP_TANH", {"default": "approx"})  # every device row
    assert api._softcap_tanh("triton", False, jnp.bfloat16, 30.0) == "approx"
    assert api._softcap_tanh("triton", True, jnp.bfloat16, 30.0) == "exp2"  # interpret: no PTX
    assert api._softcap_tanh("triton", False, jnp.float32, 30.0) == "exp2"  # float32 keeps the exact form
    assert api._softcap_tanh("tpu", False, jnp.bfloat16, 30.0) == "exp2"
    assert api._softcap_tanh("mosaic_gpu", False, jnp.bfloat16, 30.0) == "native"  # approx_math's tanh.approx
    assert api._softcap_tanh("mosaic_gpu", True, jnp.bfloat16, 30.0) == "exp2"
    q = jnp.ones((1, 256, 2, 128), jnp.bfloat16)

    def loss(q, k, v):
        out = api.flash_attention(q, k, v, causal=True, softcap=30.0, interpret=False, backend="triton",
                                  block_sizes=TABLE["nvidia h200"][128])
        return jnp.sum(out.astype(jnp.float32))

    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, q, q).lower(lowering_platforms=("cuda",)).as_text()
    assert "tanh.approx.f32" in text
    monkeypatch.setattr(table, "SOFTCAP_TANH", {"default": "exp2"})
    text = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, q, q).lower(lowering_platforms=("cuda",)).as_text()
    assert "tanh.approx" not in text


@pytest.mark.gpu
@requires_gpu
def test_softcap_tanh_approx_within_the_bf16_references_own_error(monkeypatch):
    """On a GPU: the PTX tanh's output and gradients are no further from the float32 reference than the
    bf16 reference (the same math in bf16) or the kernel's exact (exp2) form are, within 10% plus half
    a bf16 ulp of the largest value (the bound of the Mosaic GPU kernels' tests; measured on an H200:
    the approximate form's dq 1.02x the bf16 reference's own error)."""
    from pallas_kernels.flash_attention import block_sizes as table

    monkeypatch.setattr(table, "SOFTCAP_TANH", {"default": "approx"})  # every device row
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    q, k, v = (3.0 * jax.random.normal(key, (2, 512, 4, 128), jnp.float32) for key in keys)
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    opts = dict(causal=True, softcap=30.0)

    def loss(f, q, k, v):
        return jnp.sum(jnp.sin(f(q, k, v).astype(jnp.float32)))

    def grads(f, *args):
        return [np.asarray(g, np.float32) for g in jax.jit(jax.grad(lambda *a: loss(f, *a), (0, 1, 2)))(*args)]

    ours = grads(lambda *b: api.flash_attention(*b, **opts), qb, kb, vb)
    monkeypatch.setattr(table, "SOFTCAP_TANH", {"default": "exp2"})
    exact_form = grads(lambda *b: api.flash_attention(*b, **opts), qb, kb, vb)
    ref = lambda *b: attention(*b, backend="xla", **opts)  # noqa: E731
    ref32 = grads(ref, *(x.astype(jnp.float32) for x in (qb, kb, vb)))
    ref16 = grads(ref, qb, kb, vb)
    for name, g, r32, r16, e in zip(("dq", "dk", "dv"), ours, ref32, ref16, exact_form):
        bar = max(np.max(np.abs(r16 - r32)), np.max(np.abs(e - r32)))
        half_ulp = 0.5 * 2.0 ** (np.floor(np.log2(np.max(np.abs(r32)))) - 7)
        assert np.max(np.abs(g - r32)) <= 1.1 * bar + half_ulp, name


# ----------------------------------------------------------------------------
# TPU (Mosaic) kernels: their bodies interpreted on CPU, and lowered for TPU
# ----------------------------------------------------------------------------

TPU_INTERPRET_BLOCKS = dict(fwd=(16, 16), dq=(16, 16), dkdv=(16, 16))


@pytest.mark.skipif(not ON_CPU, reason="the TPU kernel bodies are interpreted on CPU")
@pytest.mark.parametrize("case", ["lambda_segments_empty_rows", "block_sparse_q_offset", "ring_buffer_positions"])
def test_tpu_kernels_interpreted_match_reference(case):
    kv_heads, opts = CASES[case]
    k, v = KV[kv_heads]
    kw = dict(opts)
    kw["bias_fn"] = kw.pop("bias", None)

    def loss(q, k, v):
        o, lse = api.flash_attention(q, k, v, backend="tpu", interpret=True, block_sizes=TPU_INTERPRET_BLOCKS,
                                     return_lse=True, **kw)
        finite = jnp.where(jnp.isfinite(lse), lse, 0.0)
        weights = jnp.cos(jnp.arange(o.shape[-1], dtype=jnp.float32))
        return jnp.sum(jnp.sin(o) * weights) + 0.3 * jnp.sum(finite), (o, lse)

    (gq, gk, gv), (out, lse) = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(Q, k, v)
    (rq, rk, rv), (ref, ref_lse) = _reference(opts, Q, k, v)
    np.testing.assert_allclose(out, ref, rtol=2e-5, atol=2e-5)
    finite = np.isfinite(ref_lse)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    np.testing.assert_allclose(np.asarray(lse)[finite], np.asarray(ref_lse)[finite], rtol=2e-5, atol=2e-5)
    for name, g, r in (("dq", gq, rq), ("dk", gk, rk), ("dv", gv, rv)):
        np.testing.assert_allclose(g, r, rtol=5e-5, atol=5e-5, err_msg=name)


@pytest.mark.parametrize("dtype, head_dim", [(jnp.bfloat16, 128), (jnp.float32, 64)])
def test_tpu_kernels_lower_for_tpu_at_benchmark_blocks(dtype, head_dim):
    length, heads = 2048, 4
    q = jnp.ones((1, length, heads, head_dim), dtype)
    k = jnp.ones((1, length, 2, head_dim), dtype)
    rows = TABLE["tpu"][head_dim]
    for opts in (_all_options(heads, length), dict(causal=True, block_mask=(block_sparse_layout(16), 128)),
                 dict(causal=True, positions=(jnp.arange(length), jnp.arange(length)))):
        def loss(q, k, v, opts=opts):
            out = api.flash_attention(q, k, v, interpret=False, block_sizes=rows, backend="tpu", **opts)
            return jnp.sum(jax.tree_util.tree_leaves(out)[0].astype(jnp.float32))

        jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, k, k).lower(lowering_platforms=("tpu",))
