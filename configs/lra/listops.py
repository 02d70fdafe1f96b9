"""Long Range Arena -- ListOps (generated, lengths 500-2000, 10 classes): the published recipe of each
mixer.

    python experiments/lra.py --config lra/listops:s5 --workdir /tmp/lra/listops_s5
    python experiments/lra.py --config lra/listops:transformer --workdir /tmp/lra/listops_transformer
    python experiments/lra.py --config lra/listops:all --workdir /tmp/lra/listops

The argument after ":" is one of transformer, s4, s4d, s5, sgconv, mamba, hyena, gla, a
comma-separated list, or all (each trained in WORKDIR/listops_<mixer>); the recipes and their
sources are in configs/lra/_recipes.py. A single-mixer config also trains
without the report:

    python experiments/train.py --config lra/listops:s5 --workdir /tmp/lra/listops_s5_train

Data: generated on first use by sequax.data.listops (96K/2K/2K, the LRA recipe) into the cache
(~/.cache/sequax or $SEQUAX_CACHE), in one process per CPU: ~3 minutes on 2 cores, ~20 s on 16.

Published test accuracy (%): transformer 36.37, s4 59.60, s4d 60.47, s5 62.15, sgconv 61.45
(ANCHORS.md). Budget (the published epochs): s5: 76,800 steps (40 epochs of batch 50); transformer:
5,000 steps of batch 32. RESULTS.md gives the commands for the GPU runs and their estimated H200
times."""

from configs.lra._recipes import lra_config


def get_config(arg: str = "s5"):
    return lra_config("listops", arg)
