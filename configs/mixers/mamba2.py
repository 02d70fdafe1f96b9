"""Mamba-2: state-space duality (SSD) with scalar per-head decay, on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/mamba2.py --workdir /tmp/mamba2

Not yet tuned (tests/test_configs.py lists it in NOT_YET_TUNED): on the 2-core CPU, the full 1000
steps at the quickstart's learning rate 3e-3 reached eval accuracy 0.865 (still rising slowly: 0.72
at step 550, 0.86 at step 850; 442 s of CPU time, 3090 s wall at load ~15). Learning rate 1e-2 was
slower (0.30 at step 300 against 0.38). Next to try: more steps, or a wider state.
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "mamba2"
    config.model.mixer_kwargs = dict(head_dim=16, d_state=16, chunk_size=32)
    return config
