"""Sequence parallelism for the recurrent and convolutional mixers: compact states cross shards, never activations.

Every function here takes global arrays laid out ``[batch, length, ...]`` (the
length split contiguously over the sequence axis of the active
:class:`~sequax.parallel.context.SequenceParallel`, or of ``split=``), runs the
single-device op of :mod:`sequax.ops` on each shard inside ``shard_map`` and
returns what that op returns on the whole sequence (tested equal, forward and
gradients). Shard ``i`` of ``P`` holds positions ``[i L/P, (i+1) L/P)``.

**State passing** (linear attention, retention, GLA, DeltaNet, Mamba, Mamba-2,
S5). Each op is a linear recurrence ``S_t = A_t S_{t-1} + b_t``, so a shard
``j`` is summarised by its transition ``T_j`` (the product of its ``A_t``) and
the state ``S_j`` it produces from zero: ``E_j = T_j E_{j-1} + S_j``. Shards
exchange only these summaries (``all_gather``: each device sends one state and
one transition, as in LASP-2; or ``method="doubling"``: ``log2 P`` rounds of
``ppermute``, for large ``P``), compose them to the state entering each shard,
and run the op once more from it (the op's own ``initial_state``). Summaries:

- GLA / retention (``S = diag(exp g) S + k^T v``): ``T = exp(sum g)``
  ``[b, h, dk]``, ``S = sum_t exp(sum_{s>t} g_s) k_t^T v_t``, one einsum;
- Mamba-2 (SSD, a scalar decay per head): ``T = exp(A sum dt)`` ``[b, h]``,
  ``S = sum_t exp(A sum_{s>t} dt_s) dt_t x_t B_t^T``, one einsum;
- DeltaNet: ``T = prod_t (I - beta_t k_t^T k_t)`` ``[b, h, dk, dk]`` and ``S``
  come from one run of the op on ``[v, 0]`` from the state ``[0, I]`` (each
  column of the state evolves on its own, so the zero columns give ``S`` and
  the identity columns ``T``);
- Mamba (selective scan) and S5 (``linear_scan``): ``T = exp(A sum dt)``
  ``[b, d, n]`` / ``prod a``, ``S`` from the op's final state; then a rescan.

**History passing** (short and long causal convolutions): the state of a
convolution is its input history, so a shard receives the last ``K - 1``
inputs before it (``ppermute`` from the shards its kernel reaches) and
convolves ``[history, shard]`` (:func:`sequax.ops.fftconv.causal_conv1d` /
``fft_conv`` with ``history=``). For a long filter that spans the sequence
this is the whole prefix: ``O(reach x channels)``, never more.

**Segments** (packed sequences): each shard receives the segment id of the
previous shard's last token (one ``ppermute`` of ``[batch]``); the incoming
state is zeroed where the shard starts a new segment
(:func:`sequax.ops.segments.carry_state`), a shard with a segment start inside
passes no transition on, and history tokens of another segment are zeroed.

:func:`collectives` lists the communication of a traced function (primitive,
shape, dtype) so tests can assert that only states move.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from sequax.ops import fftconv as conv_ops
from sequax.ops import linear_attention as la_ops
from sequax.ops.scan import linear_scan as _linear_scan
from sequax.ops.segments import segment_runs
from sequax.ops.ssm.selective import selective_scan as _selective_scan
from sequax.ops.ssm.ssd import DEFAULT_CHUNK_SIZE as _SSD_CHUNK
from sequax.ops.ssm.ssd import ssd as _ssd
from sequax.parallel.context import SequenceParallel, sequence_parallel

METHODS = ("all_gather", "doubling")
COLLECTIVES = ("all_gather", "ppermute", "psum", "all_to_all", "reduce_scatter", "psum_scatter", "all_reduce")
_HI = lax.Precision.HIGHEST


# ----------------------------------------------------------------------------- plumbing


def _split(split: Optional[SequenceParallel]) -> SequenceParallel:
    split = split or sequence_parallel()
    if split is None:
        raise ValueError(
            "no sequence split is active: pass split=SequenceParallel(mesh, ...) or trace inside "
            "sequax.parallel.context.use_layout(mesh) with mesh.sequence > 1"
        )
    return split


def _shard_length(op: str, length: int, split: SequenceParallel, minimum: int = 1) -> int:
    if length % split.size or length // split.size < minimum:
        raise ValueError(
            f"{op}: sequence length {length} must be a multiple of mesh.sequence={split.size} with at least "
            f"{minimum} position(s) per shard; pad the sequence or change mesh.sequence"
        )
    return length // split.size


def _shard_map(f, split: SequenceParallel, in_specs, out_specs):
    return jax.shard_map(f, mesh=split.mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def _from_previous(x, axis: str, num: int, shift: int = 1):
    """``x`` of the device ``shift`` places earlier along ``axis`` (zeros on the first ``shift``)."""
    return lax.ppermute(x, axis, [(i, i + shift) for i in range(num - shift)])


def _edges(seg, axis: str, num: int, batch: int):
    """``(carry, clean)`` ``[batch]`` bool: the shard's first token continues the previous shard's
    last segment; no segment starts at local positions ``1 ..``."""
    if seg is None:
        ones = jnp.ones((batch,), bool)
        return ones, ones
    previous = _from_previous(seg[:, -1], axis, num)
    carry = (seg[:, 0] == previous) & (lax.axis_index(axis) > 0)
    clean = ~jnp.any(seg[:, 1:] != seg[:, :-1], axis=1)
    return carry, clean


def _rows(mask, like):
    """``[batch]`` bool -> a float mask broadcasting against ``like`` ``[batch, ...]``."""
    return mask.reshape((-1,) + (1,) * (like.ndim - 1)).astype(like.dtype)


def _diagonal(t, state):
    return t.reshape(t.shape + (1,) * (state.ndim - t.ndim)) * state


def _compose_diagonal(later, earlier):
    return later * earlier


def _matrix(t, state):
    return jnp.einsum("...ij,...jv->...iv", t, state, precision=_HI)


def _compose_matrix(later, earlier):
    return jnp.einsum("...ij,...jk->...ik", later, earlier, precision=_HI)


def incoming_state(transition, state, *, axis: str, num: int, apply: Callable = _diagonal,
                   compose: Callable = _compose_diagonal, method: str = "all_gather"):
    """The state entering each shard (call inside ``shard_map``).

    ``transition``/``state``: this shard's ``T_j`` and ``S_j`` (zero-start
    final state); ``E_j = apply(T_j, E_{j-1}) + S_j``, ``E_{-1} = 0``. Returns
    ``E_{i-1}`` on device ``i`` (zeros on device 0). ``method``:
    ``"all_gather"`` (one collective of one state and one transition per
    device, then a scan over the ``P`` summaries) or ``"doubling"``
    (Hillis-Steele: ``ceil(log2 P)`` ``ppermute`` rounds, then one more).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    index = lax.axis_index(axis)
    if method == "all_gather":
        transitions = lax.all_gather(transition, axis)
        states = lax.all_gather(state, axis)

        def body(carry, summary):
            t, s = summary
            carry = apply(t, carry) + s
            return carry, carry

        _, ends = lax.scan(body, jnp.zeros_like(state), (transitions, states))
        entering = lax.dynamic_index_in_dim(ends, jnp.maximum(index - 1, 0), keepdims=False)
        return jnp.where(index > 0, entering, jnp.zeros_like(entering))
    t, e = transition, state
    shift = 1
    while shift < num:
        t_prev, e_prev = _from_previous(t, axis, num, shift), _from_previous(e, axis, num, shift)
        has = index >= shift
        t, e = jnp.where(has, compose(t, t_prev), t), jnp.where(has, apply(t, e_prev) + e, e)
        shift *= 2
    return _from_previous(e, axis, num)


