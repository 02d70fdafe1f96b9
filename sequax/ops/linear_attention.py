"""The linear-attention family as pure functions.

Shapes: ``q``, ``k`` are ``[batch, time, heads, dk]``, ``v`` is
``[batch, time, heads, dv]``; the recurrent state ``S`` is
``[batch, heads, dk, dv]``. Every op here is a special case of

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,        o_t = scale * q_t S_t

(the output includes the current token), or of the delta rule for
``delta_rule``. Gates and decays are given in log space (``g <= 0``). These are
the conventions of flash-linear-attention (``chunk_linear_attn`` without
normalisation, ``chunk_retention``, ``chunk_gla``, ``chunk_delta_rule``), so
results compare one to one.

Every op takes ``mode`` (the pure-JAX algorithm; None means ``"chunked"``) and
``backend`` (``"auto"``, ``"xla"`` or ``"pallas"``, see :mod:`sequax.ops.dispatch`):

- ``"naive"``: a ``lax.scan`` over time written straight from the definition
  (the reference).
- ``"chunked"``: the training form. Within a chunk of ``chunk_size`` tokens the
  outputs are causal-masked matmuls; between chunks only the ``[dk, dv]``
  state is carried, by a scan over chunks. Any length works (the tail is padded
  with tokens that leave the state unchanged).
- ``"recurrent"``: a scan over the op's public ``*_step`` function, the same
  function a decoder calls token by token.

``segment_ids`` ``[batch, time]`` (int) packs several sequences in one row: the
state is reset to zero at every position whose id differs from the previous
position's, so nothing crosses a boundary. ``initial_state`` is the state
before position 0, so it feeds only the first segment of each row (position 0
is never a reset). All computation happens in at least float32; the output has
``v``'s dtype and states are float32.

Log gates may be ``-inf`` (a full forget: the state is zeroed at that token, per
key feature for GLA). The gated ops floor log gates at ``log(tiny)`` of the
compute dtype (about -87 in float32; a decay below 1e-38 is far under any
output's precision), so the chunked form's differences of cumulative gates
stay finite. ``delta_rule`` needs ``0 <= beta_t |k_t|^2 <= 2`` (see there).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import checkify

from sequax.ops.dispatch import BackendTable, check_mode
from sequax.ops.segments import check_segment_ids, merge_chunks, segment_runs, segment_starts, split_chunks

MODES = ("naive", "chunked", "recurrent")

FEATURE_MAPS = {
    "identity": lambda x: x,
    "elu": lambda x: jax.nn.elu(x) + 1.0,  # Katharopoulos et al. (2020): positive features
    "relu": jax.nn.relu,
}


# --------------------------------------------------------------------------- checks


def _feature_map(feature_map):
    if callable(feature_map):
        return feature_map
    if feature_map not in FEATURE_MAPS:
        raise ValueError(
            f"feature_map must be a callable or one of {', '.join(FEATURE_MAPS)}; got {feature_map!r}"
        )
    return FEATURE_MAPS[feature_map]


def _check_qkv(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if jnp.ndim(x) != 4:
            raise ValueError(f"{name} must be 4-D [batch, time, heads, dim]; got shape {jnp.shape(x)}")
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ValueError(
                f"{name} must be a floating-point array; got {jnp.result_type(x)} (cast it, e.g. .astype(jnp.float32))"
            )
        if 0 in jnp.shape(x):
            raise ValueError(
                f"{name} must have at least one element along every axis [batch, time, heads, dim]; "
                f"got shape {jnp.shape(x)}"
            )
    if k.shape != q.shape:
        raise ValueError(f"k must have q's shape {q.shape} [batch, time, heads, dk]; got {k.shape}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v must share [batch, time, heads] = {q.shape[:3]} with q; got shape {v.shape}"
        )


def _check_per_token(name, x, want):
    if jnp.shape(x) != tuple(want):
        raise ValueError(f"{name} must have shape {tuple(want)}; got {jnp.shape(x)}")


def _check_chunking(op, mode, chunk_size) -> int:
    """Validate ``mode`` and return ``chunk_size`` as a Python int (numpy ints accepted)."""
    check_mode(op, mode, MODES)
    if not isinstance(chunk_size, numbers.Integral) or isinstance(chunk_size, (bool, np.bool_)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, e.g. chunk_size=64; got {chunk_size!r}")
    return int(chunk_size)


def _compute_dtype(*xs):
    return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def _scale(scale, dk):
    return dk**-0.5 if scale is None else scale


def _initial_state(initial_state, shape, dtype):
    if initial_state is None:
        return jnp.zeros(shape, dtype)
    _check_per_token("initial_state", initial_state, shape)
    return jnp.asarray(initial_state, dtype)


def _log_gate_floor(dtype) -> float:
    """``log(tiny)`` of ``dtype`` (about -87 in float32): one step of this decay keeps less than
    the smallest normal number, far below any output's precision, while cumulative sums of
    floored gates stay finite (``-inf - -inf`` is NaN) and small enough to difference."""
    return math.log(float(jnp.finfo(dtype).tiny))


# The delta rule's transition I - beta k^T k has eigenvalue 1 - beta |k|^2 along k.
DELTA_RULE_MAX_GAIN = 2.0


def _check_delta_rule_gain(k, beta):
    """``0 <= beta |k|^2 <= 2`` (1% slack): ``ValueError`` on concrete inputs; under a trace a
    ``checkify.debug_check`` (an error under ``checkify.checkify``, a no-op otherwise)."""
    gain = jnp.asarray(beta, jnp.float32) * jnp.sum(jnp.square(jnp.asarray(k, jnp.float32)), axis=-1)
    ok = jnp.all((gain >= 0.0) & (gain <= DELTA_RULE_MAX_GAIN * 1.01))
    message = (
        "delta_rule needs 0 <= beta * |k|^2 <= 2 at every token, or the state grows without bound "
        "(NaN/inf); L2-normalise k and keep beta in [0, 1] (or [0, 2]). Got beta * |k|^2 in [{lo}, {hi}]"
    )
    try:
        concrete_ok = bool(ok)
    except jax.errors.ConcretizationTypeError:
        checkify.debug_check(ok, message, lo=jnp.min(gain), hi=jnp.max(gain))
        return
    if not concrete_ok:
        raise ValueError(message.format(lo=float(jnp.min(gain)), hi=float(jnp.max(gain))))


def _out(o, state, return_state, dtype):
    o = o.astype(dtype)
    return (o, state) if return_state else o


# --------------------------------------------------------------------------- step functions


def _check_step(q_t, k_t, v_t, state):
    for name, x in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)):
        if jnp.ndim(x) != 3:
            raise ValueError(f"{name} must be 3-D [batch, heads, dim]; got shape {jnp.shape(x)}")
    if k_t.shape != q_t.shape or v_t.shape[:2] != q_t.shape[:2]:
        raise ValueError(
            f"k_t must have q_t's shape {q_t.shape} and v_t its [batch, heads]; "
            f"got k_t {k_t.shape}, v_t {v_t.shape}"
        )
    _check_per_token("state", state, q_t.shape + v_t.shape[-1:])


def _read(q_t, state, scale):
    return scale * jnp.einsum("bhk,bhkv->bhv", q_t, state)


def _gated_update(state, k_t, v_t, g_t):
    """``S = diag(exp(g_t)) S + k_t^T v_t``; ``g_t`` ``[batch, heads, dk or 1]``."""
    return jnp.exp(g_t)[..., None] * state + k_t[..., :, None] * v_t[..., None, :]


def _delta_update(state, k_t, v_t, beta_t):
    """``S = S + beta_t k_t^T (v_t - k_t S)``; ``beta_t`` ``[batch, heads]``."""
    error = v_t - jnp.einsum("bhk,bhkv->bhv", k_t, state)  # what the memory gets wrong about k
    return state + beta_t[..., None, None] * k_t[..., :, None] * error[..., None, :]


def gla_step(q_t, k_t, v_t, g_t, state, scale=None):
    """One token of gated linear attention.

    Args:
      q_t, k_t: ``[batch, heads, dk]``; v_t: ``[batch, heads, dv]``.
      g_t: ``[batch, heads, dk]`` log forget gate (<= 0, ``-inf`` allowed).
      state: ``[batch, heads, dk, dv]``.
      scale: defaults to ``dk ** -0.5``.

    Returns:
      ``(o_t [batch, heads, dv], new_state)``.
    """
    _check_step(q_t, k_t, v_t, state)
    _check_per_token("g_t", g_t, q_t.shape)
    state = _gated_update(state, k_t, v_t, g_t)
    return _read(q_t, state, _scale(scale, q_t.shape[-1])), state


def retention_step(q_t, k_t, v_t, log_decay, state, scale=None):
    """One token of retention: ``gla_step`` with the per-head decay ``log_decay`` ``[heads]``.

    Shapes as in :func:`gla_step`; returns ``(o_t [batch, heads, dv], new_state)``.
    """
    _check_step(q_t, k_t, v_t, state)
    _check_per_token("log_decay", log_decay, q_t.shape[1:2])
    state = _gated_update(state, k_t, v_t, jnp.asarray(log_decay)[:, None])
    return _read(q_t, state, _scale(scale, q_t.shape[-1])), state


def linear_attention_step(
    q_t, k_t, v_t, state, *, feature_map="identity", normalize=False, scale=None, eps=1e-5
):
    """One token of (kernelized) linear attention.

    Args:
      q_t, k_t: ``[batch, heads, dk]`` before the feature map; v_t ``[batch, heads, dv]``.
      state: ``S`` ``[batch, heads, dk', dv]`` (``dk'`` = feature-map width), or
        ``(S, z)`` with ``z`` ``[batch, heads, dk']`` the running key sum when
        ``normalize``.
      feature_map, normalize, scale, eps: as in :func:`linear_attention`.

    Returns:
      ``(o_t [batch, heads, dv], new_state)``.
    """
    phi = _feature_map(feature_map)
    q_t, k_t = phi(q_t), phi(k_t)
    scale = _scale(scale, q_t.shape[-1])
    if not normalize:
        _check_step(q_t, k_t, v_t, state)
        state = state + k_t[..., :, None] * v_t[..., None, :]
        return _read(q_t, state, scale), state
    if not (isinstance(state, (tuple, list)) and len(state) == 2):
        raise ValueError("state must be a pair (S, z) when normalize=True")
    s, z = state
    _check_step(q_t, k_t, v_t, s)
    _check_per_token("state z", z, q_t.shape)
    s = s + k_t[..., :, None] * v_t[..., None, :]
    z = z + k_t
    den = scale * jnp.sum(q_t * z, axis=-1, keepdims=True)
    return _read(q_t, s, scale) / (den + eps), (s, z)


def delta_rule_step(q_t, k_t, v_t, beta_t, state, scale=None):
    """One token of the delta rule: ``S <- S + beta k^T (v - k S)``, ``o = scale q S``.

    Args:
      q_t, k_t: ``[batch, heads, dk]``; v_t: ``[batch, heads, dv]``;
      beta_t: ``[batch, heads]`` write strength; state ``[batch, heads, dk, dv]``.
      Needs ``0 <= beta_t |k_t|^2 <= 2`` (see :func:`delta_rule`).

    Returns:
      ``(o_t [batch, heads, dv], new_state)``.
    """
    _check_step(q_t, k_t, v_t, state)
    _check_per_token("beta_t", beta_t, q_t.shape[:2])
    _check_delta_rule_gain(k_t, beta_t)
    state = _delta_update(state, k_t, v_t, beta_t)
    return _read(q_t, state, _scale(scale, q_t.shape[-1])), state


# --------------------------------------------------------------------------- engines


def _time_major(x):
    return jnp.moveaxis(x, 1, 0)


def _recurrent(step, xs, state, reset):
    """Scan ``step(*x_t, state) -> (o_t, state)`` over time, zeroing the state at resets."""

    def body(state, inputs):
        *x_t, r_t = inputs
        state = jax.tree_util.tree_map(
            lambda s: jnp.where(r_t.reshape((-1,) + (1,) * (s.ndim - 1)), 0.0, s), state
        )
        o_t, state = step(*x_t, state)
        return state, o_t

    state, o = lax.scan(body, state, tuple(map(_time_major, xs)) + (_time_major(reset),))
    return _time_major(o), state


def _naive(update, q, k, v, x, state, scale, reset):
    """Reference: a scan of ``S = update(S, k_t, v_t, x_t)``, ``o_t = scale q_t S``, straight
    from the definition (no checks; :func:`_recurrent` over the public steps is the other scan)."""

    def step(q_t, k_t, v_t, x_t, s):
        s = update(s, k_t, v_t, x_t)
        return _read(q_t, s, scale), s

    return _recurrent(step, (q, k, v, x), state, reset)


def _to_chunks(x, chunk_size):
    """``[B, T, H, ...]`` -> ``[B, H, N, C, ...]``, zero-padding time to ``N * C``."""
    return jnp.moveaxis(split_chunks(x, chunk_size, axis=1), 3, 1)


def _from_chunks(x, time):
    """``[B, H, N, C, d]`` -> ``[B, time, H, d]``."""
    return merge_chunks(jnp.moveaxis(x, 1, 3), time, axis=1)


def _chunk_masks(run, chunk_size):
    """Segment masks per chunk from the run index ``[B, T]`` (padded by repeating the last run).

    Returns ``same [B, N, C, C]`` (i, j in one segment), ``first [B, N, C]``
    (i still in the segment that entered the chunk: it sees the carried state),
    ``to_last [B, N, C]`` (j in the chunk's last segment: it reaches the
    outgoing state) and ``keep [B, N]`` (no reset in the chunk: the carried
    state survives it).
    """
    run = split_chunks(jnp.pad(run, [(0, 0), (0, -run.shape[1] % chunk_size)], mode="edge"), chunk_size)
    last = run[..., -1]
    prev = jnp.concatenate([run[:, :1, 0], last[:, :-1]], axis=1)  # run of the token before the chunk
    same = run[..., :, None] == run[..., None, :]
    return same, run == prev[..., None], run == last[..., None], last == prev


def _sub_chunk(c):
    """Secondary chunk size for GLA: the largest divisor of ``c`` that is <= min(16, c // 2)."""
    return max(d for d in range(1, max(1, min(16, c // 2)) + 1) if c % d == 0)


def _masked_exp(mask, x):
    # exp where mask holds, exactly 0 elsewhere (no overflow, no NaN gradients).
    return jnp.exp(jnp.where(mask, x, -jnp.inf))


def _intra_scores(q, k, b):
    """Decayed causal scores ``A_ij = sum_d q_id k_jd exp(b_id - b_jd)`` (j <= i) in one chunk.

    ``q``, ``k`` ``[..., C, dk]``; ``b`` ``[..., C, 1 or dk]`` the inclusive
    cumulative log gate. Never forms ``exp(-b)``, which overflows for strongly
    negative gates.
    """
    c = q.shape[-2]
    i = jnp.arange(c)
    causal = i[:, None] >= i[None, :]
    if b.shape[-1] == 1:  # one decay per position: a [C, C] decay matrix is exact
        rel = b[..., :, None, 0] - b[..., None, :, 0]
        return jnp.einsum("...id,...jd->...ij", q, k) * _masked_exp(causal, rel)

    # Vector gate: split the chunk into n sub-chunks of s tokens. For query
    # sub-chunk a and an earlier key sub-chunk, factor through the reference
    # r_a = b at the token just before a:
    #   exp(b_i - b_j) = exp(b_i - r_a) * exp(r_a - b_j),
    # both factors <= 1 because j < start(a) <= i and b is non-increasing.
    s = _sub_chunk(c)
    n = c // s
    lead = q.shape[:-2]
    blk = i // s
    ref = b[..., jnp.maximum(jnp.arange(n) * s - 1, 0), :]  # [..., n, dk]
    q_ref = (q * jnp.exp(b - ref[..., blk, :])).reshape(lead + (n, s, -1))
    earlier = (blk[None, :] < jnp.arange(n)[:, None])[..., None]  # [n, C, 1]: j before sub-chunk a
    k_ref = k[..., None, :, :] * _masked_exp(earlier, ref[..., :, None, :] - b[..., None, :, :])
    off = jnp.einsum("...asd,...ajd->...asj", q_ref, k_ref).reshape(lead + (c, c))

    # Diagonal sub-chunks: the relative decays exp(b_i - b_j) with j <= i, per feature.
    qb, kb, bb = (x.reshape(lead + (n, s, -1)) for x in (q, k, b))
    tri = jnp.tril(jnp.ones((s, s), bool))[..., None]
    rel = _masked_exp(tri, bb[..., :, None, :] - bb[..., None, :, :])  # [..., n, s, s, dk]
    diag = jnp.einsum("...isd,...itd,...istd->...ist", qb, kb, rel)
    diag = jnp.einsum("...ist,ij->...isjt", diag, jnp.eye(n, dtype=diag.dtype))
    return off + diag.reshape(lead + (c, c))


def _gated_chunked(q, k, v, g, state, scale, run, chunk_size):
    """Chunked form of ``S_t = exp(g_t) S_{t-1} + k_t^T v_t``; ``g`` ``[B, T, H, 1 or dk]``.

    Padding tokens have k = v = 0 and g = 0, so they leave the state unchanged.
    """
    t = q.shape[1]
    q, k, v, g = (_to_chunks(x, chunk_size) for x in (q, k, v, g))  # [B, H, N, C, d]
    same, first, to_last, keep = (m[:, None] for m in _chunk_masks(run, chunk_size))
    b = jnp.cumsum(g, axis=-2)  # log decay from the chunk start through token i (inclusive)
    b_last = b[..., -1:, :]

    scores = _intra_scores(q, k, b) * same
    o = jnp.einsum("...ij,...jv->...iv", scores, v)

    # Each chunk's own contribution to its outgoing state and its total decay.
    k_out = k * jnp.exp(b_last - b) * to_last[..., None]
    d_state = jnp.einsum("bhncd,bhncv->bhndv", k_out, v)
    decay = jnp.exp(b_last[..., 0, :]) * keep[..., None]  # [B, H, N, 1 or dk]

    def carry(s, inputs):
        dec, ds = inputs
        return dec[..., None] * s + ds, s

    state, s_in = lax.scan(carry, state, (jnp.moveaxis(decay, 2, 0), jnp.moveaxis(d_state, 2, 0)))
    s_in = jnp.moveaxis(s_in, 0, 2)  # [B, H, N, dk, dv]: the state entering each chunk
    q_in = q * jnp.exp(b) * first[..., None]
    o = o + jnp.einsum("bhncd,bhndv->bhncv", q_in, s_in)
    return _from_chunks(scale * o, t), state


def _delta_chunked(q, k, v, beta, state, scale, run, chunk_size):
    """Chunked delta rule via the WY/UT representation.

    Within a chunk entered with state S0, write ``S_t = S0 + sum_{j<=t} k_j^T d_j``.
    The update rule gives ``d_t = beta_t (v_t - k_t S0 - sum_{j<t} (k_t.k_j) d_j)``,
    i.e. ``(I + tril(diag(beta) K K^T, -1)) D = diag(beta) V - diag(beta) K S0``,
    so ``D = U - W S0`` with ``U = T diag(beta) V`` and ``W = T diag(beta) K``,
    ``T = (I + tril(diag(beta) K K^T, -1))^-1`` (applied by a triangular solve).
    Outputs are ``scale (Q S0 + tril(Q K^T) D)`` and the chunk leaves
    ``S0 + K^T D``. Segment resets: pairs across segments are masked out of
    ``K K^T`` and ``Q K^T``, only tokens of the incoming segment see S0, and
    only tokens of the chunk's last segment reach the outgoing state.
    """
    t, dv = q.shape[1], v.shape[-1]
    q, k, v = (_to_chunks(x, chunk_size) for x in (q, k, v))  # [B, H, N, C, d]
    beta = _to_chunks(beta[..., None], chunk_size)  # [B, H, N, C, 1]; padding has beta = 0
    same, first, to_last, keep = (m[:, None] for m in _chunk_masks(run, chunk_size))
    i = jnp.arange(chunk_size)

    strict = (i[:, None] > i[None, :]) & same
    lower = beta * jnp.einsum("...id,...jd->...ij", k, k) * strict
    rhs = jnp.concatenate([beta * v, beta * first[..., None] * k], axis=-1)
    uw = lax.linalg.triangular_solve(
        jnp.eye(chunk_size, dtype=q.dtype) + lower, rhs, left_side=True, lower=True, unit_diagonal=True
    )
    u, w = uw[..., :dv], uw[..., dv:]
    k_out = k * to_last[..., None]

    def carry(s, inputs):
        u_n, w_n, k_n, keep_n = inputs
        d = u_n - jnp.einsum("bhck,bhkv->bhcv", w_n, s)
        return keep_n[..., None, None] * s + jnp.einsum("bhck,bhcv->bhkv", k_n, d), s

    xs = tuple(jnp.moveaxis(x, 2, 0) for x in (u, w, k_out, keep))
    state, s_in = lax.scan(carry, state, xs)
    s_in = jnp.moveaxis(s_in, 0, 2)  # [B, H, N, dk, dv]
    d = u - jnp.einsum("bhnck,bhnkv->bhncv", w, s_in)
    scores = jnp.einsum("...id,...jd->...ij", q, k) * ((i[:, None] >= i[None, :]) & same)
    o = jnp.einsum("bhncd,bhndv->bhncv", q * first[..., None], s_in) + scores @ d
    return _from_chunks(scale * o, t), state


def _run_index(segment_ids, batch, time):
    """Run index ``[batch, time]`` (:func:`sequax.ops.segments.segment_runs`); zeros without segments."""
    if segment_ids is None:
        return jnp.zeros((batch, time), jnp.int32)
    return segment_runs(check_segment_ids(segment_ids, batch, time))


def _run(q, k, v, x, step, *, table, backend, chunked, naive, scale, initial_state, return_state,
         segment_ids, mode, chunk_size):
    """Shared driver: ``x`` is the op's per-token extra (gate ``g`` or ``beta``);
    ``chunked(q, k, v, x, state, scale, run, chunk_size)``, ``naive(q, k, v, x, state,
    scale, resets)`` and ``step(q_t, k_t, v_t, x_t, S, scale)`` are its three forms
    on the pure-JAX backend; ``table`` dispatches to the others."""
    chunk_size = _check_chunking(table.op, mode, chunk_size)
    batch, time, heads, dk = q.shape
    if initial_state is not None:
        _check_per_token("initial_state", initial_state, (batch, heads, dk) + v.shape[-1:])
    if segment_ids is not None:
        segment_ids = check_segment_ids(segment_ids, batch, time)
    args = dict(scale=scale, initial_state=initial_state, segment_ids=segment_ids, mode=mode,
                chunk_size=chunk_size)
    backend = table.resolve(backend, q=q, k=k, v=v, x=x, **args)
    if backend != "xla":
        o, state = table.get(backend)(q, k, v, x, return_state=True, **args)
        return _out(o, state, return_state, v.dtype)
    mode = mode or "chunked"
    dtype = _compute_dtype(q, k, v)
    out_dtype = v.dtype
    q, k, v, x = (jnp.asarray(a, dtype) for a in (q, k, v, x))
    scale = _scale(scale, dk)
    state = _initial_state(initial_state, (batch, heads, dk, v.shape[-1]), dtype)
    run = _run_index(segment_ids, batch, time)
    if mode == "chunked":
        o, state = chunked(q, k, v, x, state, scale, run, chunk_size)
    elif mode == "naive":
        o, state = naive(q, k, v, x, state, scale, segment_starts(run))
    else:
        o, state = _recurrent(lambda *a: step(*a, scale), (q, k, v, x), state, segment_starts(run))
    return _out(o, state, return_state, out_dtype)


def _run_gated(q, k, v, g, step, **kwargs):
    """The ``S = exp(g) S + k^T v`` ops; ``step(q_t, k_t, v_t, g_t, S, scale)``.

    Log gates are floored where the decay underflows to 0 anyway (:func:`_log_gate_floor`),
    so a full forget (``-inf``) never meets ``-inf - -inf`` in the chunked differences."""
    g = jnp.maximum(g, _log_gate_floor(_compute_dtype(q, k, v)))
    return _run(q, k, v, g, step, chunked=_gated_chunked, naive=functools.partial(_naive, _gated_update),
                **kwargs)


# --------------------------------------------------------------------------- backends

# Backends (sequax.ops.dispatch): "xla" (the naive / chunked / recurrent modes)
# and "pallas" (pallas_kernels.linear_attention: the chunked form with the
# intra-chunk work on tensor cores). The gated kernel serves linear attention,
# retention and GLA alike: it takes the per-token log gate ``g`` ``[B, T, H, 1 or dk]``.
# auto takes the kernels on NVIDIA GPUs, where every op measured faster than the chunked
# pure-JAX path with a fraction of its memory (BENCHMARKS.md, 2026-12-02); TPUs keep the pure-JAX
# path until the Mosaic kernels have been measured there.
_AUTO = {"gpu": ("pallas", "xla"), "tpu": ("xla",)}
LINEAR_ATTENTION = BackendTable("linear_attention", _AUTO)
RETENTION = BackendTable("retention", _AUTO)
GLA = BackendTable("gla", _AUTO)
DELTA_RULE = BackendTable("delta_rule", _AUTO)
for _table in (LINEAR_ATTENTION, RETENTION, GLA):
    _table.register("xla", None)  # served by _run itself
    _table.register("pallas", "pallas_kernels.linear_attention:gated", "pallas_kernels.linear_attention:why_not")
DELTA_RULE.register("xla", None)
DELTA_RULE.register("pallas", "pallas_kernels.linear_attention:delta_rule",
                    "pallas_kernels.linear_attention:why_not_delta")


# --------------------------------------------------------------------------- public ops


def linear_attention(
    q, k, v, *, feature_map: Union[str, Callable] = "identity", normalize: bool = False,
    scale: Optional[float] = None, eps: float = 1e-5, initial_state=None, return_state: bool = False,
    segment_ids=None, mode: Optional[str] = None, chunk_size: int = 64, backend: str = "auto",
):
    """Causal kernelized linear attention ``o_t = scale phi(q_t) sum_{s<=t} phi(k_s)^T v_s``.

    Args:
      q, k: ``[batch, time, heads, dk]``; v: ``[batch, time, heads, dv]``.
      feature_map: ``"identity"``, ``"elu"`` (``elu(x) + 1``), ``"relu"`` or a
        callable mapping ``[..., dk] -> [..., dk']``, applied to q and k.
      normalize: divide by ``scale * phi(q_t) . z_t + eps`` with
        ``z_t = sum_{s<=t} phi(k_s)`` (the running key sum, which then joins the
        state). Use a positive feature map, or the denominator can vanish.
      scale: defaults to ``dk' ** -0.5`` (it cancels when ``normalize``).
      initial_state: ``S`` ``[batch, heads, dk', dv]``, or ``(S, z)`` with
        ``z`` ``[batch, heads, dk']`` when ``normalize``; zeros if None.
      return_state, segment_ids, mode, chunk_size, backend: see the module docstring.

    Returns:
      ``o`` ``[batch, time, heads, dv]``, or ``(o, final_state)`` with the
      state in the same structure as ``initial_state``.
    """
    _check_qkv(q, k, v)
    chunk_size = _check_chunking("linear_attention", mode, chunk_size)
    phi = _feature_map(feature_map)
    q, k = phi(q), phi(k)
    _check_qkv(q, k, v)
    g = jnp.zeros(q.shape[:3] + (1,), _compute_dtype(q, k, v))
    kwargs = dict(scale=scale, return_state=True, segment_ids=segment_ids, mode=mode, chunk_size=chunk_size,
                  table=LINEAR_ATTENTION, backend=backend)
    if not normalize:
        step = lambda q_t, k_t, v_t, g_t, s, sc: linear_attention_step(q_t, k_t, v_t, s, scale=sc)
        o, state = _run_gated(q, k, v, g, step, initial_state=initial_state, **kwargs)
        return _out(o, state, return_state, o.dtype)

    dv = v.shape[-1]
    state_shapes = (q.shape[:1] + q.shape[2:] + (dv,), q.shape[:1] + q.shape[2:])
    if initial_state is not None:
        if not (isinstance(initial_state, (tuple, list)) and len(initial_state) == 2):
            raise ValueError("initial_state must be a pair (S, z) when normalize=True")
        _check_per_token("initial_state S", initial_state[0], state_shapes[0])
        _check_per_token("initial_state z", initial_state[1], state_shapes[1])
    if mode == "recurrent":
        dtype = _compute_dtype(q, k, v)
        q_, k_, v_ = (jnp.asarray(x, dtype) for x in (q, k, v))
        if initial_state is None:
            initial_state = tuple(jnp.zeros(shape, dtype) for shape in state_shapes)
        initial_state = tuple(jnp.asarray(x, dtype) for x in initial_state)
        step = lambda q_t, k_t, v_t, s: linear_attention_step(
            q_t, k_t, v_t, s, normalize=True, scale=scale, eps=eps
        )
        resets = segment_starts(_run_index(segment_ids, *q.shape[:2]))
        o, state = _recurrent(step, (q_, k_, v_), initial_state, resets)
        return _out(o, state, return_state, v.dtype)

    # z follows the same recurrence as S with values of all ones, so append a
    # ones column to v: output column dv is then scale * phi(q_t) . z_t.
    if initial_state is not None:
        initial_state = jnp.concatenate(
            [jnp.asarray(initial_state[0]), jnp.asarray(initial_state[1])[..., None]], axis=-1
        )
    v_aug = jnp.concatenate([v, jnp.ones_like(v[..., :1])], axis=-1)
    o, state = _run_gated(q, k, v_aug, g, None, initial_state=initial_state, **kwargs)  # not recurrent
    o = o[..., :dv] / (o[..., dv:] + eps)
    return _out(o, (state[..., :dv], state[..., dv]), return_state, v.dtype)


def retnet_log_decays(num_heads: int):
    """RetNet's per-head log decays ``log(1 - 2 ** (-5 - arange(num_heads)))``, ``[num_heads]``."""
    if not isinstance(num_heads, numbers.Integral) or isinstance(num_heads, bool) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int; got {num_heads!r}")
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(int(num_heads), dtype=jnp.float32))))


def retention(
    q, k, v, log_decay, *, scale: Optional[float] = None, initial_state=None, return_state: bool = False,
    segment_ids=None, mode: Optional[str] = None, chunk_size: int = 64, backend: str = "auto",
):
    """Retention (RetNet / Lightning attention): a fixed decay per head.

    ``S_t = exp(log_decay) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

    Args:
      q, k: ``[batch, time, heads, dk]``; v: ``[batch, time, heads, dv]``.
      log_decay: ``[heads]`` (<= 0; ``-inf`` keeps only the current token), e.g.
        :func:`retnet_log_decays`.
      scale, initial_state (``[batch, heads, dk, dv]``), return_state,
      segment_ids, mode, chunk_size, backend: see the module docstring.

    Returns:
      ``o`` ``[batch, time, heads, dv]``, or ``(o, final_state)``.
    """
    _check_qkv(q, k, v)
    _check_per_token("log_decay", log_decay, q.shape[2:3])
    log_decay = jnp.asarray(log_decay, _compute_dtype(q, k, v, log_decay))
    g = jnp.broadcast_to(log_decay[:, None], q.shape[:3] + (1,))
    step = lambda q_t, k_t, v_t, g_t, s, sc: retention_step(q_t, k_t, v_t, log_decay, s, sc)
    return _run_gated(
        q, k, v, g, step, scale=scale, initial_state=initial_state, return_state=return_state,
        segment_ids=segment_ids, mode=mode, chunk_size=chunk_size, table=RETENTION, backend=backend,
    )


def gla(
    q, k, v, g, *, scale: Optional[float] = None, initial_state=None, return_state: bool = False,
    segment_ids=None, mode: Optional[str] = None, chunk_size: int = 64, backend: str = "auto",
):
    """Gated linear attention: a data-dependent forget gate per key feature.

    ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``. The
    chunked form uses secondary chunking, so strongly negative gates within a
    chunk cannot overflow.

    Args:
      q, k: ``[batch, time, heads, dk]``; v: ``[batch, time, heads, dv]``.
      g: ``[batch, time, heads, dk]`` log gate (<= 0; ``-inf`` forgets that feature).
      scale, initial_state (``[batch, heads, dk, dv]``), return_state,
      segment_ids, mode, chunk_size, backend: see the module docstring.

    Returns:
      ``o`` ``[batch, time, heads, dv]``, or ``(o, final_state)``.
    """
    _check_qkv(q, k, v)
    _check_per_token("g", g, q.shape)
    return _run_gated(
        q, k, v, g, gla_step, scale=scale, initial_state=initial_state, return_state=return_state,
        segment_ids=segment_ids, mode=mode, chunk_size=chunk_size, table=GLA, backend=backend,
    )


def delta_rule(
    q, k, v, beta, *, scale: Optional[float] = None, initial_state=None, return_state: bool = False,
    segment_ids=None, mode: Optional[str] = None, chunk_size: int = 64, backend: str = "auto",
):
    """DeltaNet: ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``, ``o_t = scale q_t S_t``.

    Requirement: ``0 <= beta_t |k_t|^2 <= 2`` at every token. The state's
    transition ``I - beta_t k_t^T k_t`` has the eigenvalue ``1 - beta_t |k_t|^2``
    along ``k_t``; outside that range it exceeds 1 in magnitude and the state
    grows geometrically to inf/NaN in every mode (it is the recurrence itself,
    not a numerical artefact). L2-normalise ``k`` and keep ``beta`` in [0, 1]
    (DeltaNet) or [0, 2] (negative eigenvalues) as the mixer does. Checked with
    1% slack: a ``ValueError`` when ``k`` and ``beta`` are concrete; under
    ``jit`` a ``checkify.debug_check``, reported when the caller runs under
    ``jax.experimental.checkify.checkify`` and free otherwise.

    Args:
      q, k: ``[batch, time, heads, dk]``; v: ``[batch, time, heads, dv]``.
      beta: ``[batch, time, heads]``.
      scale, initial_state (``[batch, heads, dk, dv]``), return_state,
      segment_ids, mode, chunk_size, backend: see the module docstring.

    Returns:
      ``o`` ``[batch, time, heads, dv]``, or ``(o, final_state)``.
    """
    _check_qkv(q, k, v)
    _check_per_token("beta", beta, q.shape[:3])
    _check_chunking("delta_rule", mode, chunk_size)
    _check_delta_rule_gain(k, beta)
    return _run(
        q, k, v, beta, delta_rule_step, chunked=_delta_chunked, naive=functools.partial(_naive, _delta_update),
        scale=scale, initial_state=initial_state, return_state=return_state, segment_ids=segment_ids,
        mode=mode, chunk_size=chunk_size, table=DELTA_RULE, backend=backend,
    )


# --------------------------------------------------------------------------- Hedgehog


def hedgehog_feature_map(x, weight, bias=None):
    """Hedgehog's learnable feature map (Zhang et al., 2024), per head.

    ``z = x W_h + b_h``; ``phi(x) = [softmax(z), softmax(-z)]``, each softmax
    over the feature axis (the numerically stable form of ``[exp(z), exp(-z)]``
    used by flash-linear-attention).

    Args:
      x: ``[..., heads, d]`` (e.g. ``[batch, time, heads, d]``).
      weight: ``[heads, d, m]``; bias: ``[heads, m]`` or None.

    Returns:
      ``[..., heads, 2 m]``, positive, each half summing to 1.
    """
    if jnp.ndim(weight) != 3 or jnp.shape(weight)[:2] != jnp.shape(x)[-2:]:
        raise ValueError(
            f"weight must have shape [heads, d, m] with [heads, d] = {jnp.shape(x)[-2:]} from x; "
            f"got {jnp.shape(weight)}"
        )
    z = jnp.einsum("...hd,hdm->...hm", x, weight)
    if bias is not None:
        _check_per_token("bias", bias, (weight.shape[0], weight.shape[2]))
        z = z + bias
    return jnp.concatenate([jax.nn.softmax(z, axis=-1), jax.nn.softmax(-z, axis=-1)], axis=-1)


def hedgehog_distillation_loss(q, k, q_mapped, k_mapped, causal=True, *, scale=None, eps=1e-12):
    """Hedgehog's softmax-mimicry loss: cross-entropy of linear- vs softmax-attention weights.

    With ``P = softmax(scale q k^T)`` (causally masked) and
    ``A = phi(q) phi(k)^T / rowsum``, the loss is
    ``mean_{batch, heads, i} -sum_j P_ij log A_ij``. It is at least the mean
    entropy of ``P``, with equality exactly when ``A == P``.

    Args:
      q, k: ``[batch, time, heads, dk]`` (the softmax teacher's inputs).
      q_mapped, k_mapped: ``[batch, time, heads, m]`` non-negative features.
      causal: mask keys after the query.
      scale: softmax temperature, default ``dk ** -0.5``; eps: floor inside the log.

    Returns:
      A float32 scalar.
    """
    _check_qkv(q, k, q)
    _check_qkv(q_mapped, k_mapped, q_mapped)
    if q_mapped.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"q_mapped must share [batch, time, heads] = {q.shape[:3]} with q; got {q_mapped.shape}"
        )
    dtype = _compute_dtype(q, k, q_mapped, k_mapped)
    scale = _scale(scale, q.shape[-1])
    t = q.shape[1]
    mask = jnp.tril(jnp.ones((t, t), bool)) if causal else jnp.ones((t, t), bool)
    logits = scale * jnp.einsum("bihd,bjhd->bhij", q.astype(dtype), k.astype(dtype))
    p = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
    a = jnp.einsum("bihm,bjhm->bhij", q_mapped.astype(dtype), k_mapped.astype(dtype)) * mask
    a = a / jnp.maximum(jnp.sum(a, axis=-1, keepdims=True), eps)
    return -jnp.mean(jnp.sum(p * jnp.log(jnp.maximum(a, eps)), axis=-1)).astype(jnp.float32)
