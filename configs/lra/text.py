"""Long Range Arena -- Text: byte-level IMDB sentiment (4096 bytes, 2 classes): the published recipe of
each mixer.

    python experiments/lra.py --config lra/text:s5 --workdir /tmp/lra/text_s5
    python experiments/lra.py --config lra/text:transformer --workdir /tmp/lra/text_transformer
    python experiments/lra.py --config lra/text:all --workdir /tmp/lra/text

The argument after ":" is one of transformer, s4, s4d, s5, sgconv, mamba, hyena, gla, a
comma-separated list, or all (each trained in WORKDIR/text_<mixer>); the recipes and their sources
are in configs/lra/_recipes.py. A single-mixer config also trains with ``python experiments/train.py
--config lra/text:s5 --workdir ...`` (without the report).

Data: the TFDS dataset imdb_reviews, read without TensorFlow; if it is missing the run stops with
one line naming the step (pip install tensorflow-datasets tensorflow-cpu && tfds build
imdb_reviews). Point at another TFDS folder with --config.data.task_kwargs.data_dir=DIR.

Published test accuracy (%): transformer 64.27, s4 86.82, s4d 86.18, s5 89.31, sgconv 89.20. Budget
(the published epochs): s5: 17,500 steps (35 epochs of batch 50); transformer: 20,000 steps of batch
32. RESULTS.md gives the commands for the GPU runs and their estimated H200 times.
"""

from configs.lra._recipes import lra_config


def get_config(arg: str = "s5"):
    return lra_config("text", arg)