def _segment_arg(segment_ids, length):
    if segment_ids is None:
        return ()
    segment_ids = jnp.asarray(segment_ids)
    if segment_ids.shape != (segment_ids.shape[0], length) or not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise ValueError(f"segment_ids must be an int array [batch, length={length}]; got {segment_ids.shape}")
    return (segment_ids.astype(jnp.int32),)


def _runs(seg, batch, length):
    return jnp.zeros((batch, length), jnp.int32) if seg is None else segment_runs(seg)


def _suffix_after(x):
    """``sum_{s > t} x_s`` along axis 1 (exclusive suffix sums, no differences of totals)."""
    suffix = jnp.flip(jnp.cumsum(jnp.flip(x, 1), 1), 1)
    return jnp.concatenate([suffix[:, 1:], jnp.zeros_like(suffix[:, :1])], axis=1)


# ----------------------------------------------------------------------------- convolutions


def causal_conv1d(u, k, *, segment_ids=None, split: Optional[SequenceParallel] = None, backend: str = "auto"):
    """:func:`sequax.ops.fftconv.causal_conv1d` (no history) with the length split over the sequence axis.

    ``u`` ``[batch, length, channels]``, ``k`` ``[K, channels]``: each shard
    receives the ``K - 1`` inputs before it from the previous shard (those of
    another segment zeroed) and convolves them with its own. Channels are
    split over the head axis when it divides them. Returns ``[batch, length, channels]``.
    """
    split = _split(split)
    width = k.shape[0] - 1
    length = _shard_length("causal_conv1d", u.shape[1], split, max(width, 1))
    axis, num = split.axis, split.size
    seg_args = _segment_arg(segment_ids, u.shape[1])

    def local(u, k, *seg):
        seg = seg[0] if seg else None
        if not width:
            return conv_ops.causal_conv1d(u, k, segment_ids=seg, backend=backend)
        history = _from_previous(u[:, length - width:], axis, num)
        if seg is not None:  # a history token counts if it and every later one share the shard's first run
            same = _from_previous(seg[:, length - width:], axis, num) == seg[:, :1]
            valid = jnp.flip(jnp.cumprod(jnp.flip(same, 1), axis=1), 1).astype(bool)
            history = jnp.where(valid[..., None], history, jnp.zeros((), history.dtype))
        return conv_ops.causal_conv1d(u, k, segment_ids=seg, history=history, backend=backend)

    heads = split.heads(u.shape[2])
    spec = P(split.batch, axis, heads)
    in_specs = (spec, P(None, heads)) + ((P(split.batch, axis),) if seg_args else ())
    return _shard_map(local, split, in_specs, spec)(u, k, *seg_args)


