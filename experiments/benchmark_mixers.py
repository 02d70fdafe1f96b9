"""Kernel benchmarks of the sub-quadratic mixers' hot ops, one JSON line per case.

    python experiments/benchmark_mixers.py [--quick] [--families ssm,linear_attention,fftconv,scan]

Each family module in ``experiments/bench/`` times the Pallas kernel beside the
pure-JAX path (and the PyTorch peer, in its own process, where it is
importable) in the same run, and prints the ratios in the same line:

- ``ssm``: selective scan (Mamba) and SSD (Mamba-2, vs ``mamba_chunk_scan_combined``),
  effective GB/s on the minimal traffic, compiled temporaries, one layer up to 1M tokens;
- ``linear_attention``: GLA, retention, linear attention, DeltaNet vs flash-linear-attention;
- ``fftconv``: the FFT convolution vs ``jnp.fft`` from 1K to 1M;
- ``scan``: the first-order linear recurrence (the kernel contract's example).

Flash attention has its own script, ``experiments/benchmark_attention.py``. The
figures measured on an H200, with their commands, are in ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FAMILIES = ("ssm", "linear_attention", "fftconv", "scan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the headline shapes only")
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    for family in args.families.split(","):
        if family not in FAMILIES:
            sys.exit(f"error: unknown family {family!r}; choose from {', '.join(FAMILIES)}")
        importlib.import_module(f"experiments.bench.{family}").run(quick=args.quick)


if __name__ == "__main__":
    main()
