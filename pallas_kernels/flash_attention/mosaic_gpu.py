"""Mosaic GPU (Hopper) flash-attention forward: wgmma, TMA and a dedicated memory warpgroup.

One CUDA block per (query tile of ``2 * block_q`` rows, batch x head); three
Pallas threads (warpgroups) in it:

- two *compute* warpgroups, each owning ``block_q`` (64) query rows: ``S = Q K^T``
  on the tensor cores (``plgpu.wgmma``, Q and K from shared memory), the online
  softmax in registers (base 2, the softcap folded into the scores), then
  ``O += P V`` with ``P`` passed to ``wgmma`` from registers;
- one *memory* warpgroup that streams the key and value tiles into a ring of
  ``stages`` shared-memory slots with TMA copies, waiting on a slot's
  "consumed" barrier (both compute warpgroups arrive on it) before refilling it.

The two compute warpgroups share every key/value tile, and a causal block
visits only the key tiles up to its last row's diagonal. Rows and keys past the
true lengths are masked in the score stage, so padded shapes need no copies.

Serves causal or bidirectional attention with ``softcap``, GQA/MQA and the
default query offset (causal queries aligned to the end of the keys; rows that
see no key give zeros and ``lse = -inf``, as the reference); everything else
(windows, sinks, segments, block masks, ALiBi, positions) stays with the
Triton kernels; ``why_not`` says which. The backward is :mod:`.mosaic_gpu_bwd`
(or the Triton kernels, ``block_sizes.MOSAIC_GPU_BACKWARD``), from this
forward's ``lse``. Needs Hopper (compute capability 9.0): the api picks these
kernels only when asked (``backend="mosaic_gpu"``). On a CPU the kernels run in
Mosaic GPU's interpreter (``interpret=True``), which simulates the shared
memory, warpgroups, TMA copies and barriers but takes no register layouts and
no transposed or in-register wgmma operands: there the two matmuls are plain
dots, so the interpreted kernels test the pipeline, masks and math, and the
cuda lowering tests the wgmma operands.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.flash_attention.masks import visible
from pallas_kernels.flash_attention.scores import LN2, logits2

BLOCK_Q = 64  # query rows per compute warpgroup (the wgmma M)
BLOCK_K = 128  # keys per tile
STAGES = 2  # key/value slots in shared memory
HEAD_DIMS = (64, 128)
COMPUTE_REGISTERS, MEMORY_REGISTERS = 232, 40


def why_not(mask, score, q_dtype, head_dim, v_dim) -> Optional[str]:
    """Why these kernels cannot serve a launch with ``mask`` / ``score`` (``MaskSpec`` / ``ScoreSpec``;
    ``None`` if they can)."""
    m = mask
    if m.window is not None or m.num_sinks or m.segments or m.layout_block is not None or m.explicit_positions:
        return ("the Mosaic GPU kernel serves plain causal or bidirectional attention (with softcap); "
                "windows, sinks, segment_ids, block masks and positions need backend='triton'")
    if score.alibi:
        return "the Mosaic GPU kernel has no ALiBi; use backend='triton'"
    if jnp.dtype(q_dtype) not in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return f"the Mosaic GPU kernel takes bfloat16 or float16 inputs, got {jnp.dtype(q_dtype).name}"
    if head_dim not in HEAD_DIMS or v_dim != head_dim:
        return f"the Mosaic GPU kernel takes equal q/k/v head dims in {HEAD_DIMS}, got {head_dim} / {v_dim}"
    return None


def _mma_transforms(cols, dtype):
    """Tiling and swizzle of a ``[rows, cols]`` shared-memory operand for wgmma / TMA."""
    itemsize = jnp.dtype(dtype).itemsize
    for swizzle in (128, 64, 32):
        if cols % (swizzle // itemsize) == 0:
            return plgpu.TilingTransform((8, swizzle // itemsize)), plgpu.SwizzleTransform(swizzle)
    raise ValueError(f"no wgmma tiling for {cols} columns of {jnp.dtype(dtype).name}")


def _rows(x, cols):
    """A per-row ``[rows]`` value broadcast over ``cols`` columns (no ``[rows, 1]`` intermediate:
    it is not a wgmma layout)."""
    return lax.broadcast_in_dim(x, (x.shape[0], cols), (0,))


def key_tiles(step, carry, steps, *, row0, num_kv, block_k, causal, mask_keys):
    """``step(i, carry, masked)`` over key tiles ``0 .. steps`` of a warpgroup whose first row sits at key
    position ``row0``: tiles wholly visible to all its rows (below that row's diagonal, before a padded
    last tile) first without the mask, the rest with it (the forward and the dq kernel)."""
    if not (causal or mask_keys):
        return lax.fori_loop(0, steps, lambda i, c: step(i, c, False), carry)
    full = num_kv - 1 if mask_keys else num_kv
    if causal:
        full = jnp.minimum(full, jnp.maximum(lax.div(row0 + 1, block_k), 0))
    full = jnp.minimum(full, steps)
    carry = lax.fori_loop(0, full, lambda i, c: step(i, c, False), carry)
    return lax.fori_loop(full, steps, lambda i, c: step(i, c, True), carry)


def forward(q, k, v, spec, *, block_q: int = BLOCK_Q, block_k: int = BLOCK_K, stages: int = STAGES,
            interpret: bool = False):
    """``q`` ``[B, Lq, H, D]``, ``k``/``v`` ``[B, Lk, KH, D]`` (Lq a multiple of ``2 block_q``, Lk of
    ``block_k``) -> ``o`` like ``q`` and ``lse`` ``[B, H, Lq]`` float32 (natural log).

    ``spec`` is the forward's :class:`~pallas_kernels.flash_attention.spec.KernelSpec`:
    its mask gives ``causal``, the true ``kv_len`` and the query offset; its score the scale
    and softcap.
    """
    batch, q_len, heads, dim = q.shape
    kv_len_p, kv_heads = k.shape[1], k.shape[2]
    if q_len % (2 * block_q) or kv_len_p % block_k:
        raise ValueError(f"padded lengths must be multiples of {2 * block_q} / {block_k}; got {q_len} / {kv_len_p}")
    groups = heads // kv_heads
    mask = spec.mask
    kv_len, q_offset, causal = mask.kv_len, mask.q_offset, mask.causal
    num_kv = -(-kv_len // block_k)
    tile_rows = 2 * block_q
    dtype = q.dtype
    transforms = _mma_transforms(dim, dtype)
    mask_keys = kv_len % block_k != 0  # the last key tile holds padding

    iota, cast = register_ops(interpret)

    def kernel(q_ref, k_ref, v_ref, o_ref, lse_ref, q_smem, k_smem, v_smem, lse_smem,
               q_barriers, k_barriers, v_barriers, k_consumed, v_consumed):
        qi, bh, wg = lax.axis_index("q"), lax.axis_index("bh"), lax.axis_index("wg")
        b, h = lax.div(bh, heads), lax.rem(bh, heads)
        kh = lax.div(h, groups)
        tile_start = qi * tile_rows
        if causal:  # key tiles up to the diagonal of the tile's last row
            last_key = tile_start + tile_rows - 1 + q_offset
            steps = jnp.minimum(lax.div(last_key, block_k) + 1, num_kv)
        else:
            steps = num_kv

        @pl.when(wg < 2)
        def _compute():
            plgpu.set_max_registers(COMPUTE_REGISTERS, action="increase")
            row0 = tile_start + wg * block_q
            plgpu.copy_gmem_to_smem(q_ref.at[b, pl.ds(row0, block_q), h, :], q_smem.at[wg], q_barriers.at[wg])
            plgpu.barrier_wait(q_barriers.at[wg])
            rows = iota((block_q, block_k), 0)
            cols = iota((block_q, block_k), 1)
            rows = rows + (row0 + q_offset)

            def step(i, carry, masked):
                acc, m, l = carry
                slot = lax.rem(i, stages)
                plgpu.barrier_wait(k_barriers.at[slot])

                s = dot_nt(q_smem.at[wg], k_smem.at[slot], interpret)
                plgpu.barrier_arrive(k_consumed.at[slot])
                t, _ = logits2(spec.score, s)
                if masked:
                    keys = cols + i * block_k
                    t = jnp.where(visible(mask, rows, keys, k_idx=keys), t, -jnp.inf)
                m_new = jnp.maximum(m, jnp.max(t, axis=1))
                alpha = jnp.exp2(m - m_new)
                p = jnp.exp2(t - _rows(m_new, block_k))
                l = l * alpha + jnp.sum(p, axis=1)
                plgpu.barrier_wait(v_barriers.at[slot])

                acc = accumulate(acc * _rows(alpha, dim), p.astype(dtype), v_smem.at[slot], interpret)
                plgpu.barrier_arrive(v_consumed.at[slot])
                return acc, m_new, l

            acc0 = cast(jnp.zeros((block_q, dim), jnp.float32), plgpu.Layout.WGMMA)
            row_layout = plgpu.Layout.WGMMA.reduce(1)
            # Finite start: exp2(m - m_new) is never exp2(-inf + inf).
            m0 = cast(jnp.full((block_q,), -1e30, jnp.float32), row_layout)
            l0 = cast(jnp.zeros((block_q,), jnp.float32), row_layout)
            acc, m, l = key_tiles(step, (acc0, m0, l0), steps, row0=row0 + q_offset, num_kv=num_kv,
                                  block_k=block_k, causal=causal, mask_keys=mask_keys)
            safe = jnp.where(l > 0, l, 1.0)
            o = acc / _rows(safe, dim)
            lse = jnp.where(l > 0, (m + jnp.log2(safe)) * LN2, -jnp.inf)
            q_smem.at[wg][...] = o.astype(dtype)  # Q is no longer read: its slot stages the output
            lse_smem.at[wg][...] = lse
            plgpu.commit_smem()
            plgpu.copy_smem_to_gmem(q_smem.at[wg], o_ref.at[b, pl.ds(row0, block_q), h, :])
            plgpu.copy_smem_to_gmem(lse_smem.at[wg], lse_ref.at[b, h, pl.ds(row0, block_q)])
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == 2)
        def _memory():
            plgpu.set_max_registers(MEMORY_REGISTERS, action="decrease")
            stream_kv(k_ref.at[b, :, kh, :], v_ref.at[b, :, kh, :], (k_smem, v_smem), (k_barriers, v_barriers),
                      (k_consumed, v_consumed), steps, block_k, stages)

    scratch = dict(
        q_smem=plgpu.SMEM((2, block_q, dim), dtype, transforms=transforms),
        k_smem=plgpu.SMEM((stages, block_k, dim), dtype, transforms=transforms),
        v_smem=plgpu.SMEM((stages, block_k, dim), dtype, transforms=transforms),
        lse_smem=plgpu.SMEM((2, block_q), jnp.float32),
        q_barriers=plgpu.Barrier(num_barriers=2),
        k_barriers=plgpu.Barrier(num_barriers=stages),
        v_barriers=plgpu.Barrier(num_barriers=stages),
        k_consumed=plgpu.Barrier(num_arrivals=2, num_barriers=stages),
        v_consumed=plgpu.Barrier(num_arrivals=2, num_barriers=stages),
    )
    outs = (jax.ShapeDtypeStruct(q.shape, dtype), jax.ShapeDtypeStruct((batch, heads, q_len), jnp.float32))
    call = plgpu.kernel(
        kernel,
        **_kernel_types(outs, scratch),
        grid=(q_len // tile_rows, batch * heads),
        grid_names=("q", "bh"),
        num_threads=3,
        thread_name="wg",
        compiler_params=plgpu.CompilerParams(approx_math=True),
        **({"interpret": _interpret_params()} if interpret else {}),
    )
    return call(q, k, v)


def register_ops(interpret):
    """``(iota, cast)``: a WGMMA-layout ``broadcasted_iota(shape, axis)`` and ``layout_cast(x, layout)``.
    Register layouts are a compiled-kernel matter: under the interpreter (a simulated GPU) both are
    the plain operations."""
    def iota(shape, axis):
        if interpret:
            return lax.broadcasted_iota(jnp.int32, shape, axis)
        return plgpu.broadcasted_iota(jnp.int32, shape, axis, layout=plgpu.Layout.WGMMA)

    def cast(x, layout):
        return x if interpret else plgpu.layout_cast(x, layout)

    return iota, cast


def dot_nt(a_ref, b_ref, interpret):
    """``a @ b^T`` in float32 of two shared-memory tiles (``b`` read transposed by ``wgmma``); in the
    interpreter, which simulates no transposed operand, a plain dot."""
    if interpret:
        return lax.dot_general(a_ref[...], b_ref[...], (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)

    def body(acc_ref):
        plgpu.wgmma(acc_ref, a_ref, plgpu.transpose_ref(b_ref, (1, 0)))
        return acc_ref[...]

    return pl.run_scoped(body, plgpu.ACC((a_ref.shape[0], b_ref.shape[0]), jnp.float32))


def load_vector(ref, layout, interpret):
    """A ``[n]`` shared-memory vector in registers, in ``layout`` (a reduced WGMMA layout) when compiled."""
    return ref[...] if interpret else plgpu.load(ref, (), layout=layout)


def accumulate(acc, a, b_ref, interpret):
    """``acc + a @ b`` in float32 (``a`` in registers, ``b`` a shared-memory tile): compiled, one
    ``wgmma`` accumulating in place into ``acc``'s registers (no second tile of registers for the
    product); in the interpreter, which simulates no in-register operand, a plain dot."""
    if interpret:
        return acc + lax.dot_general(a, b_ref[...], (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)

    def body(acc_ref):
        plgpu.wgmma(acc_ref, a, b_ref)

    return pl.run_state(body)(plgpu.ACC.init(acc))


def stream_kv(k_rows, v_rows, smem, loaded, consumed, steps, block, stages):
    """The memory warpgroup's loop: key/value tiles ``i < steps`` of ``block`` rows (of the ``[L, D]``
    views ``k_rows``, ``v_rows``) into slot ``i % stages`` of ``smem = (k_smem, v_smem)``, each
    signalled on its ``loaded`` barrier; a slot is refilled only after both compute warpgroups arrived
    on its ``consumed`` barrier. Ends by awaiting the completions no refill waited for, so every
    barrier sees as many waits as completions."""
    def fetch(i, _):
        slot = lax.rem(i, stages)
        for rows, buf, ready, used in zip((k_rows, v_rows), smem, loaded, consumed):
            @pl.when(i >= stages)
            def _():
                plgpu.barrier_wait(used.at[slot])

            plgpu.copy_gmem_to_smem(rows.at[pl.ds(i * block, block), :], buf.at[slot], ready.at[slot])
        return ()

    def drain(i, _):
        for used in consumed:
            plgpu.barrier_wait(used.at[lax.rem(i, stages)])
        return ()

    lax.fori_loop(0, steps, fetch, ())
    lax.fori_loop(jnp.maximum(steps - stages, 0), steps, drain, ())


def _interpret_params():
    """Mosaic GPU's interpret mode (a simulated GPU on the CPU: shared memory, warpgroups, barriers)."""
    from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams

    return InterpretGPUParams()


def _kernel_types(outs, scratch):
    """``plgpu.kernel``'s output and scratch arguments under this JAX's names (``out_type`` /
    ``scratch_types`` from 0.10.2, ``out_shape`` / ``scratch_shapes`` in 0.10.0 and 0.10.1)."""
    import inspect

    params = inspect.signature(plgpu.kernel).parameters
    if "out_type" in params:
        return dict(out_type=outs, scratch_types=scratch)
    return dict(out_shape=outs, scratch_shapes=scratch)


def supported_here() -> bool:
    """Whether the default device is a Hopper GPU (compute capability 9.0)."""
    dev = jax.devices()[0]
    return dev.platform == "gpu" and getattr(dev, "compute_capability", "") == "9.0"


__all__ = ["forward", "supported_here", "why_not"]