def fft_conv(u, k, *, bias=None, split: Optional[SequenceParallel] = None, backend: str = "auto"):
    """Causal :func:`sequax.ops.fftconv.fft_conv` with the length split over the sequence axis.

    ``u`` ``[batch, length, channels]``, ``k`` ``[K, channels]``, ``bias``
    ``[channels]`` or None. A kernel reaching ``R = min(K, length)`` taps needs
    the ``R - 1`` inputs before each shard: they come from the
    ``ceil((R - 1) / shard)`` previous shards by ``ppermute`` (the input
    history is the convolution's state). Channels are split over the head
    axis when it divides them. Returns ``[batch, length, channels]``.
    """
    split = _split(split)
    length = _shard_length("fft_conv", u.shape[1], split)
    reach = min(k.shape[0], u.shape[1])
    need = reach - 1
    axis, num = split.axis, split.size
    k = k[:reach]

    def local(u, k, *bias):
        bias = bias[0] if bias else None
        if not need:
            return conv_ops.fft_conv(u, k, causal=True, bias=bias, backend=backend)
        blocks, left, shift = [], need, 1
        while left > 0:
            take = min(length, left)
            blocks.append(_from_previous(u[:, length - take:], axis, num, shift))
            left, shift = left - take, shift + 1
        history = jnp.concatenate(blocks[::-1], axis=1)  # oldest first
        return conv_ops.fft_conv(u, k, causal=True, bias=bias, history=history, backend=backend)

    heads = split.heads(u.shape[2])
    spec = P(split.batch, axis, heads)
    args, in_specs = (u, k), (spec, P(None, heads))
    if bias is not None:
        args, in_specs = args + (bias,), in_specs + (P(heads),)
    return _shard_map(local, split, in_specs, spec)(*args)


# ----------------------------------------------------------------------------- linear attention


