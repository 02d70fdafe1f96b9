"""Triton-backend Pallas kernel: ``h_t = a_t h_{t-1} + b_t`` for a block of channels.

Grid ``(batch, channel blocks)``. Each program walks the sequence with its
``[features]`` state in registers. Rows are read ``unroll`` at a time (all
loads of a group issued before the recurrence consumes them, so several are
in flight) and ``h`` is written row by row; contiguous channels make every
access coalesced. Nothing but the inputs and ``h`` touches memory.

Pallas-Triton does not mask the part of an edge block that lies past the
array, so the channel edge is masked explicitly (``pltriton.load/store``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton


def _kernel(a_ref, b_ref, h0_ref, h_ref, *, length, channels, reverse, unroll):
    features = a_ref.shape[-1]
    cols = pl.program_id(1) * features + jnp.arange(features)
    mask = (cols < channels)[None, :]

    def rows(t, count):
        return [length - 1 - (t + i) if reverse else t + i for i in range(count)]

    def step(h, ts):
        a = [pltriton.load(a_ref.at[pl.ds(t, 1), :], mask=mask, other=0.0) for t in ts]
        b = [pltriton.load(b_ref.at[pl.ds(t, 1), :], mask=mask, other=0.0) for t in ts]
        for t, a_t, b_t in zip(ts, a, b):
            h = a_t.astype(jnp.float32) * h + b_t.astype(jnp.float32)
            pltriton.store(h_ref.at[pl.ds(t, 1), :], h.astype(h_ref.dtype), mask=mask)
        return h

    h = pltriton.load(h0_ref, mask=mask, other=0.0).astype(jnp.float32)
    groups, rest = divmod(length, unroll)
    h = jax.lax.fori_loop(0, groups, lambda g, h: step(h, rows(g * unroll, unroll)), h)
    if rest:
        step(h, rows(groups * unroll, rest))


def scan(a, b, h0, *, reverse, features, num_warps, interpret, unroll=8):
    """``a``, ``b`` ``[batch, length, channels]``, ``h0`` ``[batch, 1, channels]`` -> ``h`` like ``b``."""
    batch, length, channels = b.shape
    features = min(features, pl.next_power_of_2(channels))
    seq = pl.BlockSpec((None, length, features), lambda i, j: (i, 0, j))
    row = pl.BlockSpec((None, 1, features), lambda i, j: (i, 0, j))
    kernel = functools.partial(_kernel, length=length, channels=channels, reverse=reverse,
                               unroll=min(unroll, length))
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct(b.shape, b.dtype),
        grid=(batch, pl.cdiv(channels, features)),
        in_specs=[seq, seq, row],
        out_specs=seq,
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=1),
        name="linear_scan",
    )(a, b, h0)
