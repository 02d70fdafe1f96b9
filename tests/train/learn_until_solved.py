"""Train a shipped config until its first evaluation at ``threshold``; print the summary as JSON.

    python tests/train/learn_until_solved.py CONFIG THRESHOLD EVAL_EVERY WORKDIR

Run by tests/train/test_learning.py in a process of its own, so that the training runs as
optimised code (the test process compiles unoptimised, see tests/conftest.py).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import configs  # noqa: E402
from sequax.train import train_and_evaluate  # noqa: E402


def main(name, threshold, eval_every, workdir):
    config = configs.get(name)
    config.eval.every = int(eval_every)
    config.checkpoint.every = 0
    tic = time.perf_counter()
    summary = train_and_evaluate(config, workdir,
                                 stop_when=lambda step, evals: evals["eval"]["accuracy"] >= float(threshold))
    print(json.dumps(dict(step=int(summary["step"]), eval_accuracy=float(summary["eval_accuracy"]),
                          budget=int(config.train.num_steps), seconds=time.perf_counter() - tic)))


if __name__ == "__main__":
    main(*sys.argv[1:])
