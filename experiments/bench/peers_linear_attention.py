"""PyTorch peers of experiments/bench/linear_attention.py, run in their own process (each framework
grabs GPU memory).

    python experiments/bench/peers_linear_attention.py --shape 2,16384,16,128 --ops gla,delta_rule

Prints one JSON line per case: flash-linear-attention's ``chunk_gla``, ``chunk_simple_gla``
(retention's peer: a log decay per head and token), ``chunk_linear_attn`` (``normalize=False``)
and ``chunk_delta_rule`` on bf16 ``[B, T, H, D]`` inputs drawn like the JAX side's, forward and
forward + backward (gradients of q, k, v and the gate / beta). Median of CUDA-event timings after a
generous warm-up (fla autotunes on first call). An op that refuses to run here (``chunk_simple_gla``
refuses Triton < 3.7.1 on Hopper) is reported with ``runnable: false`` and its error.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse
import traceback

from torch_timing import emit, time_ms as _time_ms  # noqa: E402

OPS = ("gla", "simple_gla", "linear_attn", "delta_rule")


def _inputs(torch, op, shape):
    """``(fla function, positional args, leaves to differentiate)`` for ``op``."""
    import fla.ops as fops

    batch, time, heads, dim = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    dev, bf16 = "cuda", torch.bfloat16

    def randn(*s):
        return torch.randn(*s, generator=gen, device=dev, dtype=torch.float32)

    q, k, v = (randn(batch, time, heads, dim) for _ in range(3))
    if op == "delta_rule":
        q, k = (torch.nn.functional.normalize(x, dim=-1) for x in (q, k))
        beta = torch.sigmoid(randn(batch, time, heads)).to(bf16)
        leaves = [x.to(bf16).requires_grad_() for x in (q, k, v)] + [beta.requires_grad_()]
        return fops.delta_rule.chunk_delta_rule, leaves, leaves
    q, k, v = (x.to(bf16).requires_grad_() for x in (q, k, v))
    if op == "gla":  # the GLA layer's gate: log_sigmoid(.) / 16
        g = (torch.nn.functional.logsigmoid(randn(batch, time, heads, dim)) / 16).requires_grad_()
        return fops.gla.chunk_gla, [q, k, v, g], [q, k, v, g]
    if op == "simple_gla":  # retention: RetNet's per-head decays, broadcast over tokens
        decay = torch.log1p(-(2.0 ** (-5.0 - torch.arange(heads, device=dev, dtype=torch.float32))))
        g = decay.expand(batch, time, heads).contiguous().requires_grad_()
        return fops.simple_gla.chunk_simple_gla, [q, k, v, g], [q, k, v, g]

    def linear_attn(q, k, v, **kw):
        return fops.linear_attn.chunk_linear_attn(q, k, v, normalize=False, **kw)

    return linear_attn, [q, k, v], [q, k, v]


def case(op, shape):
    import torch

    fn, args, leaves = _inputs(torch, op, shape)
    batch, time, heads, dim = shape
    grad_o = torch.full((batch, time, heads, dim), 1e-3, device="cuda", dtype=torch.bfloat16)

    def fwd():
        with torch.no_grad():
            return fn(*args, output_final_state=True)

    def fwd_bwd():
        o, _ = fn(*args, output_final_state=True)
        torch.autograd.grad(o, leaves, grad_o)

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fwd_bwd()  # first call: autotuning
    torch.cuda.synchronize()
    fwd_ms = _time_ms(torch, fwd)
    fwd_bwd_ms = _time_ms(torch, fwd_bwd)
    emit(case=f"peer/fla_chunk_{op}", shape=dict(zip("BTHD", shape)), dtype="bfloat16", runnable=True,
         fwd_ms=fwd_ms, fwd_bwd_ms=fwd_bwd_ms, peak_extra_bytes=torch.cuda.max_memory_allocated() - base,
         torch=torch.__version__)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="2,16384,16,128", help="B,T,H,D")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma-separated subset of {OPS}")
    args = parser.parse_args()
    shape = tuple(int(x) for x in args.shape.split(","))
    try:
        import fla

        emit(case="peer/fla_setup", fla=getattr(fla, "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        emit(case="peer/fla_setup", runnable=False, error=f"{type(e).__name__}: {str(e)[:300]}")
        return
    for op in args.ops.split(","):
        try:
            case(op, shape)
        except Exception as e:  # noqa: BLE001 - one line per failed case
            emit(case=f"peer/fla_chunk_{op}", shape=dict(zip("BTHD", shape)), runnable=False,
                 error=f"{type(e).__name__}: {str(e)[:400]}")
            traceback.print_exc()


if __name__ == "__main__":
    main()
