"""``linear_scan`` on Pallas kernels: the worked example of the kernel-folder contract.

Same signature and semantics as :func:`sequax.ops.scan.linear_scan` (minus
``mode``/``chunk_size``/``backend``, which belong to the dispatcher), for real
inputs. ``sequax.ops`` validates the arguments before it calls here.

Forward: one kernel pass (``pallas_gpu`` on GPUs, ``pallas_tpu`` on TPUs,
either interpreted on a CPU). Backward (``jax.custom_vjp``): the adjoint of a
first-order recurrence is the same recurrence run the other way,
``lam_t = g_t + a_{t+1} lam_{t+1}``, so it is one more pass of the same kernel;
then ``db = lam``, ``da = lam * h_{t-1}`` and ``dh_{-1} = a_0 lam_0``.
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from pallas_kernels.platform import platform as _platform
from pallas_kernels.linear_scan import pallas_gpu, pallas_tpu
from pallas_kernels.linear_scan.block_sizes import block_sizes


def why_not(a, b, *, initial_state=None, reverse=False, segment_ids=None, mode=None, **_) -> Optional[str]:
    """Why this kernel cannot serve the inputs (``None`` if it can)."""
    if mode is not None:
        return f"the pallas kernel runs its own fused scan and takes mode=None, got mode={mode!r}"
    if any(jnp.iscomplexobj(x) for x in (a, b) if x is not None):
        return "the pallas kernel takes real inputs (complex a or b given)"
    if jax.default_backend() not in ("cpu", "gpu", "cuda", "tpu"):
        return f"no pallas linear_scan for platform {jax.default_backend()!r}"
    return None


def _run(a, b, h0, reverse):
    """``a``, ``b`` ``[batch, length, channels]`` float32, ``h0`` ``[batch, channels]`` -> all ``h``."""
    interpret = _platform() == "cpu"
    h0 = h0[:, None]
    if _platform() == "tpu":
        cfg = block_sizes()
        time = min(cfg["time"], max(8, 1 << (a.shape[1] - 1).bit_length()))
        pad = -a.shape[1] % time
        widths = [(0, 0), (pad, 0) if reverse else (0, pad), (0, 0)]
        a_p, b_p = jnp.pad(a, widths, constant_values=1.0), jnp.pad(b, widths)
        h = pallas_tpu.scan(a_p, b_p, h0, reverse=reverse, features=cfg["features"], time=time,
                            interpret=interpret)
        return h[:, pad:] if reverse else h[:, : a.shape[1]]
    cfg = block_sizes()
    return pallas_gpu.scan(a, b, h0, reverse=reverse, features=cfg["features"],
                           num_warps=cfg["num_warps"], interpret=interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _scan(a, b, h0, reverse):
    return _run(a, b, h0, reverse)


def _scan_fwd(a, b, h0, reverse):
    h = _run(a, b, h0, reverse)
    return h, (a, h, h0)


def _scan_bwd(reverse, res, g):
    a, h, h0 = res
    # In scan order, lam_t = g_t + a_{t+1} lam_{t+1}: the same recurrence the
    # other way round, with a shifted one step towards the end of the scan.
    if reverse:
        a_next = jnp.pad(a[:, :-1], [(0, 0), (1, 0), (0, 0)])
        h_prev = jnp.concatenate([h[:, 1:], h0[:, None]], axis=1)
    else:
        a_next = jnp.pad(a[:, 1:], [(0, 0), (0, 1), (0, 0)])
        h_prev = jnp.concatenate([h0[:, None], h[:, :-1]], axis=1)
    lam = _run(a_next, g, jnp.zeros_like(h0), not reverse)
    first = -1 if reverse else 0
    return lam * h_prev, lam, a[:, first] * lam[:, first]


_scan.defvjp(_scan_fwd, _scan_bwd)


def linear_scan(a, b, *, initial_state=None, reverse=False, segment_ids=None, return_state=False):
    """All states of ``h_t = a_t h_{t-1} + b_t`` along axis 1 (see :func:`sequax.ops.scan.linear_scan`).

    Args:
      a: ``[batch, length, ...]``, broadcastable to ``b``; real.
      b: ``[batch, length, ...]``.
      initial_state: ``[batch, ...]`` or None (zeros).
      reverse: scan from the end.
      segment_ids: ``[batch, length]`` ints; the state restarts where the id
        changes (in scan order).
      return_state: also return the final state.

    Returns:
      ``h`` like ``b`` (float32 math, the inputs' result dtype), and the final
      state with ``return_state``.
    """
    out_dtype = jnp.result_type(a, b) if initial_state is None else jnp.result_type(a, b, initial_state)
    batch, length = b.shape[:2]
    rest = b.shape[2:]
    a = jnp.broadcast_to(jnp.asarray(a, jnp.float32), b.shape).reshape(batch, length, -1)
    b = jnp.asarray(b, jnp.float32).reshape(batch, length, -1)
    if segment_ids is not None:
        seg = jnp.asarray(segment_ids)
        step = -1 if reverse else 1
        prev = jnp.roll(seg, step, axis=1)  # the previous position in scan order
        starts = seg != prev
        starts = starts.at[:, -1 if reverse else 0].set(False)
        a = jnp.where(starts[..., None], 0.0, a)
    h0 = jnp.zeros((batch, a.shape[-1]), jnp.float32)
    if initial_state is not None:
        h0 = jnp.asarray(initial_state, jnp.float32).reshape(batch, -1)
    h = _scan(a, b, h0, bool(reverse))
    final = (h[:, 0] if reverse else h[:, -1]).reshape((batch,) + rest).astype(out_dtype)
    h = h.reshape(b.shape[:2] + rest).astype(out_dtype)
    return (h, final) if return_state else h
