"""Flash attention on Pallas kernels, with every mask of ``sequax.ops.attention``.

:func:`attention` has the op's signature (``sequax.ops.attention.attention``
calls it with validated, normalised arguments for ``backend="pallas"``);
:func:`flash_attention` is the direct entry point (block sizes, kernel
backend, interpret mode). :func:`why_not` says what the kernels cannot serve.

Pipeline: pad lengths to the blocks and head dims to a power of two (>= 16);
build the mask description (:class:`masks.MaskSpec`) and, once per call, the
compact lists of visible tiles per block size (:func:`masks.tile_lists`); run
the forward kernel (``o``, ``lse``). Backward (``jax.custom_vjp``): recompute
from ``q, k, v, o, lse`` (nothing ``[q_len, kv_len]``-sized is saved):
``delta = rowsum(do * o) - dlse`` in XLA, then the dq kernel and the dk/dv
kernel. GPUs run ``pallas_gpu`` (Triton), TPUs ``pallas_tpu`` (Mosaic), CPUs
the Triton kernels in interpret mode.

ALiBi is recognised on a bias callable that carries the attributes
``alibi_slopes`` (``[heads]`` floats) and ``alibi_max_distance`` (int or None),
promising ``bias(q_pos, k_pos) == -slopes[h] * min(|k_pos - q_pos|, cap)``;
the kernels then compute it from positions. Other callables, arrays, T5
buckets, ``score="softplus"`` and dropout stay on the XLA path.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.platform import platform as _platform
from pallas_kernels.flash_attention import masks, mosaic_gpu, mosaic_gpu_bwd, pallas_gpu
from pallas_kernels.flash_attention.block_sizes import block_sizes as table_block_sizes
from pallas_kernels.flash_attention.block_sizes import mosaic_gpu_backward as table_mgpu_backward
from pallas_kernels.flash_attention.block_sizes import prefer_mosaic_gpu as table_prefer_mosaic_gpu
from pallas_kernels.flash_attention.block_sizes import softcap_tanh as table_softcap_tanh
from pallas_kernels.flash_attention.masks import MaskSpec
from pallas_kernels.flash_attention.scores import LOG2E, ScoreSpec
from pallas_kernels.flash_attention.spec import KernelSpec

ALIBI_SLOPES_ATTR = "alibi_slopes"
ALIBI_CAP_ATTR = "alibi_max_distance"
DTYPES = (jnp.bfloat16, jnp.float16, jnp.float32)
MAX_HEAD_DIM = 256
MIN_BLOCK = 16
MAX_ELEMENTS = 1 << 31
BACKENDS = ("triton", "tpu", "mosaic_gpu")


def alibi_of(bias):
    """``(slopes [heads] float32, cap)`` when ``bias`` is an ALiBi callable (see module doc), else None."""
    slopes = getattr(bias, ALIBI_SLOPES_ATTR, None) if callable(bias) else None
    if slopes is None:
        return None
    return jnp.asarray(slopes, jnp.float32).reshape(-1), getattr(bias, ALIBI_CAP_ATTR, None)


def why_not(q, k, v, *, bias=None, score="softmax", dropout_rate=0.0, mode=None, block_mask=None,
            positions=None, **_) -> Optional[str]:
    """Why the kernels cannot serve these inputs (``None`` if they can)."""
    if mode is not None:
        return f"the pallas kernel runs one fused algorithm and takes mode=None, got mode={mode!r}"
    if score != "softmax":
        return f"the pallas kernel computes softmax attention only, got score={score!r}"
    if dropout_rate:
        return "the pallas kernel has no attention dropout (dropout_rate > 0)"
    if bias is not None:
        alibi = alibi_of(bias)
        if alibi is None:
            kind = "a bias array" if not callable(bias) else "a bias function other than ALiBi"
            return (f"the pallas kernel computes only ALiBi in-kernel, got {kind} (give an ALiBi callable "
                    f"the attributes {ALIBI_SLOPES_ATTR!r} and {ALIBI_CAP_ATTR!r})")
        if alibi[0].shape[0] != q.shape[2]:
            return f"ALiBi slopes must have one entry per head ({q.shape[2]}), got {alibi[0].shape[0]}"
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dtype not in DTYPES:
            return f"the pallas kernel takes bfloat16, float16 or float32 {name}, got {x.dtype}"
    if _platform() == "tpu" and q.dtype == jnp.float16:
        return "the TPU kernel takes bfloat16 or float32 inputs, got float16"
    if q.shape[-1] > MAX_HEAD_DIM or v.shape[-1] > MAX_HEAD_DIM:
        return f"the pallas kernel takes head dims up to {MAX_HEAD_DIM}, got {q.shape[-1]} / {v.shape[-1]}"
    if max(q.size, k.size, v.size) >= MAX_ELEMENTS:
        return "the pallas kernel indexes with int32 offsets: q, k and v must have < 2**31 elements each"
    if block_mask is not None:
        if positions is not None:
            return "the pallas kernel takes block_mask only with the default positions (positions=None)"
        if int(block_mask[1]) < MIN_BLOCK:
            return f"the pallas kernel needs a block_mask block_size >= {MIN_BLOCK}, got {block_mask[1]}"
    if _platform() not in ("cpu", "gpu", "tpu"):
        return f"no pallas flash attention for platform {jax.default_backend()!r}"
    return None


# ----------------------------------------------------------------------------
# Custom VJP over padded inputs
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
    backend: str  # "triton" | "tpu" | "mosaic_gpu" (Hopper kernels; see mgpu_backward)
    interpret: bool
    fwd: KernelSpec
    dq: KernelSpec
    dkdv: KernelSpec
    mgpu_backward: str = "triton"  # backend "mosaic_gpu": whose backward kernels ("mosaic_gpu" | "triton")


def _module(plan):
    if plan.backend == "tpu":
        from pallas_kernels.flash_attention import pallas_tpu
        return pallas_tpu
    return pallas_gpu


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, aux, plan):
    return _forward(q, k, v, aux, plan)


def _forward(q, k, v, aux, plan):
    if plan.backend == "mosaic_gpu":
        return mosaic_gpu.forward(q, k, v, plan.fwd, interpret=plan.interpret)
    lists = aux["lists"]["fwd"]
    return _module(plan).forward(q, k, v, aux, lists["order"], lists["counts"], plan.fwd, plan.interpret)


def _flash_fwd(q, k, v, aux, plan):
    o, lse = _forward(q, k, v, aux, plan)
    return (o, lse), (q, k, v, aux, o, lse)


def _flash_bwd(plan, res, cotangents):
    q, k, v, aux, o, lse = res
    do, dlse = cotangents
    do = do.astype(q.dtype)
    delta = jnp.einsum("blhd,blhd->bhl", do.astype(jnp.float32), o.astype(jnp.float32))
    delta = delta - jnp.where(jnp.isfinite(lse), dlse, 0.0)
    lse2 = jnp.where(jnp.isfinite(lse), lse * LOG2E, jnp.inf)
    if plan.backend == "mosaic_gpu" and plan.mgpu_backward == "mosaic_gpu":
        dq = mosaic_gpu_bwd.backward_dq(q, k, v, do, lse2, delta, plan.fwd, interpret=plan.interpret)
        dk, dv = mosaic_gpu_bwd.backward_dkdv(q, k, v, do, lse2, delta, plan.fwd, interpret=plan.interpret)
        return dq, dk, dv, None
    mod = _module(plan)
    dq_lists, kv_lists = aux["lists"]["dq"], aux["lists"]["dkdv"]
    dq = mod.backward_dq(q, k, v, do, lse2, delta, aux, dq_lists["order"], dq_lists["counts"], plan.dq,
                         plan.interpret)
    dk, dv = mod.backward_dkdv(q, k, v, do, lse2, delta, aux, kv_lists["order_t"], kv_lists["counts_t"],
                               plan.dkdv, plan.interpret)
    return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ----------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------


def _pow2_at_least(n, low=MIN_BLOCK):
    return max(low, 1 << max(0, int(n) - 1).bit_length())


def _pad_to(x, axis, size, value=0):
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _fit(row, q_len, kv_len, layout_block):
    """Shrink a row's blocks to the (power-of-two) lengths and to the layout block."""
    bq, bk = row[0], row[1]
    bq, bk = min(bq, _pow2_at_least(q_len)), min(bk, _pow2_at_least(kv_len))
    if layout_block is not None:
        cap = 1 << (int(layout_block).bit_length() - 1)  # largest power of two <= block
        bq, bk = min(bq, cap), min(bk, cap)
    return (bq, bk) + tuple(row[2:])


