"""The Mosaic GPU (Hopper) flash-attention kernels (forward, and the dq and dk/dv backward): run by Mosaic GPU's
interpreter on a CPU (a simulated GPU: shared memory, warpgroups, TMA copies and barriers; its two
matmuls as plain dots), lowered for cuda, and compiled on a Hopper GPU
(`JAX_PLATFORMS=cuda python -m pytest -m gpu tests/pallas_kernels/test_flash_attention_mosaic_gpu.py`), each
against the float32 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.flash_attention import api, mosaic_gpu
from sequax.ops.attention import attention
from tests.conftest import requires_gpu

# (q_len, kv_len, heads, kv_heads, head_dim, options): lengths off the 128-row tiles, GQA/MQA, a query
# offset (decoding-style q_len < kv_len), softcap.
CASES = {
    "causal_gqa": (200, 200, 2, 1, 128, dict(causal=True)),
    "bidirectional_softcap_d64": (128, 100, 2, 2, 64, dict(causal=False, softcap=20.0)),
    "causal_offset_mqa": (100, 300, 2, 1, 64, dict(causal=True, softcap=30.0)),
    "causal_aligned_gqa": (256, 256, 4, 2, 64, dict(causal=True)),  # no key padding: the diagonal alone masks
}


def _inputs(q_len, kv_len, heads, kv_heads, dim, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    q = jax.random.normal(keys[0], (1, q_len, heads, dim), jnp.float32)
    k, v = (jax.random.normal(key, (1, kv_len, kv_heads, dim), jnp.float32) for key in keys[1:])
    return tuple(x.astype(jnp.bfloat16) for x in (q, k, v))


def _loss(f):
    def loss(q, k, v):
        o, lse = f(q, k, v)
        weights = jnp.cos(jnp.arange(o.shape[-1], dtype=jnp.float32))
        return jnp.sum(jnp.sin(o.astype(jnp.float32)) * weights) + 0.1 * jnp.sum(lse), (o, lse)
    return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_lowers_for_cuda(case):
    q_len, kv_len, heads, kv_heads, dim, opts = CASES[case]
    q, k, v = _inputs(q_len, kv_len, heads, kv_heads, dim)
    f = _loss(lambda q, k, v: api.flash_attention(q, k, v, backend="mosaic_gpu", interpret=False,
                                                  return_lse=True, **opts))
    text = jax.jit(f).trace(q, k, v).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("mosaic_gpu") >= 3  # the forward and both backward kernels


@pytest.mark.parametrize("form", ["approx", "exp2"])
def test_softcap_tanh_lowers_to_the_gpus_instruction_where_the_table_says(form, monkeypatch):
    """``block_sizes.SOFTCAP_TANH`` "approx": ``jnp.tanh`` under ``approx_math`` (PTX ``tanh.approx.f32``)
    in the forward and both backward kernels; "exp2": none."""
    from pallas_kernels.flash_attention import block_sizes as table

    monkeypatch.setattr(table, "SOFTCAP_TANH", {"default": form})
    q = jnp.ones((1, 128, 2, 64), jnp.bfloat16)

    def loss(q, k, v):
        out = api.flash_attention(q, k, v, backend="mosaic_gpu", interpret=False, causal=True, softcap=30.0)
        return jnp.sum(out.astype(jnp.float32))

    text = jax.jit(jax.grad(loss, (0, 1, 2))).trace(q, q, q).lower(lowering_platforms=("cuda",)).as_text()
    assert ("tanh.approx.f32" in text) == (form == "approx")


@pytest.mark.parametrize("prefer", [True, False])
def test_default_backend_takes_the_mosaic_kernels_where_they_serve_and_the_device_prefers_them(prefer, monkeypatch):
    """``backend=None`` on a (pretend) Hopper GPU: Mosaic GPU kernels for plain causal attention when
    ``PREFER_MOSAIC_GPU`` says so; Triton for a window (which they do not serve), for explicit block
    sizes (Triton rows) and when the table says no."""
    from pallas_kernels.flash_attention import block_sizes as table

    monkeypatch.setattr(api, "_platform", lambda: "gpu")
    monkeypatch.setattr(mosaic_gpu, "supported_here", lambda: True)
    monkeypatch.setattr(table, "PREFER_MOSAIC_GPU", {"default": prefer})
    q = jnp.ones((1, 256, 2, 64), jnp.bfloat16)

    def kernels(**opts):
        f = lambda q, k, v: api.flash_attention(q, k, v, interpret=False, **opts)  # noqa: E731
        text = jax.jit(f).trace(q, q, q).lower(lowering_platforms=("cuda",)).as_text()
        return "mosaic_gpu" if "mosaic_gpu" in text else "triton"

    assert kernels(causal=True) == ("mosaic_gpu" if prefer else "triton")
    assert kernels(causal=True, window=64) == "triton"
    assert kernels(causal=True, block_sizes={"fwd": (64, 64, 4, 2)}) == "triton"


def test_refuses_what_it_does_not_serve():
    q, k, v = _inputs(128, 128, 2, 2, 128)
    for opts, words in ((dict(causal=True, window=64), "windows"),
                        (dict(causal=True, segment_ids=jnp.zeros((2, 128), jnp.int32)), "segment_ids"),
                        (dict(causal=True, num_sinks=4), "sinks")):
        with pytest.raises(ValueError, match=words):
            api.flash_attention(q, k, v, backend="mosaic_gpu", interpret=False, **opts)
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        api.flash_attention(*(x.astype(jnp.float32) for x in (q, k, v)), backend="mosaic_gpu", interpret=False)
    q256 = jnp.zeros((1, 128, 2, 256), jnp.bfloat16)
    with pytest.raises(ValueError, match="head dims"):
        api.flash_attention(q256, q256, q256, backend="mosaic_gpu", interpret=False)


def _check_against_reference(case, interpret):
    """Output, lse and every gradient no further from the float32 reference than the bf16 reference
    (the same math in bf16) or the Triton kernels are, within 10% plus half a bf16 ulp of the largest
    value; rows that see no key: -inf lse in both."""
    q_len, kv_len, heads, kv_heads, dim, opts = CASES[case]
    q, k, v = _inputs(q_len, kv_len, heads, kv_heads, dim)

    def run(f, *args):
        (_, (o, lse)), grads = jax.jit(_loss(f))(*args)
        return [np.asarray(x, np.float32) for x in (o, lse) + tuple(grads)]

    ours = run(lambda *a: api.flash_attention(*a, backend="mosaic_gpu", return_lse=True, interpret=interpret,
                                              **opts), q, k, v)
    triton = run(lambda *a: api.flash_attention(*a, backend="triton", return_lse=True, interpret=interpret,
                                                **opts), q, k, v)
    ref = lambda *a: attention(*a, backend="xla", return_lse=True, **opts)  # noqa: E731
    ref32 = run(ref, *(x.astype(jnp.float32) for x in (q, k, v)))
    ref16 = run(ref, q, k, v)
    finite = np.isfinite(ref32[1])
    np.testing.assert_array_equal(np.isfinite(ours[1]), finite)
    for name, x, r32, r16, tr in zip(("o", "lse", "dq", "dk", "dv"), ours, ref32, ref16, triton):
        if name == "lse":
            x, r32, r16, tr = x[finite], r32[finite], r16[finite], tr[finite]
        bar = max(np.max(np.abs(r16 - r32)), np.max(np.abs(tr - r32)))
        err = np.max(np.abs(x - r32))
        # Half a bf16 ulp of the largest value on top: outputs and gradients are stored in bf16, and
        # which element rounds worst differs from kernel to kernel.
        half_ulp = 0.5 * 2.0 ** (np.floor(np.log2(np.max(np.abs(r32)))) - 7)
        assert err <= 1.1 * bar + half_ulp, (name, err, bar)


@pytest.mark.parametrize("case", sorted(CASES))
def test_interpreted_matches_the_reference(case):
    _check_against_reference(case, interpret=True)


def test_interpreted_forward_with_the_triton_backward(monkeypatch):
    from pallas_kernels.flash_attention import block_sizes as table

    monkeypatch.setitem(table.MOSAIC_GPU_BACKWARD, "default", "triton")
    _check_against_reference("causal_gqa", interpret=True)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.skipif(not mosaic_gpu.supported_here(), reason="needs a Hopper GPU (compute capability 9.0)")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backward", ["mosaic_gpu", "triton"])
def test_compiled_matches_the_reference(case, backward, monkeypatch):
    from pallas_kernels.flash_attention import block_sizes as table

    monkeypatch.setitem(table.MOSAIC_GPU_BACKWARD, "default", backward)
    _check_against_reference(case, interpret=False)
