"""S4D (diagonal state-space model, S4D-Lin init, FFT convolution) on a 2-pair MQAR task.

    python experiments/train.py --config configs/mixers/s4d.py --workdir /tmp/s4d

The task is a much easier MQAR variant than the quickstart's: a vocabulary of 16 (7 possible keys,
8 values), 2 key-value pairs, sequences of 32 tokens; the model is twice as wide (d_model 128) and
keeps the gated MLP (mlp_ratio 2). This mixer has no input-dependent gating: with 4 pairs (same
vocabulary and length) S4D at d_model 256 was at eval accuracy 0.43 at step 100, where it was
stopped, and S5, the same kind of time-invariant mixer, stayed at 0.39-0.42 from step 100 to
250-450 (d_model 128 or 256, 2 to 4 layers, learning rate 3e-3 or 1e-2), below the 0.52 that
guessing among the values not yet queried would give. With 2 pairs that guess gives 0.75, so 0.9
needs recall.

Measured on the 2-core CPU: 600 steps, eval accuracy 0.96 at the end (0.85 at step 300, 0.91 at
step 350, 0.95 at step 450), 84 s of CPU time (83 s wall, evaluating every 50 steps, one core each
for two runs, machine shared at load ~3).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "s4d"
    config.model.vocab_size = 16
    config.model.d_model = 128
    config.model.mlp_ratio = 2.0
    config.model.mixer_kwargs = dict(d_state=64, ssm_init="lin", discretization="zoh")
    config.data.task_kwargs = dict(vocab_size=16, seq_len=32, num_kv_pairs=2)
    config.train.num_steps = 600
    return config