def _as_rows(pos, length):
    pos = jnp.asarray(pos).astype(jnp.int32)
    return (pos[None] if pos.ndim == 1 else pos).reshape(-1, length)


def _mask_arrays(positions, segment_ids, layout, alibi_slopes, *, batch, heads, q_len, kv_len, q_pad, kv_pad):
    """The kernels' O(length) mask inputs, padded: ``(aux dict, batched_positions)``.

    ``q_pos``/``k_pos`` ``[B', L_p]`` int32 (key padding ``-1``: empty),
    ``q_seg``/``k_seg`` ``[batch, L_p]``, the flattened ``layout`` and its
    ``layout_cols``, ALiBi ``slopes`` ``[heads]``.
    """
    aux = {"layout_cols": 0}
    batched_positions = False
    if positions is not None:
        q_pos, k_pos = _as_rows(positions[0], q_len), _as_rows(positions[1], kv_len)
        if q_pos.shape[0] != k_pos.shape[0]:
            q_pos = jnp.broadcast_to(q_pos, (batch, q_len))
            k_pos = jnp.broadcast_to(k_pos, (batch, kv_len))
        batched_positions = q_pos.shape[0] > 1
        aux["q_pos"] = _pad_to(q_pos, 1, q_pad)
        aux["k_pos"] = _pad_to(k_pos, 1, kv_pad, -1)
    if segment_ids is not None:
        aux["q_seg"] = _pad_to(jnp.asarray(segment_ids[0]).astype(jnp.int32), 1, q_pad)
        aux["k_seg"] = _pad_to(jnp.asarray(segment_ids[1]).astype(jnp.int32), 1, kv_pad)
    if layout is not None:
        aux["layout"], aux["layout_cols"] = masks.padded_layout(layout)
    if alibi_slopes is not None:
        aux["slopes"] = jnp.asarray(alibi_slopes, jnp.float32).reshape(heads)
    return aux, batched_positions


