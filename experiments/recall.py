"""Synthetic recall: MQAR width x length sweeps, induction heads, selective copying, passkey.

    python experiments/recall.py --config recall/mqar_sweep --workdir /tmp/mqar_sweep

Configs in configs/recall/; --config.experiment.only=PATTERN trains some runs only. Rerunning
resumes; metrics.json, mqar_width.png / accuracy_vs_length.png and TensorBoard scalars land in
the workdir, each run in WORKDIR/<run> (sequax.experiments.recall).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sequax.experiments import recall, cli  # noqa: E402

if __name__ == "__main__":
    cli.main(recall.run)
