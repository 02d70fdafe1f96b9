"""S5 (one MIMO diagonal SSM, block HiPPO-N init, parallel scan) on a 2-pair MQAR task.

    python experiments/train.py --config configs/mixers/s5.py --workdir /tmp/s5

The task is the 2-pair MQAR variant of configs/mixers/s4d.py (vocabulary 16, 2 key-value pairs,
sequences of 32 tokens, d_model 128, gated MLP). What made S5 learn it: 512 states in 16 blocks and
timescales dt in [0.01, 0.5] (the default [0.001, 0.1] decays too slowly for 32 tokens). Before,
14 runs reached at most 0.59: with 4 pairs 0.39-0.43 (state_size 128 or 256, 2 to 4 layers,
d_model 128 or 256, learning rate 3e-3 or 1e-2); with 2 pairs 0.52-0.59 (state_size 128 to 512,
dt_max 1 or 10, learning rate 1e-2, ssm_learning_rate 3e-3), all with dt_min 0.001.

Measured on the 2-core CPU: 1000 steps, eval accuracy 0.99 at the end (0.69 at step 600, 0.898 at
step 700, 0.96 at step 750, 0.99 at step 850), 335 s of CPU time (337 s wall, evaluating every 50
steps, one core each for two runs, machine shared at load ~2.5).
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "s5"
    config.model.vocab_size = 16
    config.model.d_model = 128
    config.model.mlp_ratio = 2.0
    config.model.mixer_kwargs = dict(state_size=512, blocks=16, discretization="zoh", dt_min=0.01, dt_max=0.5)
    config.data.task_kwargs = dict(vocab_size=16, seq_len=32, num_kv_pairs=2)
    config.train.num_steps = 1000
    return config
