"""Hyperparameter sweep for the MQAR quickstart (run on a GPU to pick the CPU defaults).

    python experiments/quickstart_sweep.py OUT_DIR
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from absl import logging  # noqa: E402

logging.set_verbosity(logging.WARNING)
from configs.quickstart import get_config  # noqa: E402
from sequax.train import train_and_evaluate  # noqa: E402

SMALL = {"data.task_kwargs": dict(vocab_size=32, seq_len=32, num_kv_pairs=4), "model.vocab_size": 32}
T5 = {"model.mixer_kwargs": dict(positional="t5")}
VARIANTS = {
    "small_rope_s1": {**SMALL, "train.seed": 1},
    "small_rope_s2": {**SMALL, "train.seed": 2},
    "small_rope_mlp0_s1": {**SMALL, "train.seed": 1, "model.mlp_ratio": 0.0},
    "small_rope_mlp0_s2": {**SMALL, "train.seed": 2, "model.mlp_ratio": 0.0},
    "small_rope_b256_s1": {**SMALL, "train.seed": 1, "train.batch_size": 256},
    "small_rope_b256_s2": {**SMALL, "train.seed": 2, "train.batch_size": 256},
    "small_t5_b256_s2": {**SMALL, **T5, "train.seed": 2, "train.batch_size": 256},
    "small_t5_b256_s3": {**SMALL, **T5, "train.seed": 3, "train.batch_size": 256},
    "small_rope_lr1e-2_b256_s1": {**SMALL, "train.seed": 1, "train.batch_size": 256, "optimizer.learning_rate": 1e-2},
    "small_rope_d128_s1": {**SMALL, "train.seed": 1, "model.d_model": 128},
    "base_rope_b256": {"train.batch_size": 256},
    "base_t5_b256": {**T5, "train.batch_size": 256},
}

out = sys.argv[1]
results = {}
for name, changes in VARIANTS.items():
    config = get_config()
    config.train.num_steps = int(os.environ.get("STEPS", 3000))
    config.eval.every = 100
    config.checkpoint.every = 0
    for key, value in changes.items():
        section, field = key.split(".")
        config[section][field] = value
    tic = time.time()
    summary = train_and_evaluate(config, os.path.join("/tmp/sweep", name))
    history = json.load(open(os.path.join("/tmp/sweep", name, "metrics.json")))["history"]
    acc = [round(a, 3) for _, a in history["eval/accuracy"]]
    first = next((s for s, a in history["eval/accuracy"] if a >= 0.99), None)
    results[name] = {"seconds": round(time.time() - tic, 1), "first_step_0.99": first, "acc": acc}
    print(name, results[name], flush=True)
    json.dump(results, open(os.path.join(out, "sweep.json"), "w"), indent=1)
