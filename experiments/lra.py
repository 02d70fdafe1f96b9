"""Long Range Arena: ListOps, Text, Retrieval, Image, Pathfinder, Path-X (sequax.experiments.lra).

    python experiments/lra.py --config lra/listops:s5 --workdir /tmp/lra_listops_s5

The configs are in configs/lra/ (one per task; ":MIXER" picks the mixer, ":all" all of them);
each docstring gives the launch commands. Rerunning resumes; metrics.json, lra.png and
TensorBoard scalars land in the workdir, each run in WORKDIR/<run>.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sequax.experiments import lra, cli  # noqa: E402

if __name__ == "__main__":
    cli.main(lra.run)
