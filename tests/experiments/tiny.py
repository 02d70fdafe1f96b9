"""Shrinking experiment configs to test size: a few steps of a one-layer model."""

import glob
import struct

from tensorboardX.proto import event_pb2


def tiny(config, steps=2, d_model=16):
    """``config`` (and each of its runs) at a few steps of a small one-layer model, in place."""
    config.train.num_steps = steps
    config.train.batch_size = 4
    config.train.log_every = 1
    config.eval.every = steps
    config.eval.num_batches = 1
    config.eval.batch_size = 0
    config.checkpoint.every = steps
    config.optimizer.warmup_steps = 1
    config.model.num_layers = 1
    config.model.d_model = d_model
    config.model.num_heads = 2
    for overrides in config.experiment.runs.values():
        model = overrides.get("model")
        if model is not None:
            for key in ("d_model", "num_layers", "num_heads", "dtype"):
                if key in model:
                    model[key] = {"d_model": d_model, "num_layers": 1, "num_heads": 2, "dtype": "float32"}[key]
        for section, keys in (("train", ("num_steps", "batch_size")), ("eval", ("every",)),
                              ("checkpoint", ("every",)), ("optimizer", ("warmup_steps",))):
            for key in keys:
                if key in overrides.get(section, {}):
                    overrides[section][key] = {"num_steps": steps, "batch_size": 4, "every": steps,
                                               "warmup_steps": 1}[key]
    return config


def scalars(folder):
    """``{tag: [(step, value), ...]}`` from the TensorBoard event files in ``folder``."""
    out = {}
    for path in sorted(glob.glob(f"{folder}/events.out.tfevents.*")):
        data, offset = open(path, "rb").read(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
