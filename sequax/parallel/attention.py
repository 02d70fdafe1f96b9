"""Sequence-parallel attention: ring attention and all-to-all (Ulysses) attention.

Both run inside ``shard_map`` over a mesh axis that splits the sequence
(``sequence``); :func:`sequence_parallel_attention` wraps either in
``shard_map`` for arrays laid out ``[batch, length, heads, head_dim]`` with the
length sharded contiguously over that axis.

**Ring attention** (Liu et al., 2023). Each of the ``P`` devices keeps its
queries and passes its keys and values around the ring with ``ppermute``; at
each step it attends to the visiting block with ``attention(...,
return_lse=True)`` (any backend: the Pallas kernel where present) and merges
the partial results by their log-sum-exp (:func:`combine_attention`). Masks
come from explicit positions and segment ids, which travel with the keys, so
causal, sliding-window, sink, GQA and packed-segment attention all work, and a
visiting block that no local query can see is skipped (a window skips most of
the ring). With ``layout="zigzag"`` (the default for causal attention) device
``i`` computes on sequence chunks ``i`` and ``2P - 1 - i`` of ``2P``, so under
a causal mask every device does the same number of chunk-pair blocks
(``2P + 1``); the re-layout costs two ``ppermute`` of the local block each way.
The backward pass is a second trip round the ring (``jax.custom_vjp``): each
step recomputes its block's attention and sends the key/value gradients on
with the keys and values, so no device ever keeps more than one visiting block.

**All-to-all attention** (Ulysses, Jacobs et al., 2023): an ``all_to_all``
turns the sequence-sharded ``q, k, v`` into head-sharded full sequences, the
local attention runs on ``heads / P`` heads, and a second ``all_to_all`` turns
the output back. ``heads`` must be a multiple of ``P`` (key/value heads are
repeated up to a multiple of ``P`` when they are fewer).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from sequax.ops.attention import attention, combine_attention, normalize_window

STRATEGIES = ("ring", "all_to_all")
LAYOUTS = ("contiguous", "zigzag")


def _shard_map(f, mesh, in_specs, out_specs):
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


# ----------------------------------------------------------------------------
# Zigzag layout: device i holds chunks (i, 2P-1-i) of 2P, instead of (2i, 2i+1).
# ----------------------------------------------------------------------------


def _zigzag_owner(chunk, num):
    return chunk if chunk < num else 2 * num - 1 - chunk


def _relayout(x, axis_name, num, axis, to_zigzag):
    """Exchange half-blocks so a contiguous shard becomes a zigzag one (or back)."""
    first, second = jnp.split(x, 2, axis=axis)
    if to_zigzag:
        # The first half of device d is chunk 2d, the second chunk 2d + 1.
        perm_a = [(d, _zigzag_owner(2 * d, num)) for d in range(num)]
        perm_b = [(d, _zigzag_owner(2 * d + 1, num)) for d in range(num)]
        got_a = jax.lax.ppermute(first, axis_name, perm_a)  # holds chunk src*2
        got_b = jax.lax.ppermute(second, axis_name, perm_b)
        # Device d keeps chunk d (early) first and 2P-1-d (late) second; the
        # even chunk it received is the early one iff d is even.
        even = jax.lax.axis_index(axis_name) % 2 == 0
        early = jnp.where(even, got_a, got_b)
        late = jnp.where(even, got_b, got_a)
        return jnp.concatenate([early, late], axis=axis)
    # Back: the early chunk d goes to device d // 2, the late chunk 2P-1-d to (2P-1-d) // 2.
    d_even = jax.lax.axis_index(axis_name) % 2 == 0
    send_even = jnp.where(d_even, first, second)  # the even-numbered chunk this device holds
    send_odd = jnp.where(d_even, second, first)
    perm_even = [(d, (d if d % 2 == 0 else 2 * num - 1 - d) // 2) for d in range(num)]
    perm_odd = [(d, (2 * num - 1 - d if d % 2 == 0 else d) // 2) for d in range(num)]
    even_chunk = jax.lax.ppermute(send_even, axis_name, perm_even)
    odd_chunk = jax.lax.ppermute(send_odd, axis_name, perm_odd)
    return jnp.concatenate([even_chunk, odd_chunk], axis=axis)


def zigzag_positions(length: int, num: int):
    """Global positions ``[num, length // num]`` of the tokens each device holds in zigzag layout."""
    chunks = np.arange(length).reshape(2 * num, length // (2 * num))
    return np.stack([np.concatenate([chunks[d], chunks[2 * num - 1 - d]]) for d in range(num)])


# ----------------------------------------------------------------------------
# Ring attention (inside shard_map)
# ----------------------------------------------------------------------------


def _may_see(q_pos, k_pos, q_seg, k_seg, causal, window, num_sinks):
    """Cheap bound: can any query of this block see any key of the visiting block?"""
    k_valid = k_pos >= 0
    k_min = jnp.min(jnp.where(k_valid, k_pos, jnp.iinfo(jnp.int32).max))
    k_max = jnp.max(jnp.where(k_valid, k_pos, -1))
    q_min, q_max = jnp.min(q_pos), jnp.max(q_pos)
    ok = k_max >= 0
    if causal:
        ok &= k_min <= q_max
    if window is not None:
        left, right = window
        in_window = (k_max >= q_min - left) & (k_min <= q_max + right)
        ok &= in_window | (k_min < num_sinks) if num_sinks else in_window
    if q_seg is not None:
        ok &= (jnp.min(k_seg) <= jnp.max(q_seg)) & (jnp.max(k_seg) >= jnp.min(q_seg))
    return ok


def _parts(x, num_parts, axis=1):
    return jnp.split(x, num_parts, axis=axis) if num_parts > 1 else [x]


def _ring_forward(q, k, v, q_pos, k_pos, q_seg, k_seg, *, axis_name, num, opts):
    """Returns ``(out float32 [b, q, h, d], lse [b, h, q], blocks_computed)``.

    The local queries and each visiting block are cut into ``opts["parts"]``
    chunks (2 in the zigzag layout); every (query chunk, key chunk) pair is a
    block, computed unless no query of it can see any of its keys. The ring is
    a ``lax.scan`` over the ``num`` steps; each step starts passing its block
    on before it computes, so the transfer overlaps the attention.
    """
    parts = opts["parts"]
    qs = list(zip(_parts(q, parts), _parts(q_pos, parts), _parts(q_seg, parts) if q_seg is not None else [None] * parts))
    perm = [(i, (i + 1) % num) for i in range(num)]

    def step(carry, _):
        outs, lses, count, kv = carry
        nxt = jax.tree_util.tree_map(lambda x: jax.lax.ppermute(x, axis_name, perm), kv)
        k_b, v_b, kp_b, ks_b = kv
        kvs = list(zip(_parts(k_b, parts), _parts(v_b, parts), _parts(kp_b, parts),
                       _parts(ks_b, parts) if ks_b is not None else [None] * parts))
        outs, lses = list(outs), list(lses)
        for i, (qq, qp, qsg) in enumerate(qs):
            for kk, vv, kp, ksg in kvs:
                part_out, part_lse, n = _attend_block(qq, qp, qsg, kk, vv, kp, ksg, opts)
                outs[i], lses[i] = combine_attention(outs[i], lses[i], part_out, part_lse)
                count = count + n
        return (tuple(outs), tuple(lses), count, nxt), None

    outs = tuple(jnp.zeros(qq.shape[:3] + v.shape[-1:], jnp.float32) for qq, _, _ in qs)
    lses = tuple(jnp.full((qq.shape[0], qq.shape[2], qq.shape[1]), -jnp.inf, jnp.float32) for qq, _, _ in qs)
    init = (outs, lses, jnp.zeros((), jnp.int32), (k, v, k_pos, k_seg))
    (outs, lses, count, _), _ = jax.lax.scan(step, init, None, length=num)
    return jnp.concatenate(outs, axis=1), jnp.concatenate(lses, axis=2), count


def _attend_block(q, q_pos, q_seg, k, v, k_pos, k_seg, opts):
    """Attention of a query chunk over one key chunk, skipped when nothing is visible."""
    batch, q_len, heads = q.shape[:3]

    def compute(_):
        out, lse = _local_attention(q, k, v, q_pos, k_pos, q_seg, k_seg, opts)
        return out.astype(jnp.float32), lse, jnp.ones((), jnp.int32)

    def skip(_):
        return (jnp.zeros((batch, q_len, heads, v.shape[-1]), jnp.float32),
                jnp.full((batch, heads, q_len), -jnp.inf, jnp.float32), jnp.zeros((), jnp.int32))

    return jax.lax.cond(_visible(q_pos, k_pos, q_seg, k_seg, opts), compute, skip, None)


def _visible(q_pos, k_pos, q_seg, k_seg, opts):
    return _may_see(q_pos, k_pos, q_seg, k_seg, opts["causal"], opts["window"], opts["num_sinks"])


def _local_attention(q, k, v, q_pos, k_pos, q_seg, k_seg, opts):
    segments = None if q_seg is None else (q_seg, k_seg)
    return attention(
        q, k, v, causal=opts["causal"], window=opts["window"], num_sinks=opts["num_sinks"],
        segment_ids=segments, positions=(q_pos, k_pos), scale=opts["scale"], softcap=opts["softcap"],
        bias=opts["bias"], backend=opts["backend"], block_size=opts["block_size"], return_lse=True,
    )


def _block_grads(q, q_pos, q_seg, k, v, k_pos, k_seg, out, lse, d_out, delta, d_lse, opts):
    """Gradients of one block's share of the output (zeros when it is invisible).

    Softmax over the union: a block's part enters as ``w * out_b`` with ``w =
    exp(lse_b - lse)``, so its output cotangent is ``w * d_out`` and its lse
    cotangent ``w * (<d_out, out_b> - <d_out, out> + d_lse)``.
    """

    def grads(_):
        f = lambda q_, k_, v_: _local_attention(q_, k_, v_, q_pos, k_pos, q_seg, k_seg, opts)  # noqa: E731
        (out_b, lse_b), vjp = jax.vjp(f, q, k, v)
        safe = jnp.where(jnp.isfinite(lse), lse, 0.0)
        w = jnp.where(jnp.isfinite(lse_b), jnp.exp(lse_b - safe), 0.0)
        dots = jnp.einsum("bqhd,bqhd->bhq", d_out, out_b.astype(jnp.float32))
        cot_out = (jnp.swapaxes(w, 1, 2)[..., None] * d_out).astype(out_b.dtype)
        dq, dk, dv = vjp((cot_out, w * (dots - delta + d_lse)))
        return dq.astype(jnp.float32), dk.astype(jnp.float32), dv.astype(jnp.float32)

    def skip(_):
        return (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32),
                jnp.zeros(v.shape, jnp.float32))

    return jax.lax.cond(_visible(q_pos, k_pos, q_seg, k_seg, opts), grads, skip, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _ring(q, k, v, q_pos, k_pos, q_seg, k_seg, axis_name, num, opts_key):
    return _ring_fwd(q, k, v, q_pos, k_pos, q_seg, k_seg, axis_name, num, opts_key)[0]


def _ring_fwd(q, k, v, q_pos, k_pos, q_seg, k_seg, axis_name, num, opts_key):
    out, lse, _ = _ring_forward(q, k, v, q_pos, k_pos, q_seg, k_seg, axis_name=axis_name, num=num,
                                opts=dict(opts_key))
    out = out.astype(q.dtype)
    return (out, lse), (q, k, v, q_pos, k_pos, q_seg, k_seg, out, lse)


def _ring_bwd(axis_name, num, opts_key, res, cotangents):
    q, k, v, q_pos, k_pos, q_seg, k_seg, out, lse = res
    d_out, d_lse = cotangents
    opts = dict(opts_key)
    parts = opts["parts"]
    d_out = d_out.astype(jnp.float32)
    delta = jnp.einsum("bqhd,bqhd->bhq", d_out, out.astype(jnp.float32))
    no_seg = [None] * parts
    qs = list(zip(_parts(q, parts), _parts(q_pos, parts), _parts(q_seg, parts) if q_seg is not None else no_seg,
                  _parts(out, parts), _parts(lse, parts, 2), _parts(d_out, parts), _parts(delta, parts, 2),
                  _parts(d_lse, parts, 2)))
    perm = [(i, (i + 1) % num) for i in range(num)]

    def step(carry, _):
        dqs, travel = carry
        k_b, v_b, kp_b, ks_b, dk_acc, dv_acc = travel
        kvs = list(zip(_parts(k_b, parts), _parts(v_b, parts), _parts(kp_b, parts),
                       _parts(ks_b, parts) if ks_b is not None else no_seg))
        dqs = list(dqs)
        dks = [jnp.zeros(kk.shape, jnp.float32) for kk, _, _, _ in kvs]
        dvs = [jnp.zeros(vv.shape, jnp.float32) for _, vv, _, _ in kvs]
        for i, (qq, qp, qsg, oo, ll, do, dl, dlse) in enumerate(qs):
            for j, (kk, vv, kp, ksg) in enumerate(kvs):
                dq_b, dk_b, dv_b = _block_grads(qq, qp, qsg, kk, vv, kp, ksg, oo, ll, do, dl, dlse, opts)
                dqs[i] = dqs[i] + dq_b
                dks[j] = dks[j] + dk_b
                dvs[j] = dvs[j] + dv_b
        travel = (k_b, v_b, kp_b, ks_b, dk_acc + jnp.concatenate(dks, 1), dv_acc + jnp.concatenate(dvs, 1))
        # Everything moves on; after num moves the gradients are back with their block's owner.
        travel = jax.tree_util.tree_map(lambda x: jax.lax.ppermute(x, axis_name, perm), travel)
        return (tuple(dqs), travel), None

    dqs = tuple(jnp.zeros(x[0].shape, jnp.float32) for x in qs)
    travel = (k, v, k_pos, k_seg, jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    (dqs, travel), _ = jax.lax.scan(step, (dqs, travel), None, length=num)
    dk, dv = travel[4], travel[5]

    def no_grad(x):
        return None if x is None else np.zeros(x.shape, jax.dtypes.float0)

    return (jnp.concatenate(dqs, 1).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype),
            no_grad(q_pos), no_grad(k_pos), no_grad(q_seg), no_grad(k_seg))


_ring.defvjp(_ring_fwd, _ring_bwd)


def _freeze_opts(opts):
    """Options as a hashable tuple (custom_vjp's non-differentiable argument)."""
    return tuple(sorted(opts.items()))


def ring_attention(q, k, v, *, axis_name: str, positions, segment_ids=None, causal=False, window=None,
                   num_sinks=0, scale=None, softcap=None, bias=None, backend="auto", block_size=512,
                   parts=1, return_lse=False, debug_block_count=False):
    """Ring attention over ``axis_name``; call inside ``shard_map``.

    Args:
      q: local queries ``[batch, q_len, heads, head_dim]``.
      k, v: local keys/values ``[batch, kv_len, kv_heads, head_dim]``.
      axis_name: the mesh axis the sequence is split over.
      positions: ``(q_positions, kv_positions)`` int32 ``[batch or 1, len]``:
        the global positions of the local tokens (masks use them).
      segment_ids: ``(q_segment_ids, kv_segment_ids)`` ``[batch, len]`` or None.
      causal, window, num_sinks, scale, softcap, bias, backend, block_size: as
        in :func:`sequax.ops.attention.attention` (``bias`` a function of positions).
      parts: the local block is this many chunks (2 in the zigzag layout); each
        (query chunk, key chunk) pair is computed or skipped on its own.
      return_lse: also return the log-sum-exp ``[batch, heads, q_len]``.
      debug_block_count: also return how many visiting blocks this device
        computed (the rest were skipped as invisible); forward only.

    Returns:
      ``out`` like ``q`` (and ``lse`` / the block count when asked).
    """
    num = jax.lax.axis_size(axis_name)
    q_pos, k_pos = (jnp.broadcast_to(jnp.asarray(p, jnp.int32), (q.shape[0], x.shape[1]))
                    for p, x in zip(positions, (q, k)))
    q_seg, k_seg = (None, None) if segment_ids is None else segment_ids
    opts = dict(causal=causal, window=normalize_window(window), num_sinks=int(num_sinks), scale=scale,
                softcap=softcap, bias=bias, backend=backend, block_size=block_size, parts=int(parts))
    if debug_block_count:
        out, lse, count = _ring_forward(q, k, v, q_pos, k_pos, q_seg, k_seg, axis_name=axis_name,
                                        num=num, opts=opts)
        return out.astype(q.dtype), lse, count
    out, lse = _ring(q, k, v, q_pos, k_pos, q_seg, k_seg, axis_name, num, _freeze_opts(opts))
    return (out, lse) if return_lse else out


# ----------------------------------------------------------------------------
# All-to-all (Ulysses) attention (inside shard_map)
# ----------------------------------------------------------------------------


def all_to_all_attention(q, k, v, *, axis_name: str, segment_ids=None, **options):
    """Ulysses attention over ``axis_name``; call inside ``shard_map``.

    Args:
      q: local queries ``[batch, length / P, heads, head_dim]`` (a contiguous
        sequence shard); ``heads % P == 0``.
      k, v: ``[batch, length / P, kv_heads, head_dim]``.
      segment_ids: the local ``[batch, length / P]`` ids, or None.
      options: passed to :func:`sequax.ops.attention.attention` (``causal``,
        ``window``, ``num_sinks``, ``softcap``, ``bias``, ``backend``, ...).

    Returns:
      The local output ``[batch, length / P, heads, head_dim]``.
    """
    num = jax.lax.axis_size(axis_name)
    heads, kv_heads = q.shape[2], k.shape[2]
    if heads % num:
        raise ValueError(
            f"all-to-all attention needs heads ({heads}) to be a multiple of the sequence axis size "
            f"({num}); use sequence_parallel='ring' or change num_heads"
        )
    if kv_heads % num:  # repeat kv heads so every device gets the ones its q heads use
        rep = heads // kv_heads if heads % kv_heads == 0 else 1
        k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    to_heads = functools.partial(jax.lax.all_to_all, axis_name=axis_name, split_axis=2, concat_axis=1, tiled=True)
    q, k, v = to_heads(q), to_heads(k), to_heads(v)
    if segment_ids is not None:
        segment_ids = jax.lax.all_gather(segment_ids, axis_name, axis=1, tiled=True)
    out = attention(q, k, v, segment_ids=segment_ids, **options)
    return jax.lax.all_to_all(out, axis_name=axis_name, split_axis=1, concat_axis=2, tiled=True)


# ----------------------------------------------------------------------------
# The shard_map wrapper
# ----------------------------------------------------------------------------


def sequence_parallel_attention(q, k, v, *, mesh, strategy: str = "ring", axis: str = "sequence",
                                batch_axes=("data", "fsdp"), head_axis: Optional[str] = "tensor",
                                segment_ids=None, causal=False, layout: Optional[str] = None, **options):
    """Attention over arrays whose length is sharded over mesh axis ``axis``.

    Args:
      q: ``[batch, length, heads, head_dim]``; k, v ``[batch, length, kv_heads, head_dim]``,
        all laid out with ``length`` split contiguously over ``axis``.
      mesh: the ``jax.sharding.Mesh``.
      strategy: ``"ring"`` or ``"all_to_all"``.
      batch_axes, head_axis: mesh axes the batch and the heads are split over
        (those of size 1, or missing from the mesh, are ignored).
      segment_ids: ``[batch, length]`` or None.
      causal: causal masking.
      layout: ring only: ``"zigzag"`` (default when causal) balances causal work.
      options: ``window``, ``num_sinks``, ``scale``, ``softcap``, ``bias``,
        ``backend``, ``block_size`` as in :func:`sequax.ops.attention.attention`.

    Returns:
      ``[batch, length, heads, head_dim]`` laid out like ``q``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    num = mesh.shape[axis]
    length = q.shape[1]
    layout = layout or ("zigzag" if causal else "contiguous")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")
    chunks = 2 * num if layout == "zigzag" else num
    if length % chunks:
        raise ValueError(
            f"sequence length {length} must be a multiple of {chunks} for {strategy} attention over "
            f"{num} devices ({layout} layout); pad the sequence"
        )
    batch = tuple(a for a in batch_axes if a in mesh.shape and mesh.shape[a] > 1) or None
    heads = head_axis if head_axis in mesh.shape and mesh.shape[head_axis] > 1 else None
    spec = P(batch, axis, heads, None)
    seg_spec = P(batch, axis)
    has_seg = segment_ids is not None

    def local(q, k, v, *seg):
        seg = seg[0] if has_seg else None
        if strategy == "all_to_all":
            return all_to_all_attention(q, k, v, axis_name=axis, segment_ids=seg, causal=causal, **options)
        index = jax.lax.axis_index(axis)
        block = q.shape[1]
        if layout == "zigzag":
            q, k, v = (_relayout(x, axis, num, 1, True) for x in (q, k, v))
            seg = None if seg is None else _relayout(seg, axis, num, 1, True)
            half = block // 2
            pos = jnp.concatenate([index * half + jnp.arange(half), (2 * num - 1 - index) * half + jnp.arange(half)])
        else:
            pos = index * block + jnp.arange(block)
        pos = pos.astype(jnp.int32)[None]
        out = ring_attention(q, k, v, axis_name=axis, positions=(pos, pos),
                             segment_ids=None if seg is None else (seg, seg), causal=causal,
                             parts=2 if layout == "zigzag" else 1, **options)
        return _relayout(out, axis, num, 1, False) if layout == "zigzag" else out

    args = (q, k, v) + ((segment_ids,) if has_seg else ())
    in_specs = (spec, spec, spec) + ((seg_spec,) if has_seg else ())
    return _shard_map(local, mesh, in_specs, spec)(*args)


__all__ = [
    "STRATEGIES", "all_to_all_attention", "ring_attention", "sequence_parallel_attention", "zigzag_positions",
]
