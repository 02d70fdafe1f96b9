"""Long Range Arena -- Pathfinder-32 (1024 pixels, connected or not): the published recipe of each
mixer.

    python experiments/lra.py --config lra/pathfinder:s5 --workdir /tmp/lra/pathfinder_s5
    python experiments/lra.py --config lra/pathfinder:transformer --workdir /tmp/lra/pathfinder_transformer
    python experiments/lra.py --config lra/pathfinder:all --workdir /tmp/lra/pathfinder

The argument after ":" is one of transformer, s4, s4d, s5, sgconv, mamba, hyena, gla, a
comma-separated list, or all (each trained in WORKDIR/pathfinder_<mixer>); the recipes and their
sources are in configs/lra/_recipes.py. A single-mixer config also trains
without the report:

    python experiments/train.py --config lra/pathfinder:s5 --workdir /tmp/lra/pathfinder_s5_train

Data: generated on first use by sequax.data.pathfinder (160K/20K/20K, contour length 14, 2
distractors), in one process per CPU (~40 ms an image per process) into the cache.

Published test accuracy (%): transformer 71.40, s4 94.20, s4d 93.06, s5 95.33, sgconv 95.46. Budget
(the published epochs): s5: 500,000 steps (200 epochs of batch 64); transformer: 62,600 steps of
batch 512. RESULTS.md gives the commands for the GPU runs and their estimated H200 times.
"""

from configs.lra._recipes import lra_config


def get_config(arg: str = "s5"):
    return lra_config("pathfinder", arg)
