"""``selective_scan`` on Pallas kernels (Mamba's S6 scan, fused).

Same signature and semantics as :func:`sequax.ops.ssm.selective_scan` minus
``backend``, on the inputs the op has validated and normalised (``B``, ``C``
``[batch, length, groups, state]`` float32, ``A`` ``[channels, state]``,
``D``/``delta_bias`` ``[channels]`` or None).

Forward: one kernel pass; the state stays on chip and only ``y`` (and the final
state) are written. Backward (``jax.custom_vjp``): the forward also writes the
state entering every ``chunk`` steps; the backward kernel recomputes each chunk
from it in reverse order and produces every gradient in one pass
(``du``, ``ddelta``, ``dz``, ``dA``, ``dB``, ``dC``, ``dD``, ``ddelta_bias``
and the initial state's). When the batch is too small to fill the GPU, the
sequence is cut into pieces scanned side by side (:func:`_split_scan`; the
table's ``split_*`` entries). See :mod:`pallas_kernels.selective_scan.pallas_gpu`
for the algorithm and :mod:`pallas_kernels.selective_scan.pallas_tpu` for the
TPU variant.

``mode`` and ``chunk_size`` choose the pure-JAX algorithm; the kernel runs its
own fused scan, takes ``mode=None`` and ignores ``chunk_size`` (its tiles come
from :mod:`pallas_kernels.selective_scan.block_sizes`). Inputs are real; any
batch, length, channel count, group count and state size are served.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.platform import interpret as _interpret, kernel_platform as _kernel_platform, pow2 as _pow2
from pallas_kernels.selective_scan import pallas_gpu, pallas_tpu
from pallas_kernels.selective_scan.block_sizes import block_sizes


def _active(options):
    """Names of options that are set (not None, not False)."""
    return sorted(k for k, v in options.items() if v is not None and v is not False)


def why_not(u, delta, A, B, C, *, D=None, z=None, delta_bias=None, delta_softplus=False,
            initial_state=None, return_state=False, mode=None, chunk_size=None, segment_ids=None,
            **options) -> Optional[str]:
    """Why this kernel cannot serve the inputs (``None`` if it can)."""
    if _active(options):
        return f"the pallas selective_scan kernel does not support {', '.join(_active(options))} yet"
    if mode is not None:
        return f"the pallas kernel runs its own fused scan and takes mode=None, got mode={mode!r}"
    arrays = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                  initial_state=initial_state)
    for name, x in arrays.items():
        if x is not None and jnp.iscomplexobj(x):
            return f"the pallas kernel takes real inputs ({name} is complex)"
    if jax.default_backend() not in ("cpu", "gpu", "cuda", "tpu"):
        return f"no pallas selective_scan for platform {jax.default_backend()!r}"
    return None


def _config(batch, length, groups, cpg, state, flags):
    """The kernel's static configuration for these shapes."""
    bs = block_sizes()
    if _kernel_platform() == "tpu":
        # Lane-dim blocks: a multiple of 128 (the table's) or the whole axis.
        channels = cpg if cpg <= bs["channels"] else bs["channels"]
        time = length if length <= bs["time"] else bs["time"]
        return pallas_gpu.Config(length=length, cpg=cpg, channels=channels, state=state, time=time,
                                 chunk=time, num_warps=1, **flags)
    channels = min(bs["channels"], _pow2(cpg))
    # Enough programs to fill the GPU: split channels finer when batch * groups is small.
    while channels > bs["min_channels"] and batch * groups * -(-cpg // channels) < bs["min_programs"]:
        channels //= 2
    time = max(1, min(bs["time"], length))
    tiles = -(-length // time)
    per_chunk = max(1, min(bs["chunk"] // time, tiles))
    return pallas_gpu.Config(
        length=length, cpg=cpg, channels=channels, state=state, time=time, chunk=per_chunk * time,
        num_warps=bs["num_warps"], **flags,
    )


def _pieces(batch, groups, cpg, length, cfg):
    """How many pieces to cut the sequence into (1: none; see :func:`_split_scan`)."""
    bs = block_sizes()
    programs = batch * groups * -(-cpg // cfg.channels)
    if _kernel_platform() == "tpu" or programs >= bs["split_below"]:
        return 1
    return max(1, min(-(-bs["split_programs"] // programs), length // bs["min_piece"]))


def _split_scan(arrays, flags, batch, length, groups, cpg, n, pieces):
    """The scan with the sequence cut into ``pieces`` scanned side by side: ``(y, final)``.

    The kernel walks the sequence sequentially in one program per (batch row, channel block);
    when those are too few to fill the GPU, each piece becomes a batch row of its own:

    1. scan every piece from a zero state: its final state ``F_c``;
    2. ``P_c`` = the piece's total decay ``exp(A sum_t delta_t)`` (0 if a segment starts in
       it), and the state entering piece ``c`` is ``h_c = P_{c-1} h_{c-1} + F_{c-1}`` (an
       associative scan over the pieces, ``h_0`` the initial state);
    3. scan every piece again from ``h_c``: the outputs.

    Twice the kernel work with ``pieces`` times the parallelism; JAX differentiates the
    composition (each kernel call has its own VJP). The sequence is padded to whole pieces
    with steps that leave the state as it is (``delta`` = 0 after bias and softplus).
    """
    time = block_sizes()["time"]
    piece = -(-length // pieces)
    piece = -(-piece // time) * time  # whole tiles
    pieces = -(-length // piece)
    pad = pieces * piece - length
    arrays = dict(arrays)
    if flags["has_bias"] and not flags["softplus"]:
        # fold the bias in, so padding with delta = 0 is exact
        arrays["delta"] = arrays["delta"].astype(jnp.float32) + arrays.pop("bias")
        flags = dict(flags, has_bias=False)
    delta_pad = float("-inf") if flags["softplus"] else 0.0
    h0 = arrays.pop("h0", None)

    def cut(x, value=0.0):  # [b, l, ...] -> [b * pieces, piece, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=value)
        return x.reshape((batch * pieces, piece) + x.shape[2:])

    parts = {k: (cut(v, delta_pad if k == "delta" else 1.0 if k == "keep" else 0.0)
                 if k in ("u", "delta", "z", "B", "C", "keep") else v) for k, v in arrays.items()}
    part_flags = dict(flags, has_h0=False)
    cfg = _config(batch * pieces, piece, groups, cpg, n, part_flags)
    _, ends = _scan(parts, cfg, True)  # [b * pieces, g, cpg, n]: each piece from zero

    delta = parts["delta"].astype(jnp.float32)
    if flags["has_bias"]:
        delta = delta + parts["bias"]
    if flags["softplus"]:
        delta = jax.nn.softplus(delta)
    total = jnp.sum(delta, axis=1).reshape(batch, pieces, groups, cpg, 1)
    decay = jnp.exp(arrays["A"] * total)  # [b, pieces, g, cpg, n]
    if flags["has_keep"]:
        unbroken = jnp.min(parts["keep"], axis=1).reshape(batch, pieces, 1, 1, 1)
        decay = decay * unbroken
    ends = ends.reshape(batch, pieces, groups, cpg, n)

    def combine(a, b):  # a: the earlier run of pieces
        return a[0] * b[0], b[0] * a[1] + b[1]

    decays, states = jax.lax.associative_scan(combine, (decay, ends), axis=1)  # from a zero start
    if h0 is not None:
        states = states + decays * h0[:, None]
    start = jnp.zeros_like(states[:, :1]) if h0 is None else h0[:, None]
    entering = jnp.concatenate([start, states[:, :-1]], axis=1).reshape(batch * pieces, groups, cpg, n)
    cfg = _config(batch * pieces, piece, groups, cpg, n, dict(flags, has_h0=True))
    y, _ = _scan(dict(parts, h0=entering), cfg, False)
    y = y.reshape((batch, pieces * piece) + y.shape[2:])[:, :length]
    return y, states[:, -1]


def _run_forward(arrays, cfg, save_bounds, return_final):
    kernel = pallas_tpu if _kernel_platform() == "tpu" else pallas_gpu
    return kernel.forward(arrays, cfg, save_bounds=save_bounds, return_final=return_final,
                          interpret=_interpret())


def _run_backward(arrays, bounds, gy, dfinal, cfg):
    kernel = pallas_tpu if _kernel_platform() == "tpu" else pallas_gpu
    return kernel.backward(arrays, bounds, gy, dfinal, cfg, interpret=_interpret())


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _scan(arrays, cfg, return_final):
    y, final, _ = _run_forward(arrays, cfg, False, return_final)
    return y, final


def _scan_fwd(arrays, cfg, return_final):
    y, final, bounds = _run_forward(arrays, cfg, True, return_final)
    return (y, final), (arrays, bounds)


def _scan_bwd(cfg, return_final, res, cts):
    arrays, bounds = res
    gy, dfinal = cts
    if not return_final:
        dfinal = None
    g = _run_backward(arrays, bounds, gy.astype(arrays["u"].dtype), dfinal, cfg)
    grads = dict(
        u=g["du"], delta=g["ddelta"], A=jnp.sum(g["dA"], axis=0),
        B=jnp.sum(g["dB"], axis=3), C=jnp.sum(g["dC"], axis=3),
    )
    if cfg.has_z:
        grads["z"] = g["dz"]
    if cfg.has_D:
        grads["D"] = jnp.sum(g["dD"], axis=0)
    if cfg.has_bias:
        grads["bias"] = jnp.sum(g["dbias"], axis=0)
    if cfg.has_keep:
        grads["keep"] = jnp.zeros_like(arrays["keep"])
    if cfg.has_h0:
        grads["h0"] = g["dh0"]
    grads = {k: v.astype(arrays[k].dtype) for k, v in grads.items()}
    return (grads,)


_scan.defvjp(_scan_fwd, _scan_bwd)


def selective_scan(u, delta, A, B, C, *, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_state=False, mode=None, chunk_size=None,
                   segment_ids=None, **options):
    """The selective scan of Mamba (see :func:`sequax.ops.ssm.selective_scan`).

    Args:
      u, delta: ``[batch, length, channels]`` (any float dtype; math in float32).
      A: ``[channels, state]`` float32.
      B, C: ``[batch, length, groups, state]`` float32 (channel ``d`` uses group
        ``d // (channels // groups)``).
      D, delta_bias: ``[channels]`` or None.
      z: ``[batch, length, channels]`` gate or None (``y *= silu(z)``).
      delta_softplus: ``delta = softplus(delta + delta_bias)``.
      initial_state: ``[batch, channels, state]`` or None (zeros).
      return_state: also return the final state.
      mode, chunk_size: the pure-JAX path's; ``mode`` must be None here.
      segment_ids: ``[batch, length]`` ints or None; the state restarts at
        zero where the id changes.

    Returns:
      ``y`` ``[batch, length, channels]`` in ``u``'s dtype, and with
      ``return_state`` the final float32 state ``[batch, channels, state]``.
    """
    reason = why_not(u, delta, A, B, C, mode=mode, **options)
    if reason is not None:
        raise ValueError(reason)
    batch, length, channels = u.shape
    groups, state = B.shape[2], B.shape[3]
    cpg = channels // groups
    # Triton tiles are powers of two (>= 16 for good layouts); TPU blocks take the whole axis.
    n = state if _kernel_platform() == "tpu" else max(16, _pow2(state))
    pad_n = [(0, 0)] * 3 + [(0, n - state)]

    def grouped(x):  # [b, l, d] -> [b, l, g, cpg]
        return x.reshape(batch, length, groups, cpg)

    arrays = dict(
        u=grouped(u), delta=grouped(delta),
        A=jnp.pad(A.astype(jnp.float32).reshape(groups, cpg, state), pad_n[1:]),
        B=jnp.pad(B.astype(jnp.float32), pad_n), C=jnp.pad(C.astype(jnp.float32), pad_n),
    )
    if z is not None:
        arrays["z"] = grouped(z)
    if D is not None:
        arrays["D"] = D.astype(jnp.float32).reshape(groups, cpg)
    if delta_bias is not None:
        arrays["bias"] = delta_bias.astype(jnp.float32).reshape(groups, cpg)
    if segment_ids is not None:
        seg = jnp.asarray(segment_ids)
        starts = jnp.concatenate([jnp.zeros_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], axis=1)
        arrays["keep"] = 1.0 - starts.astype(jnp.float32)
    if initial_state is not None:
        h0 = jnp.asarray(initial_state, jnp.float32).reshape(batch, groups, cpg, state)
        arrays["h0"] = jnp.pad(h0, pad_n)
    flags = dict(has_z=z is not None, has_D=D is not None, has_bias=delta_bias is not None,
                 softplus=bool(delta_softplus), has_keep=segment_ids is not None,
                 has_h0=initial_state is not None)
    cfg = _config(batch, length, groups, cpg, n, flags)
    pieces = _pieces(batch, groups, cpg, length, cfg)
    if pieces > 1:
        y, final = _split_scan(arrays, flags, batch, length, groups, cpg, n, pieces)
    else:
        y, final = _scan(arrays, cfg, bool(return_state))
    y = y.reshape(batch, length, channels)
    if not return_state:
        return y
    return y, final[..., :state].reshape(batch, channels, state)
