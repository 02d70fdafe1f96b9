"""``ssd`` (Mamba-2) on Pallas kernels: the chunked algorithm with tensor-core matmuls.

Same signature and semantics as :func:`sequax.ops.ssm.ssd` minus ``backend``.
Forward: the chunk-state kernel (sequential over chunks, the running state in
registers) writes the state entering every chunk; the chunk-output kernel
(all chunks in parallel) forms each chunk's outputs from it. Backward
(``jax.custom_vjp``): the state-adjoint kernel walks the chunks in reverse; the
chunk-gradient kernel produces ``dx``, ``ddt``, ``dA``, ``dB``, ``dC``, ``dD``
chunk by chunk; the initial state's gradient comes out of the first.
Residuals: the inputs and the entering states. See
:mod:`pallas_kernels.ssd.pallas_gpu` for the algorithm.

``chunk_size`` is the pure-JAX path's parameter: the kernel's chunk comes from
:mod:`pallas_kernels.ssd.block_sizes` (the result does not depend on it beyond
rounding). ``mode`` must be None.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.platform import interpret as _interpret, kernel_platform as _kernel_platform, pow2 as _pow2
from pallas_kernels.ssd import pallas_gpu, pallas_tpu
from pallas_kernels.ssd.block_sizes import block_sizes


def _active(options):
    """Names of options that are set (not None, not False)."""
    return sorted(k for k, v in options.items() if v is not None and v is not False)


def why_not(x, dt, A, B, C, *, chunk_size=None, D=None, initial_state=None, return_state=False,
            mode=None, **options) -> Optional[str]:
    """Why this kernel cannot serve the inputs (``None`` if it can)."""
    if _active(options):
        return f"the pallas ssd kernel does not support {', '.join(_active(options))} yet"
    if mode is not None:
        return f"the pallas kernel runs the chunked algorithm and takes mode=None, got mode={mode!r}"
    arrays = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, initial_state=initial_state)
    for name, v in arrays.items():
        if v is not None and jnp.iscomplexobj(v):
            return f"the pallas kernel takes real inputs ({name} is complex)"
    if jax.default_backend() not in ("cpu", "gpu", "cuda", "tpu"):
        return f"no pallas ssd for platform {jax.default_backend()!r}"
    return None


def _largest_divisor(n, at_most):
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _config(length, heads, groups, head_dim, state, has_D, has_h0, mm_dtype):
    bs = block_sizes()
    if _kernel_platform() == "tpu":  # lane-dim blocks: the table's multiple of 128, or the whole length
        chunk = min(bs["chunk"], length)
    else:
        chunk = max(16, min(bs["chunk"], _pow2(length)))
    return pallas_gpu.Config(
        length=length, heads=heads, groups=groups, head_dim=head_dim, state=state,
        chunk=chunk,
        head_block=min(bs["head_block"], head_dim),
        heads_per_program=_largest_divisor(heads // groups, bs["heads_per_program"]),
        has_D=has_D, has_h0=has_h0, segsum=bs["segsum"], mm_dtype=mm_dtype,
        num_warps=bs["num_warps"], num_stages=bs["num_stages"], bwd_num_warps=bs["bwd_num_warps"],
    )


def _forward(arrays, cfg):
    interpret = _interpret()
    if _kernel_platform() == "tpu":
        y, H, final = pallas_tpu.forward(arrays["x"], arrays["dt"], arrays["A"], arrays["B"], arrays["C"],
                                         arrays.get("D"), arrays.get("h0"), cfg, interpret=interpret)
        return y, final, H
    H, final = pallas_gpu.chunk_states(arrays["x"], arrays["dt"], arrays["A"], arrays["B"],
                                       arrays.get("h0"), cfg, interpret=interpret)
    y = pallas_gpu.chunk_outputs(arrays["x"], arrays["dt"], arrays["A"], arrays["B"], arrays["C"], H,
                                 arrays.get("D"), cfg, interpret=interpret)
    return y, final, H


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _ssd(arrays, cfg):
    y, final, _ = _forward(arrays, cfg)
    return y, final


def _ssd_fwd(arrays, cfg):
    y, final, H = _forward(arrays, cfg)
    return (y, final), (arrays, H)


def _ssd_bwd(cfg, res, cts):
    arrays, H = res
    gy, dfinal = cts
    interpret = _interpret()
    a = arrays
    if _kernel_platform() == "tpu":
        g = pallas_tpu.backward(a["x"], a["dt"], a["A"], a["B"], a["C"], a.get("D"), H, gy, dfinal, cfg,
                                interpret=interpret)
        dh0 = g["dh0"]
    else:
        G, ddecay, dh0 = pallas_gpu.state_grads(gy, a["dt"], a["A"], a["C"], H, dfinal, cfg, interpret=interpret)
        g = pallas_gpu.chunk_grads(a["x"], a["dt"], a["A"], a["B"], a["C"], H, G, jnp.sum(ddecay, axis=-1),
                                   gy, a.get("D"), cfg, interpret=interpret)
        g["dA"] = jnp.sum(g["dA"], axis=(0, 1))
        if cfg.has_D:
            g["dD"] = jnp.sum(g["dD"], axis=(0, 1))
    batch, length = gy.shape[:2]

    def per_group(part):  # [b, l, head blocks, n] -> [b, l, groups, n]
        return jnp.sum(part.reshape(batch, length, cfg.groups, -1, cfg.state), axis=3)

    grads = dict(x=g["dx"], dt=g["ddt"], A=g["dA"], B=per_group(g["dB"]), C=per_group(g["dC"]))
    if cfg.has_D:
        grads["D"] = g["dD"]
    if cfg.has_h0:
        grads["h0"] = dh0
    return ({k: v.astype(arrays[k].dtype) for k, v in grads.items()},)


_ssd.defvjp(_ssd_fwd, _ssd_bwd)


def ssd(x, dt, A, B, C, *, chunk_size=None, D=None, initial_state=None, return_state=False, mode=None,
        **options):
    """SSD (see :func:`sequax.ops.ssm.ssd`) on Pallas kernels.

    Args:
      x: ``[batch, length, heads, head_dim]``.
      dt: ``[batch, length, heads]`` positive step sizes.
      A: ``[heads]``; ``B``, ``C`` ``[batch, length, groups, state]``.
      chunk_size, mode: the pure-JAX path's (``mode`` must be None).
      D: ``[heads]`` or None; initial_state: ``[batch, heads, head_dim,
        state]`` or None.
      return_state: also return the final state.

    Returns:
      ``y`` like ``x`` (its dtype), and with ``return_state`` the final
      float32 state ``[batch, heads, head_dim, state]``.
    """
    del chunk_size
    reason = why_not(x, dt, A, B, C, D=D, initial_state=initial_state, mode=mode, **options)
    if reason is not None:
        raise ValueError(reason)
    x = jnp.asarray(x)
    batch, length, heads, head_dim = x.shape
    groups, state = B.shape[-2:]
    mm = x.dtype if x.dtype in (jnp.bfloat16, jnp.float16) else jnp.dtype(jnp.float32)
    P, N = head_dim, state
    if _kernel_platform() == "gpu":  # Triton tiles: powers of two, >= 16 for tensor-core dots
        P, N = max(16, _pow2(head_dim)), max(16, _pow2(state))

    def pad(v, dims):  # zero-pad the trailing len(dims) axes up to dims
        widths = [(0, 0)] * (v.ndim - len(dims)) + [(0, d - s) for d, s in zip(dims, v.shape[-len(dims):])]
        return jnp.pad(v, widths) if any(w for _, w in widths) else v

    arrays = dict(x=pad(x.astype(mm), (P,)), dt=jnp.asarray(dt, jnp.float32), A=jnp.asarray(A, jnp.float32),
                  B=pad(jnp.asarray(B).astype(mm), (N,)), C=pad(jnp.asarray(C).astype(mm), (N,)))
    if D is not None:
        arrays["D"] = jnp.asarray(D, jnp.float32)
    if initial_state is not None:
        arrays["h0"] = pad(jnp.asarray(initial_state, jnp.float32), (P, N))
    cfg = _config(length, heads, groups, P, N, D is not None, initial_state is not None, jnp.dtype(mm).name)
    y, final = _ssd(arrays, cfg)
    y = y[..., :head_dim].astype(x.dtype)
    if not return_state:
        return y
    return y, final[..., :head_dim, :state]