def _gated(op, q, k, v, g, segment_ids, split, method, name):
    """Shared driver of the ``S = diag(exp g) S + k^T v`` ops; ``op(q, k, v, g, init, seg) -> o``."""
    split = _split(split)
    _shard_length(name, q.shape[1], split)
    axis, num = split.axis, split.size
    seg_args = _segment_arg(segment_ids, q.shape[1])
    floor = math.log(float(jnp.finfo(jnp.float32).tiny))

    def local(q, k, v, g, *seg):
        seg = seg[0] if seg else None
        batch, time = q.shape[:2]
        gf = jnp.maximum(g.astype(jnp.float32), floor)  # the ops' own floor (a full forget stays finite)
        runs = _runs(seg, batch, time)
        last = (runs == runs[:, -1:]).astype(jnp.float32)[..., None, None]
        weight = jnp.exp(_suffix_after(gf)) * last  # [b, t, h, dk or 1]: decay of token t to the shard's end
        state = jnp.einsum("bthk,bthv->bhkv", k.astype(jnp.float32) * weight, v.astype(jnp.float32), precision=_HI)
        transition = jnp.exp(jnp.sum(gf, axis=1))  # [b, h, dk or 1]
        carry, clean = _edges(seg, axis, num, batch)
        transition = transition * _rows(carry & clean, transition)
        entering = incoming_state(transition, state, axis=axis, num=num, method=method)
        return op(q, k, v, g, entering * _rows(carry, entering), seg)

    heads = split.heads(q.shape[2])
    spec = P(split.batch, axis, heads, None)
    in_specs = (spec,) * 4 + ((P(split.batch, axis),) if seg_args else ())
    return _shard_map(local, split, in_specs, spec)(q, k, v, g, *seg_args)


def gla(q, k, v, g, *, scale=None, segment_ids=None, mode=None, chunk_size: int = 64, backend: str = "auto",
        split: Optional[SequenceParallel] = None, method: str = "all_gather"):
    """:func:`sequax.ops.linear_attention.gla` with the length split over the sequence axis.

    Shapes as there: ``q``, ``k``, ``g`` ``[batch, length, heads, dk]``, ``v``
    ``[batch, length, heads, dv]``; returns ``o`` ``[batch, length, heads, dv]``.
    Communication per device: one ``[batch, heads, dk, dv]`` state and one
    ``[batch, heads, dk]`` transition.
    """

    def op(q, k, v, g, init, seg):
        return la_ops.gla(q, k, v, g, scale=scale, initial_state=init, segment_ids=seg, mode=mode,
                          chunk_size=chunk_size, backend=backend)

    return _gated(op, q, k, v, g, segment_ids, split, method, "gla")


def retention(q, k, v, log_decay, *, scale=None, segment_ids=None, mode=None, chunk_size: int = 64,
              backend: str = "auto", split: Optional[SequenceParallel] = None, method: str = "all_gather"):
    """:func:`sequax.ops.linear_attention.retention` with the length split over the sequence axis.

    ``q``, ``k`` ``[batch, length, heads, dk]``, ``v`` ``[batch, length,
    heads, dv]``, ``log_decay`` ``[heads]`` (a constant); returns ``[batch,
    length, heads, dv]``. Communication per device: one state and ``[batch, heads, 1]``.
    """
    log_decay = jnp.asarray(log_decay, jnp.float32)
    g = jnp.broadcast_to(log_decay[:, None], q.shape[:3] + (1,))

    def op(q, k, v, g, init, seg):  # g[0, 0, :, 0]: this shard's heads' log decays
        return la_ops.retention(q, k, v, g[0, 0, :, 0], scale=scale, initial_state=init, segment_ids=seg,
                                mode=mode, chunk_size=chunk_size, backend=backend)

    return _gated(op, q, k, v, g, segment_ids, split, method, "retention")


