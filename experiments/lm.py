r"""Byte-level language modelling on local text (default: the Python standard library sources).

    python experiments/lm.py --config lm/bytes --workdir /tmp/lm_bytes \
        [--config.data.task_kwargs.path=/path/to/text_or_folder]

Then sample: python experiments/sample.py --workdir /tmp/lm_bytes/run --prompt "def " .
Rerunning resumes; metrics.json, bits_per_byte.png and TensorBoard scalars land in the workdir,
each run in WORKDIR/<run> (sequax.experiments.lm).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sequax.experiments import lm, cli  # noqa: E402

if __name__ == "__main__":
    cli.main(lm.run)