def flash_attention(q, k, v, *, causal=False, window=None, segment_ids=None, num_sinks=0, block_mask=None,
                    softcap=None, bias_fn=None, alibi_slopes=None, alibi_max_distance=None, scale=None,
                    return_lse=False, positions=None, block_sizes=None, backend=None, interpret=None):
    """Fused attention ``softmax(mask(softcap(scale * q k^T + alibi))) v`` on Pallas kernels.

    Args:
      q: ``[batch, q_len, heads, head_dim]`` bfloat16 / float16 / float32.
      k, v: ``[batch, kv_len, kv_heads, head_dim]`` (``heads % kv_heads == 0``;
        v may have its own head dim); head dims up to 256.
      causal, window, segment_ids, num_sinks, block_mask, softcap, scale,
        positions: as in :func:`sequax.ops.attention.attention` (``window`` an
        int or ``(left, right)``; ``segment_ids`` an array or a ``(q, kv)`` pair).
      bias_fn: an ALiBi callable carrying ``alibi_slopes`` / ``alibi_max_distance``
        (see the module doc); or pass ``alibi_slopes`` ``[heads]`` and
        ``alibi_max_distance`` directly.
      return_lse: also return ``lse`` ``[batch, heads, q_len]`` float32 (natural
        log; ``-inf`` for rows that see no key), for ``combine_attention``.
      block_sizes: ``{"fwd": row, "dq": row, "dkdv": row}`` overriding rows of
        :mod:`block_sizes` (Triton rows ``(block_q, block_k, num_warps,
        num_stages)``, TPU rows ``(block_q, block_k)``).
      backend: ``"triton"``, ``"tpu"`` or ``"mosaic_gpu"`` (Hopper: a wgmma/TMA forward with the
        Mosaic GPU or Triton backward (``block_sizes.MOSAIC_GPU_BACKWARD``), for plain causal or
        bidirectional attention with softcap, 16-bit
        inputs, head dim 64 or 128; interpreted on a CPU by Mosaic GPU's simulator); None picks
        the platform's: the TPU kernel on a TPU; on a GPU the Mosaic GPU kernels where they serve
        the call and ``block_sizes.PREFER_MOSAIC_GPU`` holds for the device (Hopper), else Triton.
      interpret: run the kernels in Pallas' interpret mode (default: on CPU).

    Returns:
      ``[batch, q_len, heads, v_head_dim]`` in q's dtype (rows that see no key
      are zeros), and ``lse`` with ``return_lse``.
    """
    if isinstance(window, (int, np.integer)):
        window = (int(window), 0)
    window = None if window is None else (int(window[0]), int(window[1]))
    if segment_ids is not None and not isinstance(segment_ids, (tuple, list)):
        segment_ids = (segment_ids, segment_ids)
    if bias_fn is not None:
        alibi = alibi_of(bias_fn)
        if alibi is None:
            raise ValueError(f"bias_fn must be an ALiBi callable with attribute {ALIBI_SLOPES_ATTR!r}")
        alibi_slopes, alibi_max_distance = alibi
    reason = why_not(q, k, v, block_mask=block_mask, positions=positions)
    if reason is not None:
        raise ValueError(f"flash_attention cannot serve these inputs: {reason}")
    platform = _platform()
    interpret = platform == "cpu" if interpret is None else bool(interpret)
    # backend=None on a Hopper GPU may become "mosaic_gpu" below, once the mask and score are known.
    # (Not with explicit block_sizes: those are Triton rows.)
    may_take_mosaic = (backend is None and platform == "gpu" and not interpret and not block_sizes
                       and table_prefer_mosaic_gpu())
    backend = backend or ("tpu" if platform == "tpu" else "triton")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (or None), got {backend!r}")

    batch, q_len, heads, head_dim = q.shape
    kv_len, kv_heads, v_dim = k.shape[1], k.shape[2], v.shape[-1]
    layout = None
    if block_mask is not None:
        layout, layout_block = block_mask[0], int(block_mask[1])
    rows = table_block_sizes(max(head_dim, v_dim), **(block_sizes or {}))
    rows = {name: _fit(row, q_len, kv_len, None if layout is None else layout_block) for name, row in rows.items()}
    q_pad = _pad_to_multiple(q_len, max(rows[n][0] for n in rows))
    kv_pad = _pad_to_multiple(kv_len, max(rows[n][1] for n in rows))

    mask = MaskSpec(causal=bool(causal), window=window, num_sinks=int(num_sinks),
                    segments=segment_ids is not None, layout_block=None if layout is None else layout_block,
                    explicit_positions=positions is not None, q_offset=kv_len - q_len, kv_len=kv_len)
    score = ScoreSpec(scale=float(head_dim**-0.5 if scale is None else scale),
                      softcap=None if softcap is None else float(softcap),
                      alibi=alibi_slopes is not None,
                      alibi_cap=None if alibi_max_distance is None else int(alibi_max_distance))
    if may_take_mosaic and mosaic_gpu.supported_here() and mosaic_gpu.why_not(mask, score, q.dtype, head_dim,
                                                                                v_dim) is None:
        backend = "mosaic_gpu"
    score = dataclasses.replace(score, tanh=_softcap_tanh(backend, interpret, q.dtype, softcap))
    if backend == "mosaic_gpu":
        reason = mosaic_gpu.why_not(mask, score, q.dtype, head_dim, v_dim)
        if reason is not None:
            raise ValueError(f"flash_attention(backend='mosaic_gpu') cannot serve these inputs: {reason}")
        q_pad = _pad_to_multiple(q_pad, 2 * mosaic_gpu.BLOCK_Q)
        kv_pad = _pad_to_multiple(kv_pad, mosaic_gpu.BLOCK_K)

    aux, batched_positions = _mask_arrays(positions, segment_ids, layout, alibi_slopes, batch=batch,
                                          heads=heads, q_len=q_len, kv_len=kv_len, q_pad=q_pad, kv_pad=kv_pad)
    layout_cols = aux.pop("layout_cols")
    specs = {}
    aux["lists"] = {}
    tiles = {}  # (block_q, block_k) -> masks.TileLists, shared by kernels with the same blocks
    for name in ("fwd", "dq", "dkdv"):
        bq, bk = rows[name][0], rows[name][1]
        if (bq, bk) not in tiles:
            tiles[(bq, bk)] = masks.tile_lists(
                mask, q_len_padded=q_pad, kv_len_padded=kv_pad, q_len=q_len, block_q=bq, block_k=bk,
                positions=(aux["q_pos"], aux["k_pos"]) if positions is not None else None,
                segments=(aux["q_seg"], aux["k_seg"]) if segment_ids is not None else None, layout=layout,
                transposed=(bq, bk) == tuple(rows["dkdv"][:2]))
        tl = tiles[(bq, bk)]
        by_key = name == "dkdv"
        aux["lists"][name] = ({"order_t": tl.order_t, "counts_t": tl.counts_t} if by_key
                              else {"order": tl.order, "counts": tl.counts})
        launch = dict(num_warps=rows[name][2], num_stages=rows[name][3]) if len(rows[name]) > 2 else {}
        specs[name] = KernelSpec(
            mask=mask, score=score, heads=heads, kv_heads=kv_heads, block_q=bq, block_k=bk,
            layout_cols=layout_cols, batched_lists=segment_ids is not None or batched_positions,
            batched_positions=batched_positions, reverse=mask.causal and not by_key,
            precise=q.dtype == jnp.float32, max_count=tl.max_count_t if by_key else tl.max_count, **launch)
    plan = _Plan(backend=backend, interpret=interpret,
                 mgpu_backward=table_mgpu_backward() if backend == "mosaic_gpu" else "triton", **specs)

    dim, vdim = _pow2_at_least(head_dim), _pow2_at_least(v_dim)
    qp = _pad_to(_pad_to(q, 1, q_pad), 3, dim)
    kp = _pad_to(_pad_to(k, 1, kv_pad), 3, dim)
    vp = _pad_to(_pad_to(v, 1, kv_pad), 3, vdim)
    o, lse = _flash(qp, kp, vp, aux, plan)
    o, lse = o[:, :q_len, :, :v_dim], lse[:, :, :q_len]
    return (o, lse) if return_lse else o