def delta_rule(q, k, v, beta, *, scale=None, segment_ids=None, mode=None, chunk_size: int = 64,
               backend: str = "auto", split: Optional[SequenceParallel] = None, method: str = "all_gather"):
    """:func:`sequax.ops.linear_attention.delta_rule` with the length split over the sequence axis.

    ``q``, ``k`` ``[batch, length, heads, dk]``, ``v`` ``[batch, length, heads,
    dv]``, ``beta`` ``[batch, length, heads]``; returns ``[batch, length,
    heads, dv]``. Communication per device: one ``[batch, heads, dk, dv]``
    state and one ``[batch, heads, dk, dk]`` transition.
    """
    split = _split(split)
    _shard_length("delta_rule", q.shape[1], split)
    axis, num = split.axis, split.size
    seg_args = _segment_arg(segment_ids, q.shape[1])
    opts = dict(scale=scale, mode=mode, chunk_size=chunk_size, backend=backend)

    def local(q, k, v, beta, *seg):
        seg = seg[0] if seg else None
        batch, _, heads, dk = k.shape
        dv = v.shape[-1]
        # One run from [0, I] on [v, 0]: the zero columns end as S, the identity columns as T.
        eye = jnp.broadcast_to(jnp.eye(dk, dtype=jnp.float32), (batch, heads, dk, dk))
        start = jnp.concatenate([jnp.zeros((batch, heads, dk, dv), jnp.float32), eye], axis=-1)
        v_aug = jnp.concatenate([v, jnp.zeros(v.shape[:3] + (dk,), v.dtype)], axis=-1)
        _, summary = la_ops.delta_rule(q, k, v_aug, beta, initial_state=start, return_state=True,
                                       segment_ids=seg, **opts)
        state, transition = summary[..., :dv], summary[..., dv:]
        carry, clean = _edges(seg, axis, num, batch)
        transition = transition * _rows(carry & clean, transition)
        entering = incoming_state(transition, state, axis=axis, num=num, apply=_matrix,
                                  compose=_compose_matrix, method=method)
        return la_ops.delta_rule(q, k, v, beta, initial_state=entering * _rows(carry, entering),
                                 segment_ids=seg, **opts)

    heads = split.heads(q.shape[2])
    spec = P(split.batch, axis, heads, None)
    in_specs = (spec, spec, spec, P(split.batch, axis, heads)) + ((P(split.batch, axis),) if seg_args else ())
    return _shard_map(local, split, in_specs, spec)(q, k, v, beta, *seg_args)


# ----------------------------------------------------------------------------- scans


def linear_scan(a, b, *, segment_ids=None, mode=None, chunk_size=None, backend: str = "auto",
                split: Optional[SequenceParallel] = None, method: str = "all_gather"):
    """:func:`sequax.ops.scan.linear_scan` (forward, no initial state) split over the sequence axis.

    ``a`` broadcastable to ``b`` ``[batch, length, ...]`` (size-1 batch or
    length axes are kept, not materialised); returns all states ``[batch,
    length, ...]``. Communication per device: one ``[batch, ...]`` state and
    one transition.
    """
    split = _split(split)
    length = _shard_length("linear_scan", b.shape[1], split)
    axis, num = split.axis, split.size
    seg_args = _segment_arg(segment_ids, b.shape[1])
    a = jnp.asarray(a)
    a_spec = P(split.batch if a.shape[0] > 1 else None, axis if a.shape[1] > 1 else None)
    opts = dict(mode=mode, chunk_size=chunk_size, backend=backend)

    def local(a, b, *seg):
        seg = seg[0] if seg else None
        _, state = _linear_scan(a, b, segment_ids=seg, return_state=True, **opts)
        product = a[:, 0] ** length if a.shape[1] == 1 else jnp.prod(a, axis=1)  # time-invariant: a^length
        transition = jnp.broadcast_to(product, state.shape).astype(state.dtype)
        carry, clean = _edges(seg, axis, num, b.shape[0])
        transition = transition * _rows(carry & clean, transition)
        entering = incoming_state(transition, state, axis=axis, num=num, method=method)
        return _linear_scan(a, b, initial_state=entering * _rows(carry, entering), segment_ids=seg, **opts)

    spec = P(split.batch, axis)
    in_specs = (a_spec, spec) + ((spec,) if seg_args else ())
    return _shard_map(local, split, in_specs, spec)(a, b, *seg_args)


