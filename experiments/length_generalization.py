"""Length generalisation of position schemes (NoPE, RoPE (+ linear / NTK), ALiBi, T5, learned).

    python experiments/length_generalization.py --config length_generalization/copy --workdir /tmp/lg_copy

Configs in configs/length_generalization/ (copy, reverse, addition, sort, task hinting).
Rerunning resumes; metrics.json, accuracy_vs_length.png and TensorBoard scalars land in the
workdir, each run in WORKDIR/<run> (sequax.experiments.length_generalization).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sequax.experiments import length_generalization, cli  # noqa: E402

if __name__ == "__main__":
    cli.main(length_generalization.run)
