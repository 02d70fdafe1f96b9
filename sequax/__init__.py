"""sequax: every major way to mix tokens over long sequences, in JAX/Flax.

Layers, from the bottom up (imports only point down):

- ``sequax.ops``: pure functions on arrays (attention, positional schemes,
  linear attention, scans, state-space kernels, FFT convolution).
- ``sequax.mixers``: thin flax.linen modules over the ops, registered by name.
- ``sequax.models``: the backbone (embedding, residual blocks, heads).
- ``sequax.data``: seeded synthetic tasks, registered by name.
- ``sequax.train``: config-driven training (``train_and_evaluate``).
"""

__version__ = "0.1.0"
