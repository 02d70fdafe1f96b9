"""Train any sequax config.

    python experiments/train.py --config configs/quickstart.py --workdir /tmp/quickstart \
        [--config.train.num_steps=200 --config.model.mixer_kwargs.KEY=VALUE ...]

``--config`` also takes a config name (``quickstart``, ``mixers/gla``), from
any directory. The work lives in ``sequax.train.train_and_evaluate``; the
command line (config names, overrides, one-line errors, exit statuses 0 / 1 /
130 / 143) is ``sequax.experiments.cli``'s, shared by every experiment script.
Running the same command again resumes from the workdir's newest intact
checkpoint; on a finished workdir it changes nothing.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sequax.experiments import cli  # noqa: E402


def train(config, workdir):
    from sequax.train import train_and_evaluate

    return train_and_evaluate(config, workdir)


def summary_line(summary, workdir):
    """``step=1000 train_loss=... eval_accuracy=1 ...``: the summary's scalars on one line."""
    summary = {k: v for k, v in summary.items() if k != "state"}
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items())


if __name__ == "__main__":
    cli.main(train, summary_line)
