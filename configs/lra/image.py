"""Long Range Arena -- Image: grayscale CIFAR-10 as 1024 pixel tokens (10 classes): the published
recipe of each mixer.

    python experiments/lra.py --config lra/image:s5 --workdir /tmp/lra/image_s5
    python experiments/lra.py --config lra/image:transformer --workdir /tmp/lra/image_transformer
    python experiments/lra.py --config lra/image:all --workdir /tmp/lra/image

The argument after ":" is one of transformer, s4, s4d, s5, sgconv, mamba, hyena, gla, a
comma-separated list, or all (each trained in WORKDIR/image_<mixer>); the recipes and their sources
are in configs/lra/_recipes.py. A single-mixer config also trains with ``python experiments/train.py
--config lra/image:s5 --workdir ...`` (without the report).

Data: the TFDS dataset cifar10 (45K train / 5K validation / 10K test), decoded once into the cache
without TensorFlow; if it is missing the run stops with one line naming the step (tfds build
cifar10).

Published test accuracy (%): transformer 42.44, s4 88.65, s4d 88.19, s5 88.00, sgconv 87.97. Budget
(the published epochs): s5: 225,000 steps (250 epochs of batch 50); transformer: 35,200 steps of
batch 256. RESULTS.md gives the commands for the GPU runs and their estimated H200 times.
"""

from configs.lra._recipes import lra_config


def get_config(arg: str = "s5"):
    return lra_config("image", arg)
