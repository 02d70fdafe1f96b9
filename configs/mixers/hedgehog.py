"""Hedgehog linear attention with learned softmax-mimicking feature maps on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/hedgehog.py --workdir /tmp/hedgehog

Not yet tuned: no run of this config on the 2-core CPU has yet been measured to reach 0.9 eval
accuracy within its 1000-step budget (tests/test_configs.py lists it in NOT_YET_TUNED).

Measured on the 2-core CPU: 1000 steps, eval accuracy 0.98 by step 450, where the run was stopped
(193 s of CPU time, 1346 s wall with the machine shared at load ~15); 0.95 at step 350.
"""

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "hedgehog"
    config.model.mixer_kwargs = dict(feature_dim=0, sow_distillation_loss=False)  # 0: head_dim
    return config
