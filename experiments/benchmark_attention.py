"""Attention speed on one GPU: the Pallas flash kernel beside cuDNN, XLA, the blockwise path and tokamax.

    python experiments/benchmark_attention.py            # every case (~10 min on an H200)
    python experiments/benchmark_attention.py --quick    # (4, 16, 8192, 128), window 4096 at 32K, L = 131072 (~2 min)
    python experiments/benchmark_attention.py --sweep    # block-size rows of the Triton kernels

Prints one JSON line per case (see experiments/bench/attention.py for the cases,
the FLOP count and the targets); every ratio is measured in the same run.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.bench import attention  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the headline cases only (~2 minutes on an H200)")
    parser.add_argument("--sweep", action="store_true", help="time block-size rows of the Triton kernels instead")
    args = parser.parse_args()
    if args.sweep:
        attention.sweep()
    else:
        attention.run(quick=args.quick)


if __name__ == "__main__":
    main()
