"""Mamba: a selective state-space scan with a short conv and a gate, on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/mamba.py --workdir /tmp/mamba

Not yet tuned: not yet measured to reach 0.9 eval accuracy within its 1000-step budget
(tests/test_configs.py lists it in NOT_YET_TUNED). At this shape its selective scan costs about 1.5
s of CPU time a step on the 2-core CPU, the most of any config; a run stopped at step 210 had eval
accuracy 0.20.
"""
from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "mamba"
    config.model.mixer_kwargs = dict(d_state=16, expand=2)
    return config
