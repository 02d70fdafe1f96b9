"""PyTorch peers of experiments/bench/ssm.py, run in their own process (each framework grabs GPU memory).

    python experiments/bench/peers_ssm.py --ssd 4,4096,32,64,128,1 --chunk 256

Prints one JSON line per case: Mamba's Triton SSD kernel ``mamba_chunk_scan_combined`` (bf16,
with D, dt already positive: the inputs of ``sequax.ops.ssm.ssd``) forward and forward +
backward, and whether Mamba's CUDA selective scan can run here (it needs the compiled
extension). Median of CUDA-event timings after a generous warm-up (Triton autotuning).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import argparse
import traceback

from torch_timing import emit, time_ms as _time_ms  # noqa: E402


def ssd_case(shape, chunk):
    import torch
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    batch, length, heads, head_dim, state, groups = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    dev, bf16 = "cuda", torch.bfloat16

    def randn(*s, dtype=bf16):
        return torch.randn(*s, generator=gen, device=dev, dtype=torch.float32).to(dtype)

    x = randn(batch, length, heads, head_dim)
    dt = torch.nn.functional.softplus(randn(batch, length, heads, dtype=torch.float32) - 3.0)
    A = -torch.linspace(1.0, 16.0, heads, device=dev)
    B = randn(batch, length, groups, state)
    C = randn(batch, length, groups, state)
    D = torch.ones(heads, device=dev)
    leaves = [t.requires_grad_() for t in (x, dt, A, B, C, D)]
    grad_y = torch.full((batch, length, heads, head_dim), 1e-3, device=dev, dtype=bf16)

    def fwd():
        with torch.no_grad():
            return mamba_chunk_scan_combined(x, dt, A, B, C, chunk, D=D)

    def fwd_bwd():
        y = mamba_chunk_scan_combined(x, dt, A, B, C, chunk, D=D)
        torch.autograd.grad(y, leaves, grad_y)

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fwd_ms = _time_ms(torch, fwd)
    fwd_bwd_ms = _time_ms(torch, fwd_bwd)
    emit(case="ssd/mamba_chunk_scan_combined", shape=dict(zip(("B", "L", "H", "P", "N", "G"), shape)),
         chunk=chunk, dtype="bfloat16", fwd_ms=fwd_ms, fwd_bwd_ms=fwd_bwd_ms,
         peak_extra_bytes=torch.cuda.max_memory_allocated() - base, torch=torch.__version__)


def selective_scan_probe():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
        emit(case="selective_scan/mamba_cuda", runnable=True)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        emit(case="selective_scan/mamba_cuda", runnable=False, error=f"{type(e).__name__}: {str(e)[:200]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssd", default="4,4096,32,64,128,1", help="B,L,H,P,N,G")
    parser.add_argument("--chunk", type=int, default=256)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.ssd.split(","))
    try:
        ssd_case(shape, args.chunk)
    except Exception as e:  # noqa: BLE001 - one line per failed case
        emit(case="ssd/mamba_chunk_scan_combined", error=f"{type(e).__name__}: {str(e)[:400]}")
        traceback.print_exc()
    selective_scan_probe()


if __name__ == "__main__":
    main()
