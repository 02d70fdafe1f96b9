"""Token mixers: flax.linen modules over the pure functions in ``sequax.ops``.

Every mixer maps ``x`` ``[batch, length, d_model]`` to ``[batch, length, d_model]``
and is registered by name (``@register("name")``) so configs can pick it with
``config.model.mixer = "name"``.

The contract a mixer module follows:

- Fields: ``d_model: int`` (required). The backbone also fills in ``num_heads``,
  ``causal``, ``dtype`` (the compute dtype) and ``backend`` from ``config.model`` when the
  mixer declares fields of those names; everything else comes from
  ``config.model.mixer_kwargs`` and must have a default.
- ``__call__(x, *, segment_ids=None, deterministic=True, ...)``: the parallel
  (training) form. ``segment_ids`` ``[batch, length]`` int marks packed
  sequences; nothing may cross a segment boundary. Mixers that cannot honour
  ``segment_ids`` raise ``NotImplementedError`` when given them.
- Recurrent mixers also define ``init_state(batch_size)`` returning a pytree
  and ``step(x_t, state) -> (y_t, state)`` with ``x_t`` ``[batch, d_model]``;
  token-by-token ``step`` reproduces the causal parallel form. Such mixers
  declare submodules in ``setup()`` so both methods share parameters; call
  them as ``module.apply(variables, x_t, state, method="step")``.
- State in and out of the parallel form: every causal mixer's ``__call__``
  also takes ``initial_state=None`` and ``return_state=False`` and then
  returns ``(y, state)``, the state in ``init_state``'s layout. A sequence run
  in pieces, each piece starting from the state the previous one returned,
  equals the sequence run whole (chunked prefill, sequence shards). The state
  remembers the segment id of the last token it saw, so a piece whose first
  token starts a new packed segment does not inherit the previous segment
  (``sequax.ops.segments.carry_state``); mixers that honour segments keep it
  under the state's ``"segment"`` key.
- A mixer whose decode state has a fixed capacity (attention's KV cache
  without a window) defines ``check_decode_length(length)``, which
  :func:`decode` calls first, so running past ``decode_cache_size`` is a
  ``ValueError`` rather than silent NaNs.
- ``backend`` (``config.model.backend``, or ``mixer_kwargs.backend`` to
  override it per mixer) picks the implementation of the mixer's hot op and
  ``mode`` its pure-JAX algorithm where it has several; see
  :mod:`sequax.ops.dispatch`.
- Parameters are float32; compute happens in ``dtype``.

Every module in this package is imported on first use, so registering is just
defining the class with the decorator.
"""

import importlib
import pkgutil

from sequax.mixers.decoding import decode
from sequax.mixers.registry import MIXERS, register

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("registry", "decoding") and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")


def available():
    """Sorted names of all registered mixers."""
    return MIXERS.available()


def get(name):
    """The mixer module class registered under ``name``."""
    return MIXERS.get(name)


__all__ = ["available", "decode", "get", "register"]
