"""Block sizes for the linear-scan kernels, per device kind.

``features``: channels one program scans side by side (the lane width of its
loads); ``time``: TPU only, positions per grid step staged in VMEM. Entries are
looked up by the start of ``jax.devices()[0].device_kind`` (lower case); the
``"default"`` row serves any other device and interpret mode.
"""

import jax

TABLE = {
    "nvidia h200": dict(features=128, num_warps=4),
    "nvidia h100": dict(features=128, num_warps=4),
    "tpu": dict(features=128, time=256),
    "default": dict(features=128, num_warps=4, time=256),
}


def block_sizes(**overrides):
    """The table row for the default device, with ``overrides`` applied."""
    kind = jax.devices()[0].device_kind.lower()
    row = next((v for k, v in TABLE.items() if k != "default" and kind.startswith(k)), TABLE["default"])
    return {**TABLE["default"], **row, **{k: v for k, v in overrides.items() if v is not None}}
