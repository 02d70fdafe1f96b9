"""Block-sparse attention (local + global + strided blocks of 8 tokens) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/attention_block_sparse.py --workdir /tmp/attention_block_sparse
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "attention"
    config.model.mixer_kwargs = dict(
        sparse_block_size=8, sparse_local_blocks=2, sparse_global_blocks=1, sparse_stride=4
    )
    return config
