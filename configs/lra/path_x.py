"""Long Range Arena -- Path-X: Pathfinder at 128 x 128 (16384 pixels): the published recipe of each
mixer.

    python experiments/lra.py --config lra/path_x:s5 --workdir /tmp/lra/path_x_s5
    python experiments/lra.py --config lra/path_x:transformer --workdir /tmp/lra/path_x_transformer
    python experiments/lra.py --config lra/path_x:all --workdir /tmp/lra/path_x

The argument after ":" is one of transformer, s4, s4d, s5, sgconv, mamba, hyena, gla, a
comma-separated list, or all (each trained in WORKDIR/path_x_<mixer>); the recipes and their sources
are in configs/lra/_recipes.py. A single-mixer config also trains with ``python experiments/train.py
--config lra/path_x:s5 --workdir ...`` (without the report).

Data: generated on first use by sequax.data.pathfinder at resolution 128 (the same layouts drawn 4x
larger; 160K/20K/20K, 3.2 GB cached), in one process per CPU.

Published test accuracy (%): transformer fails (50, chance), s4 96.35, s4d 91.95, s5 98.58, sgconv
97.83. Budget (the published epochs): s5: 375,000 steps (75 epochs of batch 32). RESULTS.md gives
the commands for the GPU runs and their estimated H200 times.
"""

from configs.lra._recipes import lra_config


def get_config(arg: str = "s5"):
    return lra_config("path_x", arg)
