"""Chunked linear attention on Pallas kernels: the gated recurrence and the delta rule.

Same semantics as the ``"chunked"`` mode of :mod:`sequax.ops.linear_attention`
(flash-linear-attention's conventions), called by its dispatcher after
validation:

- :func:`gated` serves ``gla`` (gate ``[B, T, H, dk]``), ``retention`` and
  ``linear_attention`` (gate ``[B, T, H, 1]``, the cheaper scalar path):
  ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.
- :func:`delta_rule`: ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``.

Both return ``(o, final_state)``: ``o`` in v's dtype, the state float32.
Matmuls take the inputs' common dtype (bf16 / f16 on tensor cores, f32 at full
precision) and accumulate in float32; states are carried in float32 and the
per-chunk states stored in the matmul dtype.

Here (plain JAX around the kernels, differentiated by JAX): the time axis is
padded to a multiple of ``chunk_size`` (padding tokens leave the state
unchanged), head dims to a power of two >= 16, log gates are clamped at
``LOG_GATE_FLOOR`` (``exp`` of it is 0 in float32, so ``-inf`` is a full
forget instead of a NaN), and ``segment_ids`` become per-chunk relative
segment indices (:mod:`.tiles`).

Kernels: on GPUs the Triton ones (:mod:`.pallas_gpu`, :mod:`.pallas_gpu_delta`: a sequential
pass for the per-chunk states, chunk-parallel passes for everything quadratic in the chunk), on
TPUs the Mosaic ones (:mod:`.pallas_tpu`: one sequential walk over the chunks per batch and head,
head-major, so this module transposes around them), on a CPU the Triton ones interpreted.

Backward (``jax.custom_vjp``), residuals besides the kernel inputs: on GPUs the gated ops keep
the intra-chunk scores ``A`` (``chunk`` values per token and head) and recompute the per-chunk
states with one more sequential pass, then a reverse pass gives the state gradients and one
chunk-parallel kernel the rest; the delta rule recomputes ``U, W`` and the states. On TPUs the
forward keeps the per-chunk states and one reverse walk computes every gradient.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.platform import interpret as _interpret, kernel_platform as _platform
from pallas_kernels.linear_attention import pallas_gpu, pallas_gpu_delta, pallas_tpu
from pallas_kernels.linear_attention.block_sizes import block_sizes

LOG_GATE_FLOOR = -128.0  # exp(-128) ~ 3e-56: 0 in float32; clamping below it changes no float32 result
CHUNK_SIZES = (32, 64, 128)
MAX_HEAD_DIM = 256
DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


# --------------------------------------------------------------------------- why_not


def _common_reason(q, k, v, scale, mode, chunk_size):
    if mode not in (None, "chunked"):
        return f"the pallas kernel implements the chunked form and takes mode=None or 'chunked', got mode={mode!r}"
    if jax.default_backend() not in ("cpu", "gpu", "cuda", "rocm", "tpu"):
        return f"no pallas linear-attention kernel for platform {jax.default_backend()!r}"
    if jax.default_backend() == "rocm":
        return "the pallas linear-attention kernels are built and tested for NVIDIA GPUs and TPUs, not ROCm"
    dtype = jnp.result_type(q, k, v)
    if dtype not in DTYPES:
        return f"the pallas kernel takes float32, bfloat16 or float16 q, k, v; got {dtype}"
    if chunk_size not in CHUNK_SIZES:
        return f"the pallas kernel takes chunk_size in {CHUNK_SIZES}; got {chunk_size!r}"
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return f"the pallas kernel takes head dims up to {MAX_HEAD_DIM}; got dk={q.shape[-1]}, dv={v.shape[-1]}"
    if scale is not None and not isinstance(scale, numbers.Real):
        return f"the pallas kernel takes a Python number (or None) as scale; got {type(scale).__name__}"
    return None


def why_not(q, k, v, x, *, scale=None, initial_state=None, segment_ids=None, mode=None, chunk_size=64,
            **_) -> Optional[str]:
    """Why :func:`gated` cannot serve these inputs (``None`` if it can); ``x`` is the log gate."""
    reason = _common_reason(q, k, v, scale, mode, chunk_size)
    if reason is None and not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        reason = f"the pallas kernel takes a floating-point gate; got {jnp.result_type(x)}"
    return reason


def why_not_delta(q, k, v, x, *, scale=None, initial_state=None, segment_ids=None, mode=None, chunk_size=64,
                  **_) -> Optional[str]:
    """Why :func:`delta_rule` cannot serve these inputs (``None`` if it can); ``x`` is beta."""
    reason = _common_reason(q, k, v, scale, mode, chunk_size)
    if reason is None and not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        reason = f"the pallas kernel takes a floating-point beta; got {jnp.result_type(x)}"
    return reason


def _refuse(reason):
    if reason is not None:
        raise ValueError(f"pallas_kernels.linear_attention cannot serve these inputs: {reason}")


# --------------------------------------------------------------------------- configuration and padding


@dataclasses.dataclass(frozen=True)
class _Config:
    scale: float
    chunk: int
    sub: int
    bk: int
    delta_bk: int
    bv: int
    state_bk: int
    state_bv: int
    delta_bv: int
    warps: int
    warps_state: int
    stages_state: int
    log_space: float
    save_states: bool
    delta_save: bool
    inverse_blocks: int
    inverse_warps: int
    platform: str
    interpret: bool


def _config(scale, chunk, dk, dv, vector_gates=False):
    """The kernels' static configuration; ``vector_gates`` (GLA) takes the table's ``vector_*`` tiles."""
    t = block_sizes()
    bk, warps = (t["vector_bk"], t["vector_warps"]) if vector_gates else (t["bk"], t["warps"])
    return _Config(
        scale=float(scale), chunk=chunk, sub=min(t["sub"], chunk // 2), bk=min(bk, dk),
        delta_bk=min(t["delta_bk"], dk), bv=min(t["bv"], dv),
        state_bk=min(t["state_bk"], dk), state_bv=min(t["state_bv"], dv), delta_bv=min(t["delta_bv"], dv),
        warps=warps, warps_state=t["warps_state"], stages_state=t["stages_state"],
        log_space=float(t["log_space_nats"]), save_states=bool(t["save_states"]),
        delta_save=bool(t["delta_save"]), inverse_blocks=int(t["delta_inverse_blocks"]),
        inverse_warps=int(t["delta_inverse_warps"]), platform=_platform(),
        interpret=_interpret(),
    )


def _feature_size(d):
    return max(16, 1 << (d - 1).bit_length())


def _pad_to(x, time, features=None):
    """Zero-pad axis 1 to ``time`` and (if given) the last axis to ``features``."""
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, time - x.shape[1])
    if features is not None:
        widths[-1] = (0, features - x.shape[-1])
    return x if all(w == (0, 0) for w in widths) else jnp.pad(x, widths)


def _relative_segments(segment_ids, padded, chunk):
    """``segment_ids`` ``[B, T]`` -> ``[B, padded]`` int32: segment starts since the token before each chunk."""
    seg = jnp.asarray(segment_ids)
    batch, time = seg.shape
    starts = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), (seg[:, 1:] != seg[:, :-1]).astype(jnp.int32)], 1)
    run = jnp.cumsum(starts, axis=1)
    run = jnp.pad(run, [(0, 0), (0, padded - time)], mode="edge").reshape(batch, padded // chunk, chunk)
    entering = jnp.concatenate([jnp.zeros((batch, 1), jnp.int32), run[:, :-1, -1]], axis=1)
    return (run - entering[..., None]).reshape(batch, padded)


def _prepare(q, k, v, initial_state, segment_ids, chunk):
    """Common dtype, padded ``q, k, v``, float32 ``h0`` and ``seg``; returns them and the padded sizes."""
    batch, time, heads, dk = q.shape
    dv = v.shape[-1]
    dtype = jnp.result_type(q, k, v)
    padded = -(-time // chunk) * chunk
    pk, pv = _feature_size(dk), _feature_size(dv)
    q, k = (_pad_to(x.astype(dtype), padded, pk) for x in (q, k))
    v = _pad_to(v.astype(dtype), padded, pv)
    if initial_state is None:
        h0 = jnp.zeros((batch, heads, pk, pv), jnp.float32)
    else:
        h0 = jnp.asarray(initial_state, jnp.float32)
        h0 = jnp.pad(h0, [(0, 0), (0, 0), (0, pk - dk), (0, pv - dv)])
    seg = None if segment_ids is None else _relative_segments(segment_ids, padded, chunk)
    return q, k, v, h0, seg, padded, pk, pv


# --------------------------------------------------------------------------- gated: custom_vjp


def _gated_states(k, v, g, seg, h0, cfg):
    return pallas_gpu.state_fwd(k, v, g, seg, h0, chunk=cfg.chunk, bk=cfg.state_bk, bv=cfg.state_bv,
                                warps=cfg.warps_state, stages=cfg.stages_state, interpret=cfg.interpret)


def _gated_output(q, k, v, b, seg, h, cfg, store_scores):
    return pallas_gpu.output_fwd(q, k, v, b, seg, h, scale=cfg.scale, chunk=cfg.chunk, sub=cfg.sub, bk=cfg.bk,
                                 bv=cfg.bv, warps=cfg.warps, store_scores=store_scores, interpret=cfg.interpret,
                                 log_space=cfg.log_space)


def _heads(x):
    """``[B, T, H, ...]`` <-> ``[B, H, T, ...]`` (the TPU kernels are head-major); ``[B, T, H]`` gains ``[..., 1]``."""
    return jnp.swapaxes(x, 1, 2)[..., None] if x.ndim == 3 else jnp.swapaxes(x, 1, 2)


def _tokens(x, like):
    """Undo :func:`_heads` for an array shaped like ``like``."""
    return jnp.swapaxes(x[..., 0] if like.ndim == 3 else x, 1, 2)


def _gated_forward(q, k, v, g, seg, h0, cfg, for_backward):
    """``((o, final_state), residual)``: the TPU keeps the per-chunk states, the GPU the scores."""
    if cfg.platform == "tpu":
        o, final, h = pallas_tpu.gated_forward(_heads(q), _heads(k), _heads(v), _heads(g), seg, h0,
                                               scale=cfg.scale, chunk=cfg.chunk, sub=cfg.sub,
                                               write_h=for_backward, interpret=cfg.interpret,
                                               log_space=cfg.log_space)
        return (_tokens(o, v), final), h
    h, b, final = _gated_states(k, v, g, seg, h0, cfg)
    out = _gated_output(q, k, v, b, seg, h, cfg, for_backward)
    if not for_backward:
        return (out, final), None
    return (out[0], final), (out[1], (h, b) if cfg.save_states else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _gated(q, k, v, g, seg, h0, cfg):
    return _gated_forward(q, k, v, g, seg, h0, cfg, False)[0]


def _gated_fwd(q, k, v, g, seg, h0, cfg):
    out, extra = _gated_forward(q, k, v, g, seg, h0, cfg, True)
    return out, (q, k, v, g, seg, h0, extra)


def _gated_bwd(cfg, res, cotangents):
    q, k, v, g, seg, h0, extra = res
    do, dfinal = cotangents
    do, dfinal = do.astype(v.dtype), dfinal.astype(jnp.float32)
    if cfg.platform == "tpu":
        grads = pallas_tpu.gated_backward(_heads(q), _heads(k), _heads(v), _heads(g), seg, extra, _heads(do),
                                          dfinal, scale=cfg.scale, chunk=cfg.chunk, sub=cfg.sub, g_dtype=g.dtype,
                                          interpret=cfg.interpret, log_space=cfg.log_space)
        dq, dk, dv, dg = (_tokens(x, like) for x, like in zip(grads[:4], (q, k, v, g)))
        return dq, dk, dv, dg, None, grads[4]
    scores, states = extra
    h, b = states if states is not None else _gated_states(k, v, g, seg, h0, cfg)[:2]
    dh, dh0 = pallas_gpu.state_bwd(q, do, b, seg, dfinal, scale=cfg.scale, chunk=cfg.chunk,
                                   bk=cfg.state_bk, bv=cfg.state_bv, warps=cfg.warps_state,
                                   stages=cfg.stages_state, interpret=cfg.interpret)
    dq, dk, dv, dg = pallas_gpu.grads(q, k, v, b, seg, h, dh, scores, do, scale=cfg.scale, chunk=cfg.chunk,
                                      sub=cfg.sub, bk=cfg.bk, bv=cfg.bv, warps=cfg.warps, g_dtype=g.dtype,
                                      interpret=cfg.interpret, log_space=cfg.log_space)
    return dq, dk, dv, dg, None, dh0


_gated.defvjp(_gated_fwd, _gated_bwd)


def gated(q, k, v, g, *, scale=None, initial_state=None, segment_ids=None, mode=None, chunk_size=64,
          return_state=True):
    """Chunked ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

    Args:
      q, k: ``[batch, time, heads, dk]``; v: ``[batch, time, heads, dv]``.
      g: log gate (<= 0) ``[batch, time, heads, 1]`` (one per head and token:
        retention, linear attention) or ``[batch, time, heads, dk]`` (GLA).
      scale: a Python number, default ``dk ** -0.5``.
      initial_state: ``[batch, heads, dk, dv]`` or None (zeros).
      segment_ids: ``[batch, time]`` ints; the state restarts where the id changes.
      mode: None or ``"chunked"``; chunk_size: 32, 64 or 128.
      return_state: also return the final state (always returned; kept for the op's signature).

    Returns:
      ``(o [batch, time, heads, dv] in v's dtype, final_state [batch, heads, dk, dv] float32)``.
    """
    _refuse(why_not(q, k, v, g, scale=scale, mode=mode, chunk_size=chunk_size))
    time, dk, dv = q.shape[1], q.shape[-1], v.shape[-1]
    out_dtype = v.dtype
    q, k, v, h0, seg, padded, pk, pv = _prepare(q, k, v, initial_state, segment_ids, chunk_size)
    g = jnp.maximum(jnp.asarray(g), LOG_GATE_FLOOR)
    g = _pad_to(g[..., 0], padded) if g.shape[-1] == 1 else _pad_to(g, padded, pk)  # scalar: [B, T, H]
    cfg = _config(dk**-0.5 if scale is None else scale, chunk_size, pk, pv, vector_gates=g.ndim == 4)
    o, final = _gated(q, k, v, g, seg, h0, cfg)
    return o[:, :time, :, :dv].astype(out_dtype), final[:, :, :dk, :dv]


# --------------------------------------------------------------------------- delta rule: custom_vjp


def _delta_states(w, u, k, seg, h0, cfg):
    """``(h, vnew, final)``: the sequential pass over the chunks' WY factors."""
    return pallas_gpu_delta.state_fwd(w, u, k, seg, h0, chunk=cfg.chunk, bv=cfg.delta_bv, warps=cfg.warps_state,
                                      stages=cfg.stages_state, interpret=cfg.interpret)


def _delta_inverse(k, beta, seg, cfg):
    """The chunks' ``T`` from :func:`pallas_gpu_delta.inverse`'s own kernel, or None where the WY kernel
    solves it (``delta_inverse_warps`` 0)."""
    if not cfg.inverse_warps:
        return None
    return pallas_gpu_delta.inverse(k, beta, seg, chunk=cfg.chunk, bk=cfg.delta_bk, warps=cfg.inverse_warps,
                                    interpret=cfg.interpret, inverse_blocks=cfg.inverse_blocks)


def _delta_forward(q, k, v, beta, seg, h0, cfg, for_backward):
    """``((o, final_state), residual)``: the TPU keeps the per-chunk states; the GPU recomputes everything,
    or with ``delta_save`` keeps the WY factors, ``T`` and the states (``(u, w, tmat, h, vnew)``)."""
    if cfg.platform == "tpu":
        o, final, h = pallas_tpu.delta_forward(_heads(q), _heads(k), _heads(v), _heads(beta), seg, h0,
                                               scale=cfg.scale, chunk=cfg.chunk, write_h=for_backward,
                                               interpret=cfg.interpret)
        return (_tokens(o, v), final), h
    keep = for_backward and cfg.delta_save
    tmat = _delta_inverse(k, beta, seg, cfg)
    wy = pallas_gpu_delta.wy(k, v, beta, seg, chunk=cfg.chunk, bk=cfg.delta_bk, bv=cfg.bv, warps=cfg.warps,
                             interpret=cfg.interpret, inverse_blocks=cfg.inverse_blocks, write_t=keep, tmat=tmat)
    u, w = wy[:2]
    h, vnew, final = _delta_states(w, u, k, seg, h0, cfg)
    o = pallas_gpu_delta.output(q, k, vnew, seg, h, scale=cfg.scale, chunk=cfg.chunk, bk=cfg.delta_bk, bv=cfg.bv,
                                warps=cfg.warps, out_dtype=v.dtype, interpret=cfg.interpret)
    return (o, final), ((u, w, wy[2] if tmat is None else tmat, h, vnew) if keep else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _delta(q, k, v, beta, seg, h0, cfg):
    return _delta_forward(q, k, v, beta, seg, h0, cfg, False)[0]


def _delta_fwd(q, k, v, beta, seg, h0, cfg):
    out, extra = _delta_forward(q, k, v, beta, seg, h0, cfg, True)
    return out, (q, k, v, beta, seg, h0, extra)


def _delta_bwd(cfg, res, cotangents):
    q, k, v, beta, seg, h0, extra = res
    do, dfinal = cotangents
    do, dfinal = do.astype(v.dtype), dfinal.astype(jnp.float32)
    if cfg.platform == "tpu":
        grads = pallas_tpu.delta_backward(_heads(q), _heads(k), _heads(v), _heads(beta), seg, extra, _heads(do),
                                          dfinal, scale=cfg.scale, chunk=cfg.chunk, beta_dtype=beta.dtype,
                                          interpret=cfg.interpret)
        dq, dk, dv, dbeta = (_tokens(x, like) for x, like in zip(grads[:4], (q, k, v, beta)))
        return dq, dk, dv, dbeta, None, grads[4]
    if extra is not None:  # delta_save: the forward's factors and states; only P^T dO is left to form
        u, w, tmat, h, vnew = extra
        dvl = pallas_gpu_delta.scores_do(q, k, do, seg, chunk=cfg.chunk, bk=cfg.delta_bk, bv=cfg.bv,
                                         warps=cfg.warps, interpret=cfg.interpret, scale=cfg.scale)
    else:
        tmat = _delta_inverse(k, beta, seg, cfg)
        wy = pallas_gpu_delta.wy(k, v, beta, seg, chunk=cfg.chunk, bk=cfg.delta_bk, bv=cfg.bv, warps=cfg.warps,
                                 interpret=cfg.interpret, q=q, do=do, scale=cfg.scale,
                                 inverse_blocks=cfg.inverse_blocks, tmat=tmat)
        (u, w, tmat, dvl) = wy if tmat is None else (*wy[:2], tmat, wy[2])
        h, vnew, _ = _delta_states(w, u, k, seg, h0, cfg)
    dh, dd, dh0 = pallas_gpu_delta.state_bwd(q, k, w, dvl, do, seg, dfinal, scale=cfg.scale,
                                             chunk=cfg.chunk, bv=cfg.delta_bv, warps=cfg.warps_state,
                                             stages=cfg.stages_state, interpret=cfg.interpret)
    dq, dk, dv, dbeta = pallas_gpu_delta.grads(q, k, v, beta, seg, h, dh, vnew, dd, u, w, tmat, do,
                                               scale=cfg.scale, chunk=cfg.chunk, bk=cfg.delta_bk, bv=cfg.bv,
                                               warps=cfg.warps, beta_dtype=beta.dtype, interpret=cfg.interpret)
    return dq, dk, dv, dbeta, None, dh0


_delta.defvjp(_delta_fwd, _delta_bwd)


def delta_rule(q, k, v, beta, *, scale=None, initial_state=None, segment_ids=None, mode=None, chunk_size=64,
               return_state=True):
    """Chunked delta rule ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``, ``o_t = scale q_t S_t``.

    Args:
      q, k: ``[batch, time, heads, dk]``; v: ``[batch, time, heads, dv]``;
      beta: ``[batch, time, heads]``.
      scale, initial_state, segment_ids, mode, chunk_size, return_state: as in :func:`gated`.

    Returns:
      ``(o [batch, time, heads, dv] in v's dtype, final_state [batch, heads, dk, dv] float32)``.
    """
    _refuse(why_not_delta(q, k, v, beta, scale=scale, mode=mode, chunk_size=chunk_size))
    time, dk, dv = q.shape[1], q.shape[-1], v.shape[-1]
    out_dtype = v.dtype
    q, k, v, h0, seg, padded, pk, pv = _prepare(q, k, v, initial_state, segment_ids, chunk_size)
    beta = _pad_to(jnp.asarray(beta), padded)
    cfg = _config(dk**-0.5 if scale is None else scale, chunk_size, pk, pv)
    o, final = _delta(q, k, v, beta, seg, h0, cfg)
    return o[:, :time, :, :dv].astype(out_dtype), final[:, :, :dk, :dv]
