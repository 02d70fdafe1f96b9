"""Block-sparse attention (local + global + strided blocks of 8 tokens) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/attention_block_sparse.py --workdir /tmp/attention_block_sparse

Measured on the 2-core CPU: 1000 steps, eval accuracy 0.998 by step 700, where the run was stopped
(83 s of CPU time, 500 s wall with the machine shared at load ~18); 0.49 at step 600.
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "attention"
    # Two global blocks hold MQAR's 16 context tokens (8 key-value pairs), so every query block
    # sees every key. With one, query blocks 3, 4, 6 and 7 cannot see keys 5-8 (positions 8-15),
    # and the run was measured to stay at 0.23 eval accuracy after 1000 steps.
    config.model.mixer_kwargs = dict(
        sparse_block_size=8, sparse_local_blocks=2, sparse_global_blocks=2, sparse_stride=4
    )
    return config
