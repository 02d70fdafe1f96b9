"""Mosaic TPU Pallas kernel: ``h_t = a_t h_{t-1} + b_t``, time-chunked through VMEM.

Grid ``(batch, channel blocks, time blocks)``; the last axis is sequential
("arbitrary"): each step stages a ``[time, features]`` tile of ``a`` and ``b``
in VMEM, walks it row by row with the state in a VMEM scratch row, and writes
the tile of ``h``. The length must be a multiple of ``time`` (the caller pads
with ``a = 1, b = 0``, which leaves the state unchanged).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu


def _kernel(a_ref, b_ref, h0_ref, h_ref, carry_ref, *, time, num_blocks, reverse):
    block = pl.program_id(2)

    @pl.when(block == 0)
    def _():
        carry_ref[...] = h0_ref[...].astype(jnp.float32)

    def body(i, h):
        t = time - 1 - i if reverse else i
        row = pl.ds(t, 1)
        h = a_ref[row, :].astype(jnp.float32) * h + b_ref[row, :].astype(jnp.float32)
        h_ref[row, :] = h.astype(h_ref.dtype)
        return h

    carry_ref[...] = jax.lax.fori_loop(0, time, body, carry_ref[...])


def scan(a, b, h0, *, reverse, features, time, interpret):
    """As :func:`pallas_kernels.linear_scan.pallas_gpu.scan`; ``length % time == 0``."""
    batch, length, channels = b.shape
    num_blocks = length // time

    def t_index(i, j, k):
        return (i, num_blocks - 1 - k if reverse else k, j)

    tile = pl.BlockSpec((None, time, features), t_index)
    row = pl.BlockSpec((None, 1, features), lambda i, j, k: (i, 0, j))
    return pl.pallas_call(
        functools.partial(_kernel, time=time, num_blocks=num_blocks, reverse=reverse),
        out_shape=jax.ShapeDtypeStruct(b.shape, b.dtype),
        grid=(batch, pl.cdiv(channels, features), num_blocks),
        in_specs=[tile, tile, row],
        out_specs=tile,
        scratch_shapes=[pltpu.VMEM((1, features), jnp.float32)],
        interpret=interpret,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
        name="linear_scan",
    )(a, b, h0)
