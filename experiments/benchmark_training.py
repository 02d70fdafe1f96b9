"""Training throughput of same-size models with different mixers, measured in one run.

    python experiments/benchmark_training.py --mixers attention,mamba,gla,hyena \
        --layers 12 --d_model 1024 --length 4096 --batch 8 --steps 30

Each mixer trains the same backbone (``model.num_layers`` blocks of width
``model.d_model``, bf16 compute) on MQAR batches through
``sequax.train.train_and_evaluate`` for ``--steps`` steps in a fresh temporary
workdir; the trainer's own tokens/s is reported (wall time from the end of the
first step, so compilation excluded, less evaluation and checkpointing; since
2026-12-02's sixth session the loop no longer waits for each step's metrics, so
host work overlaps the device as in any run), with the ratio to the first mixer
listed. One JSON line per mixer.

``--profile`` instead profiles one loss-and-gradient step of each model (no
optimizer) and prints where its device time goes, per module summed over the
layers (``blocks/GLA/gk_up``) and per op (``experiments.bench.device_profile``): the
breakdown that says which part of a block to make faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.bench.common import emit, device_kind  # noqa: E402

# Mixer options that make the blocks comparable in width (heads of 64 or 128 channels).
MIXER_KWARGS = {
    "attention": dict(num_heads=8),
    "gla": dict(num_heads=8, chunk_size=64),
    "deltanet": dict(num_heads=8, chunk_size=64),
    "retention": dict(num_heads=8, chunk_size=64),
    "mamba": dict(d_state=16),
    "mamba2": dict(head_dim=64, d_state=128, chunk_size=256),
    "hyena": dict(),
}


def config_for(mixer, args):
    from sequax.train.config import default_config

    c = default_config()
    c.model.mixer = mixer
    kwargs = dict(MIXER_KWARGS.get(mixer, {}))
    if mixer == "hyena":
        kwargs["max_length"] = args.length
    heads = kwargs.pop("num_heads", None)
    if heads:
        c.model.num_heads = heads
    c.model.mixer_kwargs = kwargs
    c.model.vocab_size = 8192
    c.model.d_model = args.d_model
    c.model.num_layers = args.layers
    c.model.mlp_ratio = args.mlp_ratio
    c.model.dtype = "bfloat16"
    c.data.task = "mqar"
    c.data.task_kwargs = dict(vocab_size=8192, seq_len=args.length, num_kv_pairs=64)
    c.train.num_steps = args.steps
    c.train.batch_size = args.batch
    c.train.log_every = max(args.steps // 3, 1)
    c.eval.every = 0
    c.eval.num_batches = 1
    c.eval.batch_size = args.batch
    c.checkpoint.every = 0
    return c


def profile_step(config, top=30):
    """Device time of one loss-and-gradient step of ``config``'s model, by module and by op."""
    import jax
    import numpy as np

    from experiments.bench.device_profile import device_op_times
    from sequax.data import make_task
    from sequax.models.backbone import build_model
    from sequax.train.trainer import loss_and_metrics

    model = build_model(config.model)
    task = make_task(config.data.task, **dict(config.data.task_kwargs))
    batch = {k: jax.numpy.asarray(v) for k, v in task.batch(np.random.default_rng(0), config.train.batch_size).items()}
    params = jax.jit(lambda b: model.init(jax.random.PRNGKey(0), b["inputs"])["params"])(batch)
    step = jax.jit(jax.grad(lambda p, b: loss_and_metrics(model, p, b, jax.random.PRNGKey(1), True)[0]))
    return device_op_times(step, params, batch, top=top)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixers", default="attention,mamba,gla,hyena")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d_model", type=int, default=1024)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--mlp_ratio", type=float, default=2.0)
    parser.add_argument("--profile", action="store_true", help="profile one gradient step per mixer instead")
    args = parser.parse_args()
    if args.profile:
        for mixer in args.mixers.split(","):
            record = dict(case="train_profile", device=device_kind(), mixer=mixer, layers=args.layers,
                          d_model=args.d_model, length=args.length, batch=args.batch)
            try:
                emit(**record, **profile_step(config_for(mixer, args)))
            except Exception as e:  # noqa: BLE001
                emit(**record, error=f"{type(e).__name__}: {str(e)[:300]}")
        return
    from sequax.train import train_and_evaluate

    baseline = None
    for mixer in args.mixers.split(","):
        record = dict(case="train_throughput", device=device_kind(), mixer=mixer, layers=args.layers,
                      d_model=args.d_model, length=args.length, batch=args.batch, steps=args.steps)
        try:
            with tempfile.TemporaryDirectory() as workdir:
                summary = train_and_evaluate(config_for(mixer, args), workdir)
            tps = float(summary["tokens_per_second"])
            baseline = tps if baseline is None else baseline
            emit(**record, tokens_per_second=tps, ratio_to_first=tps / baseline,
                 final_train_loss=float(summary["train_loss"]))
        except Exception as e:  # noqa: BLE001 - report and go on with the next mixer
            emit(**record, error=f"{type(e).__name__}: {str(e)[:300]}")


if __name__ == "__main__":
    main()
