"""Long Range Arena -- Retrieval: byte-level AAN citation matching (2 x 4000 bytes, two-tower head):
the published recipe of each mixer.

    python experiments/lra.py --config lra/retrieval:s5 --workdir /tmp/lra/retrieval_s5
    python experiments/lra.py --config lra/retrieval:transformer --workdir /tmp/lra/retrieval_transformer
    python experiments/lra.py --config lra/retrieval:all --workdir /tmp/lra/retrieval

The argument after ":" is one of transformer, s4, s4d, s5, sgconv, mamba, hyena, gla, a
comma-separated list, or all (each trained in WORKDIR/retrieval_<mixer>); the recipes and their
sources are in configs/lra/_recipes.py. A single-mixer config also trains
without the report:

    python experiments/train.py --config lra/retrieval:s5 --workdir /tmp/lra/retrieval_s5_train

Data: the LRA release's tsv_data/new_aan_pairs.*.tsv (AAN is no TFDS dataset): download
https://storage.googleapis.com/long-range-arena/lra_release.gz and unpack it into ~/lra_release (or
--config.data.task_kwargs.data_dir=DIR); without it the run stops with that one line.

Published test accuracy (%): transformer 57.46, s4 90.90, s4d 89.46, s5 91.40, sgconv 91.11. Budget
(the published epochs): s5: 91,940 steps (20 epochs of batch 32); transformer: 5,000 steps of batch
32. RESULTS.md gives the commands for the GPU runs and their estimated H200 times.
"""

from configs.lra._recipes import lra_config


def get_config(arg: str = "s5"):
    return lra_config("retrieval", arg)
