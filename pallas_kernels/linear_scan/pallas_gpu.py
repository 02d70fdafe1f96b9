"""Triton-backend Pallas kernel: ``h_t = a_t h_{t-1} + b_t`` for a block of channels.

Grid ``(batch, channel blocks)``. Each program walks the sequence one position
at a time with its ``[features]`` state in registers, reading one row of ``a``
and ``b`` and writing one row of ``h`` per step (contiguous channels, so the
loads are coalesced). Nothing but the inputs and ``h`` touches memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton


def _kernel(a_ref, b_ref, h0_ref, h_ref, *, length, reverse):
    def body(i, h):
        t = length - 1 - i if reverse else i
        row = pl.ds(t, 1)
        h = a_ref[row, :].astype(jnp.float32) * h + b_ref[row, :].astype(jnp.float32)
        h_ref[row, :] = h.astype(h_ref.dtype)
        return h

    jax.lax.fori_loop(0, length, body, h0_ref[...].astype(jnp.float32))


def scan(a, b, h0, *, reverse, features, num_warps, interpret):
    """``a``, ``b`` ``[batch, length, channels]``, ``h0`` ``[batch, 1, channels]`` -> ``h`` like ``b``."""
    batch, length, channels = b.shape
    seq = pl.BlockSpec((None, length, features), lambda i, j: (i, 0, j))
    row = pl.BlockSpec((None, 1, features), lambda i, j: (i, 0, j))
    return pl.pallas_call(
        functools.partial(_kernel, length=length, reverse=reverse),
        out_shape=jax.ShapeDtypeStruct(b.shape, b.dtype),
        grid=(batch, pl.cdiv(channels, features)),
        in_specs=[seq, seq, row],
        out_specs=seq,
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
        name="linear_scan",
    )(a, b, h0)
