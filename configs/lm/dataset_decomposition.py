"""Dataset Decomposition's length curriculum (Pouransari et al. 2024) against packed windows.

    python experiments/lm.py --config lm/dataset_decomposition --workdir /tmp/lm_dd

Two runs of the same attention model on the standard library's sources (or
``--config.data.task_kwargs.path=...``): ``packed`` reads 1024-byte windows of packed
documents (``segment_ids``); ``dd`` cuts each document into pieces of 64 ... 1024 bytes (powers
of two) and trains on one piece length per step with the same tokens per step, short pieces
first (``curriculum_strength`` 4), the natural mixture by the end. Both are scored on the same
validation windows of 1024 bytes: ``bits_per_byte`` in metrics.json and bits_per_byte.png.
Budget: 3,000 steps of 16 x 1024 tokens.
"""

from configs.lm.bytes import lm_config

SEQ_LEN = 1024
STEPS = 3000


def get_config():
    c = lm_config(seq_len=SEQ_LEN, num_steps=STEPS)
    c.train.batch_size = 16
    dd = dict(seq_len=SEQ_LEN, curriculum="dd", min_bucket_len=64, curriculum_steps=STEPS,
              curriculum_strength=4.0)
    c.experiment.runs = {
        "packed": {"data": {"task_kwargs": dict(seq_len=SEQ_LEN)}},
        "dd": {"data": {"task_kwargs": dd}},
    }
    return c
