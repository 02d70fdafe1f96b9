"""Print the versions and Pallas API names the GPU machine has (one JSON line)."""
import json

import jax
from jax.experimental import pallas as pl

names = {}
for mod in ("triton", "mosaic_gpu", "tpu"):
    try:
        m = __import__(f"jax.experimental.pallas.{mod}", fromlist=["_"])
        names[mod] = sorted(n for n in dir(m) if not n.startswith("_"))
    except Exception as e:  # noqa: BLE001
        names[mod] = f"import failed: {e}"
print(json.dumps({"jax": jax.__version__, "devices": [d.device_kind for d in jax.devices()],
                  "pl": sorted(n for n in dir(pl) if not n.startswith("_")), **names}))
