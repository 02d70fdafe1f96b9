"""Train any sequax config.

    python experiments/train.py --config configs/quickstart.py --workdir /tmp/quickstart \
        [--config.train.num_steps=200 ...]

The work lives in ``sequax.train.train_and_evaluate``; this script parses
flags and turns configuration mistakes into one-line errors.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file in configs/.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and plots.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from sequax.train import train_and_evaluate

    try:
        config = _CONFIG.value
        config.keys()  # forces the lazy load
    except OSError as e:  # config_flags defers file-loading errors to first access
        sys.exit(f"error: cannot load --config: {_last_line(e)}")
    try:
        summary = train_and_evaluate(config, _WORKDIR.value)
    except (ValueError, NotImplementedError) as e:
        sys.exit(f"error: {e}")
    summary.pop("state")
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


def _last_line(error) -> str:
    """config_flags folds a whole traceback into its messages; the last line says what failed."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def parse_flags(argv):
    """absl flag parsing with config-override mistakes as one-line errors."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"error: {_last_line(e)}; run with --helpfull for the flags")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        sys.exit(
            f"error: a --config override does not fit the config ({type(e).__name__}: {e}) in "
            f"{' '.join(overrides) or 'the config file'}; check the key's spelling against "
            "sequax/train/config.py and the value's type"
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