def s5_apply(Lambda_bar, B_bar, C_tilde, D, u, *, segment_ids=None, mode=None, chunk_size=None,
             backend: str = "auto", split: Optional[SequenceParallel] = None, method: str = "all_gather"):
    """Causal :func:`sequax.ops.ssm.s5.s5_apply` with its scan split over the sequence axis.

    ``Lambda_bar`` ``[P2]``, ``B_bar`` ``[P2, H]``, ``C_tilde`` ``[H, P2]``,
    ``D`` ``[H]``, ``u`` ``[batch, L, H]`` -> ``y`` ``[batch, L, H]``. The
    projections run on the global arrays (XLA keeps them shard-local); only
    :func:`linear_scan` communicates (one ``[batch, P2]`` complex state).
    """
    uf = u.astype(jnp.float32)
    Bu = jnp.einsum("ph,blh->blp", B_bar.astype(jnp.complex64), uf.astype(jnp.complex64), precision=_HI)
    a = Lambda_bar.astype(jnp.complex64)[None, None, :]
    x = linear_scan(a, Bu, segment_ids=segment_ids, mode=mode, chunk_size=chunk_size, backend=backend,
                    split=split, method=method)
    Cx = jnp.einsum("hp,blp->blh", C_tilde.astype(jnp.complex64), x, precision=_HI)
    return (2 * Cx.real + jnp.asarray(D, jnp.float32) * uf).astype(u.dtype)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus: bool = False, *,
                   segment_ids=None, mode=None, chunk_size=None, backend: str = "auto",
                   split: Optional[SequenceParallel] = None, method: str = "all_gather"):
    """:func:`sequax.ops.ssm.selective.selective_scan` (no initial state) split over the sequence axis.

    Shapes as there: ``u``, ``delta``, ``z`` ``[batch, length, channels]``,
    ``A`` ``[channels, state]``, ``B``, ``C`` ``[batch, length, state]`` (or
    ``[..., groups, state]``), ``D``, ``delta_bias`` ``[channels]``; returns
    ``y`` ``[batch, length, channels]``. Each shard scans once for its
    summary (final state from zero; the transition is ``exp(A sum dt)``) and
    rescans from the state entering it. Channels are split over the head axis
    when it divides them and ``B``, ``C`` are shared by all channels.
    Communication per device: one ``[batch, channels, state]`` state and transition.
    """
    split = _split(split)
    _shard_length("selective_scan", u.shape[1], split)
    axis, num = split.axis, split.size
    seg_args = _segment_arg(segment_ids, u.shape[1])
    opts = dict(mode=mode, chunk_size=chunk_size, backend=backend)
    extras = {name: x for name, x in (("D", D), ("z", z), ("delta_bias", delta_bias)) if x is not None}

    def local(u, delta, A, B, C, extras, *seg):
        seg = seg[0] if seg else None
        bias = extras.get("delta_bias")
        scan = dict(delta_bias=bias, delta_softplus=delta_softplus, segment_ids=seg, **opts)
        _, state = _selective_scan(u, delta, A, B, C, return_state=True, **scan)
        dt = delta.astype(jnp.float32) + (0.0 if bias is None else bias.astype(jnp.float32))
        dt = jax.nn.softplus(dt) if delta_softplus else dt
        transition = jnp.exp(A.astype(jnp.float32)[None] * jnp.sum(dt, axis=1)[..., None])  # [b, d, n]
        carry, clean = _edges(seg, axis, num, u.shape[0])
        transition = transition * _rows(carry & clean, transition)
        entering = incoming_state(transition, state, axis=axis, num=num, method=method)
        return _selective_scan(
            u, delta, A, B, C, extras.get("D"), extras.get("z"),
            initial_state=entering * _rows(carry, entering), **scan,
        )

    heads = split.heads(u.shape[2]) if B.ndim == 3 else None
    seq = P(split.batch, axis, heads)
    bc = P(split.batch, axis)
    vector = P(heads)
    extra_specs = {name: (seq if name == "z" else vector) for name in extras}
    in_specs = (seq, seq, P(heads, None), bc, bc, extra_specs) + ((bc,) if seg_args else ())
    return _shard_map(local, split, in_specs, seq)(u, delta, A, B, C, extras, *seg_args)