def _softcap_tanh(backend, interpret, dtype, softcap) -> str:
    """The softcap's tanh form: where the table says ``"approx"``, the GPU's ``tanh.approx`` for compiled
    Triton (``"approx"``) and Mosaic GPU (``"native"``) kernels on 16-bit inputs; ``"exp2"`` everywhere
    else (interpret mode, TPU, float32 inputs)."""
    if softcap is None or interpret or backend == "tpu" or jnp.dtype(dtype).itemsize > 2:
        return "exp2"
    if table_softcap_tanh() != "approx":
        return "exp2"
    return "native" if backend == "mosaic_gpu" else "approx"


def _pad_to_multiple(n, block):
    return -(-n // block) * block


def attention(q, k, v, *, causal=False, window=None, segment_ids=None, bias=None, softcap=None, num_sinks=0,
              scale=None, block_mask=None, positions=None, score="softmax", softplus_train_len=None,
              dropout_rate=0.0, dropout_rng=None, return_lse=False, mode=None, block_size=None):
    """:func:`sequax.ops.attention.attention` for ``backend="pallas"`` (arguments already validated).

    ``block_size`` is the blockwise XLA path's tile and does not apply here;
    ``score``, ``softplus_train_len``, ``dropout_*`` and ``mode`` are refused
    by :func:`why_not` unless they are the defaults.
    """
    del softplus_train_len, dropout_rng, block_size
    reason = why_not(q, k, v, bias=bias, score=score, dropout_rate=dropout_rate, mode=mode,
                     block_mask=block_mask, positions=positions)
    if reason is not None:
        raise ValueError(f"attention(backend='pallas') cannot serve these inputs: {reason}")
    return flash_attention(q, k, v, causal=causal, window=window, segment_ids=segment_ids, num_sinks=num_sinks,
                           block_mask=block_mask, softcap=softcap, bias_fn=bias, scale=scale,
                           return_lse=return_lse, positions=positions)


__all__ = ["ALIBI_CAP_ATTR", "ALIBI_SLOPES_ATTR", "alibi_of", "attention", "flash_attention", "why_not"]
