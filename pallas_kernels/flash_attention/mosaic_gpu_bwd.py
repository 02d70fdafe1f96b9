"""Mosaic GPU (Hopper) flash-attention backward: a dk/dv kernel and a dq kernel.

Both follow the forward's shape (:mod:`.mosaic_gpu`): one CUDA block of three
warpgroups, two computing on 64 rows each with ``wgmma``, one streaming tiles
into a ring of shared-memory slots with TMA copies.

- ``backward_dkdv``: a block owns 2 x 64 keys of one kv head and streams the
  query tiles of every query head of its group (``q``, ``dO``, the base-2
  ``lse`` and ``delta``). Per tile: ``S^T = K Q^T``, ``P^T = exp2(S^T - lse)``,
  ``dV += P^T dO``, ``dP^T = V dO^T``, ``dS^T = P^T (dP^T - delta)``,
  ``dK += dS^T Q``; a causal block starts at the first query tile that sees
  its keys, and only the tiles on its diagonal (or holding padded keys) apply
  the mask.
- ``backward_dq``: a block owns 2 x 64 query rows and streams key/value tiles up
  to its diagonal: ``S = Q K^T``, ``P``, ``dP = dO V^T``, ``dS``, ``dQ += dS K``;
  wholly visible tiles skip the mask, as in the forward.

Same inputs as the Triton backward (``lse2``: base 2, ``+inf`` for rows that
see no key; ``delta = rowsum(dO o)``), same masks and softcap as the forward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels.flash_attention import mosaic_gpu as fwd
from pallas_kernels.flash_attention.masks import visible
from pallas_kernels.flash_attention.scores import logits2, softcap_grad

BLOCK = 64  # rows per compute warpgroup (keys in dk/dv, queries in dq) and rows of a streamed tile
STAGES = 2


def _dims(q, k, spec):
    """``(batch, q_len, heads, dim, kv_len_padded, kv_heads, groups, kv_len, q_offset, causal)``."""
    batch, q_len, heads, dim = q.shape
    m = spec.mask
    return batch, q_len, heads, dim, k.shape[1], k.shape[2], heads // k.shape[2], m.kv_len, m.q_offset, m.causal


def _cols(x, rows):
    return lax.broadcast_in_dim(x, (rows, x.shape[0]), (1,))


def _store_rows(value, smem, gmem_slice):
    smem[...] = value
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(smem, gmem_slice)


def backward_dkdv(q, k, v, do, lse2, delta, spec, *, interpret=False, stages=STAGES):
    """``dk``, ``dv`` like ``k``, ``v`` (padded shapes as the forward's)."""
    batch, q_len, heads, dim, kv_len_p, kv_heads, groups, kv_len, q_offset, causal = _dims(q, k, spec)
    mask, mask_keys = spec.mask, kv_len % BLOCK != 0  # mask_keys: the last key tile holds padding
    nq = q_len // BLOCK
    dtype = q.dtype
    transforms = fwd._mma_transforms(dim, dtype)
    iota, cast = fwd.register_ops(interpret)
    columns = plgpu.Layout.WGMMA.reduce(0)  # a per-query vector across a [keys, queries] tile

    def kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref,
               k_smem, v_smem, q_smem, do_smem, lse_smem, delta_smem, out_smem,
               kv_bar, q_bar, do_bar, lse_bar, delta_bar, consumed):
        kb, bkh, wg = lax.axis_index("k"), lax.axis_index("bkh"), lax.axis_index("wg")
        b, kh = lax.div(bkh, kv_heads), lax.rem(bkh, kv_heads)
        key0 = kb * 2 * BLOCK
        if causal:  # the first query tile with a row that sees the block's first key
            first = jnp.clip(lax.div(jnp.maximum(key0 - q_offset, 0), BLOCK), 0, nq)
        else:
            first = jnp.int32(0)
        per_head = nq - first
        steps = groups * per_head

        def tile_of(i):
            g = lax.div(i, jnp.maximum(per_head, 1))
            return kh * groups + g, first + lax.rem(i, jnp.maximum(per_head, 1))

        @pl.when(wg < 2)
        def _compute():
            plgpu.set_max_registers(fwd.COMPUTE_REGISTERS, action="increase")
            my_key0 = key0 + wg * BLOCK
            plgpu.copy_gmem_to_smem(k_ref.at[b, pl.ds(my_key0, BLOCK), kh, :], k_smem.at[wg], kv_bar.at[wg])
            plgpu.copy_gmem_to_smem(v_ref.at[b, pl.ds(my_key0, BLOCK), kh, :], v_smem.at[wg], kv_bar.at[2 + wg])
            plgpu.barrier_wait(kv_bar.at[wg])
            plgpu.barrier_wait(kv_bar.at[2 + wg])
            keys = iota((BLOCK, BLOCK), 0) + my_key0

            def step(i, carry, masked):
                dk, dv = carry
                slot = lax.rem(i, stages)
                _, j = tile_of(i)
                for bar in (q_bar, lse_bar):
                    plgpu.barrier_wait(bar.at[slot])
                t, capped = logits2(spec.score, fwd.dot_nt(k_smem.at[wg], q_smem.at[slot], interpret))
                p = jnp.exp2(t - _cols(fwd.load_vector(lse_smem.at[slot], columns, interpret), BLOCK))
                if masked:
                    queries = iota((BLOCK, BLOCK), 1) + (j * BLOCK + q_offset)
                    p = jnp.where(visible(mask, queries, keys, k_idx=keys), p, 0.0)
                for bar in (do_bar, delta_bar):
                    plgpu.barrier_wait(bar.at[slot])
                dv = fwd.accumulate(dv, p.astype(dtype), do_smem.at[slot], interpret)
                dp = fwd.dot_nt(v_smem.at[wg], do_smem.at[slot], interpret)
                ds = p * (dp - _cols(fwd.load_vector(delta_smem.at[slot], columns, interpret), BLOCK))
                ds = softcap_grad(spec.score, ds, capped)
                dk = fwd.accumulate(dk, (ds * spec.score.scale).astype(dtype), q_smem.at[slot], interpret)
                plgpu.barrier_arrive(consumed.at[slot])
                return dk, dv

            zeros = cast(jnp.zeros((BLOCK, dim), jnp.float32), plgpu.Layout.WGMMA)
            if causal or mask_keys:
                # Per query head, the first ``n_mask`` tiles apply the mask (the diagonal, or all of them
                # where this warpgroup's keys hold padding); the later tiles see every key here.
                n_mask = jnp.int32(0)
                if causal:  # tiles before the first one whose top row sees this warpgroup's last key
                    last = jnp.maximum(my_key0 + BLOCK - 1 - q_offset, 0)
                    n_mask = jnp.clip(lax.div(last + BLOCK - 1, BLOCK) - first, 0, per_head)
                if mask_keys:
                    n_mask = jnp.where(my_key0 + BLOCK > kv_len, per_head, n_mask)

                def head(g, carry):
                    start = g * per_head
                    carry = lax.fori_loop(start, start + n_mask, lambda i, c: step(i, c, True), carry)
                    return lax.fori_loop(start + n_mask, start + per_head, lambda i, c: step(i, c, False), carry)

                dk, dv = lax.fori_loop(0, groups, head, (zeros, zeros))
            else:
                dk, dv = lax.fori_loop(0, steps, lambda i, c: step(i, c, False), (zeros, zeros))
            _store_rows(dk.astype(dtype), out_smem.at[wg], dk_ref.at[b, pl.ds(my_key0, BLOCK), kh, :])
            plgpu.wait_smem_to_gmem(0)
            _store_rows(dv.astype(dtype), out_smem.at[wg], dv_ref.at[b, pl.ds(my_key0, BLOCK), kh, :])
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == 2)
        def _memory():
            plgpu.set_max_registers(fwd.MEMORY_REGISTERS, action="decrease")

            def fetch(i, _):
                slot = lax.rem(i, stages)
                h, j = tile_of(i)

                @pl.when(i >= stages)
                def _():
                    plgpu.barrier_wait(consumed.at[slot])

                rows = pl.ds(j * BLOCK, BLOCK)
                plgpu.copy_gmem_to_smem(q_ref.at[b, rows, h, :], q_smem.at[slot], q_bar.at[slot])
                plgpu.copy_gmem_to_smem(lse_ref.at[b, h, rows], lse_smem.at[slot], lse_bar.at[slot])
                plgpu.copy_gmem_to_smem(do_ref.at[b, rows, h, :], do_smem.at[slot], do_bar.at[slot])
                plgpu.copy_gmem_to_smem(delta_ref.at[b, h, rows], delta_smem.at[slot], delta_bar.at[slot])
                return ()

            lax.fori_loop(0, steps, fetch, ())

            def drain(i, _):
                plgpu.barrier_wait(consumed.at[lax.rem(i, stages)])
                return ()

            lax.fori_loop(jnp.maximum(steps - stages, 0), steps, drain, ())

    scratch = dict(
        k_smem=plgpu.SMEM((2, BLOCK, dim), dtype, transforms=transforms),
        v_smem=plgpu.SMEM((2, BLOCK, dim), dtype, transforms=transforms),
        q_smem=plgpu.SMEM((stages, BLOCK, dim), dtype, transforms=transforms),
        do_smem=plgpu.SMEM((stages, BLOCK, dim), dtype, transforms=transforms),
        lse_smem=plgpu.SMEM((stages, BLOCK), jnp.float32),
        delta_smem=plgpu.SMEM((stages, BLOCK), jnp.float32),
        out_smem=plgpu.SMEM((2, BLOCK, dim), dtype, transforms=transforms),
        kv_bar=plgpu.Barrier(num_barriers=4),
        q_bar=plgpu.Barrier(num_barriers=stages),
        do_bar=plgpu.Barrier(num_barriers=stages),
        lse_bar=plgpu.Barrier(num_barriers=stages),
        delta_bar=plgpu.Barrier(num_barriers=stages),
        consumed=plgpu.Barrier(num_arrivals=2, num_barriers=stages),
    )
    outs = (jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype))
    call = plgpu.kernel(
        kernel, **fwd._kernel_types(outs, scratch), grid=(kv_len_p // (2 * BLOCK), batch * kv_heads),
        grid_names=("k", "bkh"), num_threads=3, thread_name="wg",
        compiler_params=plgpu.CompilerParams(approx_math=True),
        **({"interpret": fwd._interpret_params()} if interpret else {}))
    return call(q, k, v, do, lse2, delta)


def backward_dq(q, k, v, do, lse2, delta, spec, *, interpret=False, stages=STAGES):
    """``dq`` like ``q``."""
    batch, q_len, heads, dim, kv_len_p, kv_heads, groups, kv_len, q_offset, causal = _dims(q, k, spec)
    mask, mask_keys = spec.mask, kv_len % BLOCK != 0  # mask_keys: the last key tile holds padding
    num_kv = -(-kv_len // BLOCK)
    dtype = q.dtype
    transforms = fwd._mma_transforms(dim, dtype)
    iota, cast = fwd.register_ops(interpret)

    def kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref,
               q_smem, do_smem, k_smem, v_smem, lse_smem, delta_smem,
               q_bar, row_bar, k_bar, v_bar, k_consumed, v_consumed):
        qi, bh, wg = lax.axis_index("q"), lax.axis_index("bh"), lax.axis_index("wg")
        b, h = lax.div(bh, heads), lax.rem(bh, heads)
        kh = lax.div(h, groups)
        tile_start = qi * 2 * BLOCK
        if causal:
            steps = jnp.clip(lax.div(tile_start + 2 * BLOCK - 1 + q_offset, BLOCK) + 1, 0, num_kv)
        else:
            steps = num_kv

        @pl.when(wg < 2)
        def _compute():
            plgpu.set_max_registers(fwd.COMPUTE_REGISTERS, action="increase")
            row0 = tile_start + wg * BLOCK
            rows_ = pl.ds(row0, BLOCK)
            plgpu.copy_gmem_to_smem(q_ref.at[b, rows_, h, :], q_smem.at[wg], q_bar.at[wg])
            plgpu.copy_gmem_to_smem(do_ref.at[b, rows_, h, :], do_smem.at[wg], q_bar.at[2 + wg])
            plgpu.copy_gmem_to_smem(lse_ref.at[b, h, rows_], lse_smem.at[wg], row_bar.at[wg])
            plgpu.copy_gmem_to_smem(delta_ref.at[b, h, rows_], delta_smem.at[wg], row_bar.at[2 + wg])
            for i in range(2):
                plgpu.barrier_wait(q_bar.at[2 * i + wg])
                plgpu.barrier_wait(row_bar.at[2 * i + wg])
            row_layout = plgpu.Layout.WGMMA.reduce(1)
            lse = fwd.load_vector(lse_smem.at[wg], row_layout, interpret)
            dl = fwd.load_vector(delta_smem.at[wg], row_layout, interpret)
            lse = fwd._rows(lse, BLOCK)
            dl = fwd._rows(dl, BLOCK)
            queries = iota((BLOCK, BLOCK), 0) + (row0 + q_offset)

            def step(i, dq, masked):
                slot = lax.rem(i, stages)
                plgpu.barrier_wait(k_bar.at[slot])
                t, capped = logits2(spec.score, fwd.dot_nt(q_smem.at[wg], k_smem.at[slot], interpret))
                p = jnp.exp2(t - lse)
                if masked:
                    keys = iota((BLOCK, BLOCK), 1) + i * BLOCK
                    p = jnp.where(visible(mask, queries, keys, k_idx=keys), p, 0.0)
                plgpu.barrier_wait(v_bar.at[slot])
                dp = fwd.dot_nt(do_smem.at[wg], v_smem.at[slot], interpret)
                plgpu.barrier_arrive(v_consumed.at[slot])
                ds = softcap_grad(spec.score, p * (dp - dl), capped)
                dq = fwd.accumulate(dq, (ds * spec.score.scale).astype(dtype), k_smem.at[slot], interpret)
                plgpu.barrier_arrive(k_consumed.at[slot])
                return dq

            dq = fwd.key_tiles(step, cast(jnp.zeros((BLOCK, dim), jnp.float32), plgpu.Layout.WGMMA), steps,
                               row0=row0 + q_offset, num_kv=num_kv, block_k=BLOCK, causal=causal,
                               mask_keys=mask_keys)
            _store_rows(dq.astype(dtype), q_smem.at[wg], dq_ref.at[b, rows_, h, :])
            plgpu.wait_smem_to_gmem(0)

        @pl.when(wg == 2)
        def _memory():
            plgpu.set_max_registers(fwd.MEMORY_REGISTERS, action="decrease")
            fwd.stream_kv(k_ref.at[b, :, kh, :], v_ref.at[b, :, kh, :], (k_smem, v_smem), (k_bar, v_bar),
                          (k_consumed, v_consumed), steps, BLOCK, stages)

    scratch = dict(
        q_smem=plgpu.SMEM((2, BLOCK, dim), dtype, transforms=transforms),
        do_smem=plgpu.SMEM((2, BLOCK, dim), dtype, transforms=transforms),
        k_smem=plgpu.SMEM((stages, BLOCK, dim), dtype, transforms=transforms),
        v_smem=plgpu.SMEM((stages, BLOCK, dim), dtype, transforms=transforms),
        lse_smem=plgpu.SMEM((2, BLOCK), jnp.float32),
        delta_smem=plgpu.SMEM((2, BLOCK), jnp.float32),
        q_bar=plgpu.Barrier(num_barriers=4),
        row_bar=plgpu.Barrier(num_barriers=4),
        k_bar=plgpu.Barrier(num_barriers=stages),
        v_bar=plgpu.Barrier(num_barriers=stages),
        k_consumed=plgpu.Barrier(num_arrivals=2, num_barriers=stages),
        v_consumed=plgpu.Barrier(num_arrivals=2, num_barriers=stages),
    )
    call = plgpu.kernel(
        kernel, **fwd._kernel_types(jax.ShapeDtypeStruct(q.shape, q.dtype), scratch),
        grid=(q_len // (2 * BLOCK), batch * heads), grid_names=("q", "bh"), num_threads=3, thread_name="wg",
        compiler_params=plgpu.CompilerParams(approx_math=True),
        **({"interpret": fwd._interpret_params()} if interpret else {}))
    return call(q, k, v, do, lse2, delta)


__all__ = ["backward_dkdv", "backward_dq"]