def ssd(x, dt, A, B, C, *, chunk_size=_SSD_CHUNK, D=None, segment_ids=None, mode=None,
        backend: str = "auto", split: Optional[SequenceParallel] = None, method: str = "all_gather"):
    """:func:`sequax.ops.ssm.ssd.ssd` (no initial state) split over the sequence axis.

    Shapes as there: ``x`` ``[batch, length, heads, head_dim]``, ``dt``
    ``[batch, length, heads]``, ``A``/``D`` ``[heads]``, ``B``, ``C``
    ``[batch, length, groups, state]``; returns ``[batch, length, heads,
    head_dim]``. Communication per device: one ``[batch, heads, head_dim,
    state]`` state and one ``[batch, heads]`` transition.
    """
    split = _split(split)
    _shard_length("ssd", x.shape[1], split)
    axis, num = split.axis, split.size
    seg_args = _segment_arg(segment_ids, x.shape[1])
    heads_n, groups = x.shape[2], B.shape[2]
    heads = split.heads(heads_n)
    if heads is not None and groups > 1 and groups % split.mesh.shape[heads]:
        heads = None
    group_axis = heads if groups > 1 else None
    has_d = D is not None

    def local(x, dt, A, B, C, *rest):
        D, seg = (rest[0], rest[1:]) if has_d else (None, rest)
        seg = seg[0] if seg else None
        batch, time, h = dt.shape
        a = dt.astype(jnp.float32) * A.astype(jnp.float32)  # [b, t, h] log decay per step
        runs = _runs(seg, batch, time)
        last = (runs == runs[:, -1:]).astype(jnp.float32)[..., None]
        weight = jnp.exp(_suffix_after(a)) * dt.astype(jnp.float32) * last
        Bh = jnp.repeat(B.astype(jnp.float32), h // B.shape[2], axis=2)
        state = jnp.einsum("bth,bthp,bthn->bhpn", weight, x.astype(jnp.float32), Bh, precision=_HI)
        transition = jnp.exp(jnp.sum(a, axis=1))  # [b, h]
        carry, clean = _edges(seg, axis, num, batch)
        transition = transition * _rows(carry & clean, transition)
        entering = incoming_state(transition, state, axis=axis, num=num, method=method)
        return _ssd(x, dt, A, B, C, chunk_size=chunk_size, D=D, segment_ids=seg, mode=mode, backend=backend,
                           initial_state=entering * _rows(carry, entering))

    spec = P(split.batch, axis, heads, None)
    bc = P(split.batch, axis, group_axis, None)
    args = (x, dt, A, B, C) + ((D,) if has_d else ()) + seg_args
    in_specs = (spec, P(split.batch, axis, heads), P(heads), bc, bc) + ((P(heads),) if has_d else ())
    in_specs += (P(split.batch, axis),) if seg_args else ()
    return _shard_map(local, split, in_specs, spec)(*args)


# ----------------------------------------------------------------------------- inspection


def collectives(fn, *args, **kwargs):
    """The communication of ``fn(*args, **kwargs)`` as traced: a list of ``(primitive, shape, dtype)``,
    one per operand of every collective (``all_gather``, ``ppermute``, ``psum``, ``all_to_all``, ...)
    each time it runs, in nested jaxprs too (``shard_map``, ``cond``, ``custom_vjp``; a ``scan`` body's
    once per iteration). Shapes are per device: what each device sends. Collectives XLA adds when it
    partitions the program (gradient all-reduces of replicated parameters) are not in the jaxpr."""
    found = []

    def walk(jaxpr, times):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in COLLECTIVES:
                for var in eqn.invars:
                    aval = var.aval
                    found.extend([(eqn.primitive.name, tuple(aval.shape), str(aval.dtype))] * times)
            inner_times = times * int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else times
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner, inner_times)

    walk(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr, 1)
    return found


def communicated_bytes(fn, *args, **kwargs):
    """``{primitive: bytes}`` each device sends when ``fn(*args, **kwargs)`` runs (:func:`collectives`)."""
    out = {}
    for name, shape, dtype in collectives(fn, *args, **kwargs):
        size = math.prod(shape) * jnp.dtype(dtype).itemsize
        out[name] = out.get(name, 0) + size
    return out


__all__ = [
    "METHODS", "causal_conv1d", "collectives", "communicated_bytes", "delta_rule", "fft_conv", "gla", "incoming_state", "linear_scan",
    "retention", "s5_apply", "selective_scan", "ssd",
]
