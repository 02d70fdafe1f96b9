"""Every op of ``sequax.ops`` under ``jax_enable_x64``, and edge inputs that must raise ``ValueError``.

With x64 on, Python scalars and ``jnp.zeros(shape)`` default to 64 bits; an op
must still run on float32 inputs and return float32 (complex64) outputs. Each
case is a thunk building small float32 inputs and calling the op; it runs once
with x64 on (its own trace, since the flag is part of jit's cache key).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sequax.ops import attention as attn
from sequax.ops import fftconv, positional, scan
from sequax.ops import linear_attention as la
from sequax.ops import ssm

B, T, H, D = 2, 12, 2, 8
R = np.random.default_rng(0)


def f32(*shape, low=None, high=None):
    if low is not None:
        return R.uniform(low, high, shape).astype(np.float32)
    return R.normal(size=shape).astype(np.float32)


def x64():
    """A context with ``jax_enable_x64`` on (``jax.enable_x64`` on new JAX, the experimental one before)."""
    if callable(getattr(jax, "enable_x64", None)):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


Q, K, V = f32(B, T, H, D), f32(B, T, H, D), f32(B, T, H, D)
SEG = np.array([[0] * 5 + [1] * 7, [0] * 12], np.int32)
G = -f32(B, T, H, D, low=0.0, high=1.0)
BETA = f32(B, T, H, low=0.0, high=1.0)
K_UNIT = K / np.linalg.norm(K, axis=-1, keepdims=True)
U = f32(B, T, 6)  # [batch, length, channels] for the scans and convolutions


def _alibi(q_pos, k_pos):
    return positional.alibi_bias_from_relative(positional.alibi_slopes(H), k_pos - q_pos)


def _attention_cases():
    out = {}
    for mode in ("dense", "blockwise"):
        common = dict(mode=mode, backend="xla", block_size=4)
        out[f"attention_{mode}"] = lambda c=common: attn.attention(
            Q, K, V, causal=True, window=(5, 0), num_sinks=1, segment_ids=SEG, bias=_alibi, softcap=5.0,
            return_lse=True, **c)
        out[f"attention_{mode}_softplus_dropout"] = lambda c=common: attn.attention(
            Q, K, V, causal=True, score="softplus", dropout_rate=0.1, dropout_rng=jax.random.PRNGKey(0), **c)
        out[f"attention_{mode}_positions_block_mask"] = lambda c=common: attn.attention(
            Q, K, V, causal=True, positions=(np.arange(T), np.arange(T)),
            block_mask=(attn.block_sparse_layout(3, global_blocks=1), 4), **c)
    out["attention_mask"] = lambda: attn.attention_mask(T, T, causal=True, window=3)
    out["attention_dropout_mask"] = lambda: attn.attention_dropout_mask(jax.random.PRNGKey(1), 0.2, B, H, T, T)
    out["combine_attention"] = lambda: attn.combine_attention(
        *attn.attention(Q, K[:, :6], V[:, :6], return_lse=True, positions=(np.arange(T), np.arange(6))),
        *attn.attention(Q, K[:, 6:], V[:, 6:], return_lse=True, positions=(np.arange(T), np.arange(6, T))))
    return out


def _positional_cases():
    return {
        "apply_rope_ntk": lambda: positional.apply_rope(Q, np.arange(T), scaling="ntk", scale_factor=2.0),
        "apply_rope_linear": lambda: positional.apply_rope(Q, np.arange(T), scaling="linear", scale_factor=2.0),
        "alibi_bias": lambda: positional.alibi_bias(positional.alibi_slopes(3), T, T, max_distance=4),
        "t5_bias": lambda: positional.t5_bias(f32(8, H), positional.relative_positions(T, T), max_distance=16),
    }


def _linear_attention_cases():
    out = {}
    hh_w, hh_b = f32(H, D, 3), f32(H, 3)
    state = f32(B, H, D, D)
    for mode in la.MODES:
        kw = dict(mode=mode, chunk_size=4, segment_ids=SEG, return_state=True, backend="xla")
        out[f"linear_attention_{mode}"] = lambda kw=kw: la.linear_attention(
            Q, K, V, feature_map="elu", normalize=True, **kw)
        out[f"linear_attention_{mode}_plain_state"] = lambda kw=kw: la.linear_attention(
            Q, K, V, initial_state=state, **kw)
        out[f"hedgehog_{mode}"] = lambda kw=kw: la.linear_attention(
            Q, K, V, feature_map=lambda x: la.hedgehog_feature_map(x, hh_w, hh_b), normalize=True, **kw)
        out[f"retention_{mode}"] = lambda kw=kw: la.retention(Q, K, V, la.retnet_log_decays(H), **kw)
        out[f"gla_{mode}"] = lambda kw=kw: la.gla(Q, K, V, G, initial_state=state, **kw)
        out[f"delta_rule_{mode}"] = lambda kw=kw: la.delta_rule(Q, K_UNIT, V, BETA, initial_state=state, **kw)
    out["la_steps"] = lambda: (
        la.gla_step(Q[:, 0], K[:, 0], V[:, 0], G[:, 0], state),
        la.retention_step(Q[:, 0], K[:, 0], V[:, 0], la.retnet_log_decays(H), state),
        la.linear_attention_step(Q[:, 0], K[:, 0], V[:, 0], (state, f32(B, H, D)), normalize=True),
        la.delta_rule_step(Q[:, 0], K_UNIT[:, 0], V[:, 0], BETA[:, 0], state),
    )
    out["hedgehog_distillation_loss"] = lambda: la.hedgehog_distillation_loss(
        Q, K, jnp.exp(Q), jnp.exp(K))
    return out


def _scan_cases():
    a = f32(B, T, 6, low=0.5, high=1.0)
    out = {f"linear_scan_{m}": (lambda m=m: scan.linear_scan(
        a, U, segment_ids=SEG, mode=m, chunk_size=4, return_state=True)) for m in scan.MODES}
    return out


def _ssm_cases():
    ch, n = U.shape[-1], 4
    A = -f32(ch, n, low=0.5, high=1.5)
    delta, Bm, Cm = f32(B, T, ch), f32(B, T, n), f32(B, T, n)
    out = {f"selective_scan_{m}": (lambda m=m: ssm.selective_scan(
        U, delta, A, Bm, Cm, D=f32(ch), delta_softplus=True, mode=m, return_state=True))
        for m in ("sequential", "associative", "chunked")}
    out["selective_scan_step"] = lambda: ssm.selective_scan_step(
        U[:, 0], delta[:, 0], A, Bm[:, 0], Cm[:, 0], np.zeros((B, ch, n), np.float32), delta_softplus=True)
    heads, p = 2, 3
    x, dt = f32(B, T, heads, p), f32(B, T, heads, low=0.01, high=0.1)
    a_ssd, b_ssd, c_ssd = -f32(heads, low=0.5, high=1.0), f32(B, T, 1, n), f32(B, T, 1, n)
    for m in ("chunked", "naive"):
        out[f"ssd_{m}"] = lambda m=m: ssm.ssd(x, dt, a_ssd, b_ssd, c_ssd, chunk_size=4, mode=m, return_state=True)
    out["ssd_step"] = lambda: ssm.ssd_step(
        x[:, 0], dt[:, 0], a_ssd, b_ssd[:, 0], c_ssd[:, 0], np.zeros((B, heads, p, n), np.float32))
    lam, b4 = ssm.s4d_init(8)
    out["s4d_kernel"] = lambda: ssm.s4d_kernel(
        jnp.broadcast_to(lam, (ch, 4)), b4, f32(ch, 4) + 0j, np.log(np.full(ch, 0.05, np.float32)), T)
    lam5, vec = ssm.s5_init(8)
    lam_bar, b_bar = ssm.s5_discretize(lam5, vec.conj().T @ f32(8, ch), np.log(np.full(4, 0.05, np.float32)))
    c_tilde = f32(ch, 8) @ vec
    out["s5_apply"] = lambda: ssm.s5_apply(lam_bar, b_bar, c_tilde, f32(ch), U, segment_ids=SEG, return_state=True)
    out["s5_step"] = lambda: ssm.s5_step(lam_bar, b_bar, c_tilde, f32(ch), U[:, 0], np.zeros((B, 4), np.complex64))
    return out


def _fftconv_cases():
    k = f32(T, U.shape[-1])
    return {
        "fft_conv_causal": lambda: fftconv.fft_conv(U, k, bias=f32(U.shape[-1])),
        "fft_conv_two_sided": lambda: fftconv.fft_conv(U, k[:11], causal=False),
        "causal_conv1d_segments": lambda: fftconv.causal_conv1d(U, k[:4], segment_ids=SEG),
        "causal_conv1d_step": lambda: fftconv.causal_conv1d_step(U[:, 0], np.zeros((B, 3, 6), np.float32), k[:4]),
        "conv_history_step": lambda: fftconv.conv_history_step(U[:, 0], np.zeros((B, T, 6), np.float32), k, 3),
    }


CASES = {**_attention_cases(), **_positional_cases(), **_linear_attention_cases(), **_scan_cases(),
         **_ssm_cases(), **_fftconv_cases()}


def _wide_leaves(tree):
    """Floating/complex leaves wider than float32/complex64."""
    return [(jnp.asarray(x).dtype) for x in jax.tree_util.tree_leaves(tree)
            if jnp.asarray(x).dtype in (jnp.float64, jnp.complex128)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_runs_under_x64_and_keeps_float32(name):
    with x64():
        out = jax.jit(CASES[name])()  # one program: faster than op-by-op, and traced under x64
        leaves = jax.tree_util.tree_leaves(out)
        assert leaves and all(np.all(np.isfinite(np.asarray(x))) for x in leaves if jnp.asarray(x).dtype != bool)
        assert not _wide_leaves(out), f"{name} returned {_wide_leaves(out)} for float32 inputs"


# --------------------------------------------------------------------------- edge inputs

I32 = Q.astype(np.int32)
LA_OPS = {
    "linear_attention": lambda q, k, v, **kw: la.linear_attention(q, k, v, **kw),
    "retention": lambda q, k, v, **kw: la.retention(q, k, v, np.full(q.shape[2], -0.1, np.float32), **kw),
    "gla": lambda q, k, v, **kw: la.gla(q, k, v, np.zeros(q.shape, np.float32) - 0.1, **kw),
    "delta_rule": lambda q, k, v, **kw: la.delta_rule(q, k, v, np.zeros(q.shape[:3], np.float32) + 0.5, **kw),
}
BAD = {
    "attention_window_float": (lambda: attn.attention(Q, K, V, window=2.5), "window must be"),
    "attention_window_pair_float": (lambda: attn.attention(Q, K, V, window=(2.5, 0)), "window must be"),
    "attention_window_pair_of_three": (lambda: attn.attention(Q, K, V, window=(2, 0, 1)), "window must be"),
    "attention_block_size_float": (lambda: attn.attention(Q, K, V, mode="blockwise", block_size=4.0), "block_size"),
    "attention_block_mask_size_float": (
        lambda: attn.attention(Q, K, V, block_mask=(attn.block_sparse_layout(3), 4.0)), "block_size"),
    "attention_num_sinks_float": (lambda: attn.attention(Q, K, V, window=2, num_sinks=1.5), "num_sinks"),
    "attention_q_len_0": (lambda: attn.attention(Q[:, :0], K, V), "q must have at least one element"),
    "attention_kv_len_0": (lambda: attn.attention(Q, K[:, :0], V[:, :0]), "k must have at least one element"),
    "attention_batch_0": (lambda: attn.attention(Q[:0], K[:0], V[:0]), "q must have at least one element"),
    "attention_heads_0": (lambda: attn.attention(Q[:, :, :0], K[:, :, :0], V[:, :, :0]), "at least one element"),
    "attention_int_inputs": (lambda: attn.attention(I32, I32, I32), "q must be a floating-point array"),
    "attention_segment_ids_batch": (
        lambda: attn.attention(Q, K, V, segment_ids=np.zeros((3, T), np.int32)), r"segment_ids .*batch=2"),
    "attention_segment_ids_float": (
        lambda: attn.attention(Q, K, V, segment_ids=np.zeros((B, T), np.float32)), "segment_ids must be int"),
    "attention_positions_batch": (
        lambda: attn.attention(Q, K, V, positions=(np.zeros((3, T), np.int32), np.arange(T))), r"batch=2"),
    **{f"{n}_time_0": (lambda f=f: f(Q[:, :0], K[:, :0], V[:, :0]), "at least one element") for n, f in LA_OPS.items()},
    **{f"{n}_batch_0": (lambda f=f: f(Q[:0], K[:0], V[:0]), "at least one element") for n, f in LA_OPS.items()},
    **{f"{n}_int_inputs": (lambda f=f: f(I32, I32, I32), "floating-point") for n, f in LA_OPS.items()},
    **{f"{n}_chunk_size_float": (lambda f=f: f(Q, K_UNIT, V, chunk_size=4.0), "chunk_size must be a positive int")
       for n, f in LA_OPS.items()},
    **{f"{n}_segment_ids_batch": (lambda f=f: f(Q, K_UNIT, V, segment_ids=np.zeros((3, T), np.int32)), "segment_ids")
       for n, f in LA_OPS.items()},
    "delta_rule_unnormalised_keys": (lambda: la.delta_rule(Q, 4.0 * K_UNIT, V, BETA), r"beta \* \|k\|\^2"),
    "delta_rule_negative_beta": (lambda: la.delta_rule(Q, K_UNIT, V, -BETA - 0.1), r"0 <= beta \* \|k\|\^2"),
    "delta_rule_step_unnormalised_keys": (lambda: la.delta_rule_step(
        Q[:, 0], 4.0 * K_UNIT[:, 0], V[:, 0], BETA[:, 0], np.zeros((B, H, D, D), np.float32)), r"beta \* \|k\|\^2"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_raise_value_errors_naming_the_argument(name):
    call, match = BAD[name]
    with pytest.raises(ValueError, match=match):
        call()


def test_numpy_integers_are_accepted_as_sizes():
    # Validation happens while tracing, so shapes suffice (the sizes become Python ints).
    got = jax.eval_shape(lambda: attn.attention(
        Q, K, V, causal=True, window=np.int64(3), num_sinks=np.int32(1), mode="blockwise",
        block_size=(np.int64(4), 8), block_mask=(attn.block_sparse_layout(3), np.int64(4))))
    assert got.shape == Q.shape and got.dtype == jnp.float32
    for name, f in LA_OPS.items():
        assert jax.eval_shape(lambda f=f: f(Q, K_UNIT, V, chunk_size=np.int64(4))).shape == V.shape, name


def test_delta_rule_gain_is_a_checkify_error_under_jit():
    from jax.experimental import checkify

    op = jax.jit(la.delta_rule)
    assert np.isfinite(np.asarray(op(Q, K_UNIT, V, BETA))).all()  # no check outside checkify: no cost
    err, _ = checkify.checkify(op)(Q, 4.0 * K_UNIT, V, BETA)
    assert "beta * |k|^2" in str(err.get())
    err, _ = checkify.checkify(op)(Q, K_UNIT, V, BETA)
    assert err.get() is None
