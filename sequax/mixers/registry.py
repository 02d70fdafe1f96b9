"""The mixer registry (``sequax.mixers.register/available/get``)."""

from sequax.registry import Registry

MIXERS = Registry("mixer")
register = MIXERS.register
