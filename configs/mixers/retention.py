"""RetNet retention (fixed per-head decays, swish output gate) on the MQAR quickstart task.

    python experiments/train.py --config configs/mixers/retention.py --workdir /tmp/retention
"""

from configs.quickstart import get_config as quickstart_config


def get_config():
    config = quickstart_config()
    config.model.mixer = "retention"
    config.model.mixer_kwargs = dict(use_norm=True, use_output_gate=True)
    return config
