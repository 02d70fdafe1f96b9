"""The tiny quickstart run the sharded-training tests train on meshes, in-process and in subprocesses."""

from configs.quickstart import get_config


def tiny_config(num_steps=2, **mesh):
    """Quickstart (attention, MQAR) at d_model 32, length 32, batch 8; ``mesh`` sets ``config.mesh``."""
    config = get_config()
    config.model.d_model, config.model.num_heads, config.model.vocab_size = 32, 2, 32
    config.data.task_kwargs = dict(vocab_size=32, seq_len=32, num_kv_pairs=4)
    config.train.batch_size, config.train.num_steps, config.train.log_every = 8, num_steps, 1
    config.optimizer.warmup_steps = 2
    config.eval.every, config.eval.num_batches = 0, 1
    config.checkpoint.every = 5
    for axis, size in mesh.items():
        config.mesh[axis] = size
    return config
