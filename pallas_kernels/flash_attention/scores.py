"""Logits of one tile, in base 2, shared by every kernel (runs inside them).

``z = scale * q.k + bias`` (bias: ALiBi ``-slope * min(|k_pos - q_pos|, cap)``),
then ``z = softcap * tanh(z / softcap)``; the kernels work with ``t = z *
log2(e)`` and ``exp2`` (one multiply folded into the scale). The backward needs
``dz_capped / dz = 1 - (z_capped / softcap) ** 2``.

The softcap's tanh is written through ``exp2`` (:func:`tanh_exp2`): Triton lowers
``jnp.tanh`` to libdevice's ``tanhf``, a long polynomial with branches per
element, while ``exp2`` is one special-function instruction and the division one
approximate reciprocal; that tanh made the softcapped kernels several times
slower than the plain ones. ``ScoreSpec.tanh="approx"`` uses the GPU's own
``tanh.approx.f32`` instead (one special-function instruction, relative error
below 2^-10.9: about 0.015 on a logit capped at 30, within what bf16 inputs
already carry there) through Triton's inline PTX; ``"native"`` is ``jnp.tanh``
for the Mosaic GPU kernels, which compile with ``approx_math`` and so emit that
same instruction. The api picks either from ``block_sizes.softcap_tanh`` for
compiled GPU kernels on bf16/f16 inputs only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax.numpy as jnp

LOG2E = 1.0 / math.log(2.0)
LN2 = math.log(2.0)
# Running row max before any key is seen: finite, so exp2(m_old - m_new) never is exp2(nan).
NEG_INIT = -1e30


@dataclasses.dataclass(frozen=True)
class ScoreSpec:
    """Static score options (part of the kernels' static config)."""

    scale: float
    softcap: Optional[float] = None
    alibi: bool = False
    alibi_cap: Optional[int] = None  # ALiBi distance cap (LM-Infinite); None: uncapped
    # The softcap's tanh: "exp2" (any platform) | "approx" (Triton's PTX tanh.approx) | "native" (jnp.tanh:
    # tanh.approx in the Mosaic GPU kernels, compiled with approx_math).
    tanh: str = "exp2"


def logits2(spec: ScoreSpec, s, *, slope=None, q_pos=None, k_pos=None):
    """Raw ``q.k`` ``[bq, bk]`` float32 -> ``(t, capped)``: base-2 logits and the softcapped ``z``.

    ``capped`` is None without softcap; ``slope`` (a scalar) and the positions
    (``[bq, 1]``, ``[1, bk]``) are needed with ALiBi.
    """
    if not spec.alibi and spec.softcap is None:
        return s * (spec.scale * LOG2E), None
    z = s * spec.scale
    if spec.alibi:
        distance = jnp.abs(k_pos - q_pos)
        if spec.alibi_cap is not None:
            distance = jnp.minimum(distance, spec.alibi_cap)
        z = z - slope * distance.astype(jnp.float32)
    if spec.softcap is None:
        return z * LOG2E, None
    capped = spec.softcap * _tanh(spec, z * (1.0 / spec.softcap))
    return capped * LOG2E, capped


def _tanh(spec: ScoreSpec, x):
    if spec.tanh == "native":
        return jnp.tanh(x)
    if spec.tanh == "approx":
        from jax.experimental.pallas import triton as plt

        return plt.approx_tanh(x)
    return tanh_exp2(x)


def tanh_exp2(x):
    """``tanh(x) = 1 - 2 / (1 + 2^(2 x log2 e))``: exact at +-inf, absolute error below 4e-7 (a few ulps of 1)."""
    return 1.0 - 2.0 / (1.0 + jnp.exp2(x * (2.0 * LOG2E)))


def softcap_grad(spec: ScoreSpec, ds, capped):
    """Chain ``ds`` (gradient w.r.t. the capped logits) through the softcap."""
    if spec.softcap is None:
        return ds
    r = capped * (1.0 / spec.softcap)
    return ds * (1.0 - r * r)
