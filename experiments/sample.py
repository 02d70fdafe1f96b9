r"""Sample bytes from a trained byte-level LM, with the mixers' recurrent / KV-cache decoding.

    python experiments/sample.py --workdir /tmp/lm_bytes/run --prompt "def " --num_bytes 300 \
        --temperature 0.8 --top_k 40

--workdir is a run's directory (WORKDIR/<run> of experiments/lm.py, or a workdir of
experiments/train.py); its newest checkpoint is read, nothing is trained. --temperature 0
decodes greedily; --top_k 0 samples from every byte (sequax.experiments.sampling).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's directory (holding config.json and checkpoints).")
_PROMPT = flags.DEFINE_string("prompt", "\n", "Text the samples continue (UTF-8 bytes).")
_NUM_BYTES = flags.DEFINE_integer("num_bytes", 200, "Bytes to sample after the prompt.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples drawn side by side.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 40, "Sample from the k most likely bytes; 0 from all.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax
    import numpy as np

    from sequax.experiments import sampling
    from sequax.models import build_model

    try:
        params, config, step = sampling.load_params(_WORKDIR.value)
        model = build_model(config.model)
        prompt = np.frombuffer(_PROMPT.value.encode(), np.uint8).astype(np.int32)
        if not len(prompt):
            raise ValueError("--prompt must hold at least one byte")
        tokens = sampling.generate(model, params, np.tile(prompt, (_NUM_SAMPLES.value, 1)), _NUM_BYTES.value,
                                   jax.random.PRNGKey(_SEED.value), _TEMPERATURE.value, _TOP_K.value)
    except (ValueError, NotImplementedError) as e:
        sys.exit(f"error: {e}")
    print(f"# {_WORKDIR.value} at step {step}")
    for row in np.asarray(tokens):
        print(bytes(row.astype(np.uint8).tolist()).decode("utf-8", errors="replace"))
        print("#" * 40)


if __name__ == "__main__":
    app.run(main)
