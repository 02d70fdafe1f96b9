"""One dispatch mechanism for every hot op: ``mode`` picks the algorithm, ``backend`` the implementation.

Vocabulary, shared by all ops and mixers:

- ``mode``: the algorithm, where an op has several (``"chunked"``, ``"naive"``,
  ``"associative"``, ...; each op lists its own). ``None`` lets the backend use
  its default. Modes are algorithms of the pure-JAX path; a kernel implements
  one of them and refuses the others (so ``auto`` falls back to the pure-JAX
  path when a caller asks for, say, the sequential reference).
- ``backend``: the implementation.

  * ``"xla"``: the pure-JAX path. Runs everywhere and serves every valid input;
    it is the reference the kernels are tested against.
  * ``"cudnn"``: NVIDIA's fused attention (attention only).
  * ``"pallas"``: a kernel from :mod:`pallas_kernels` (GPU: Triton / Mosaic GPU,
    TPU: Mosaic). On a CPU it runs in Pallas' interpret mode: slow, but the same
    kernel body, which is how the tests check it.
  * ``"auto"``: the first backend in the op's order for the current platform
    that can serve the inputs; never raises for valid inputs.

Each op owns a :class:`BackendTable`: per backend, the function computing the op
and a ``why_not(**inputs) -> str | None`` saying why it cannot serve given
inputs. A backend named explicitly that cannot serve raises ``ValueError`` with
that reason. Kernels register lazily by ``"module:attribute"`` strings, so
importing :mod:`sequax.ops` never imports Pallas; a kernel whose module cannot
be imported simply cannot serve (and says why).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Union

import jax

BACKENDS = ("auto", "xla", "cudnn", "pallas")
PLATFORMS = ("cpu", "gpu", "tpu")

Loadable = Union[Callable, str, None]


def platform() -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: where default-placed computations run."""
    name = jax.default_backend()
    return "gpu" if name in ("gpu", "cuda", "rocm") else name


def _load(ref: Loadable):
    if ref is None or callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class _Entry:
    impl: Loadable
    why_not: Loadable


class BackendTable:
    """The backends of one op and the order ``auto`` tries them in, per platform.

    Args:
      op: the op's name, used in error messages (``"selective_scan"``).
      auto_order: ``{platform: (backend, ...)}``; platforms not listed use
        ``("xla",)``. Names without a registered entry are skipped.
    """

    def __init__(self, op: str, auto_order: Optional[Mapping[str, Sequence[str]]] = None):
        self.op = op
        self.auto_order = {p: tuple((auto_order or {}).get(p, ("xla",))) for p in PLATFORMS}
        self._entries: Dict[str, _Entry] = {}

    def register(self, name: str, impl: Loadable, why_not: Loadable = None) -> None:
        """Add backend ``name``: ``impl`` computes the op, ``why_not(**inputs)`` refuses inputs.

        Either may be a ``"module:attribute"`` string, imported on first use.
        """
        if name not in BACKENDS or name == "auto":
            raise ValueError(f"backend name must be one of {BACKENDS[1:]}, got {name!r}")
        self._entries[name] = _Entry(impl, why_not)

    def names(self) -> tuple:
        """Registered backend names (``"auto"`` not included)."""
        return tuple(self._entries)

    def reason(self, name: str, **inputs) -> Optional[str]:
        """Why backend ``name`` cannot serve ``inputs``, or ``None`` if it can."""
        entry = self._entries.get(name)
        if entry is None:
            return f"{self.op} has no {name!r} backend (it has {', '.join(self.names())})"
        try:
            why_not = _load(entry.why_not)
            _load(entry.impl)
        except ImportError as e:
            return f"the {name} kernel for {self.op} cannot be imported ({e})"
        return None if why_not is None else why_not(**inputs)

    def order(self) -> tuple:
        """Backends ``auto`` tries on the current platform, in order."""
        return tuple(n for n in self.auto_order[platform()] if n in self._entries)

    def resolve(self, backend: str, **inputs) -> str:
        """The backend to use: ``backend`` itself if it can serve, else ``ValueError``;
        for ``"auto"``, the first of :meth:`order` that can serve."""
        if backend != "auto" and backend not in self._entries:
            raise ValueError(
                f"{self.op}: unknown backend {backend!r}; choose one of "
                f"{', '.join(('auto',) + self.names())}"
            )
        if backend == "auto":
            for name in self.order():
                if self.reason(name, **inputs) is None:
                    return name
            return "xla"
        why = self.reason(backend, **inputs)
        if why is not None:
            raise ValueError(
                f"{self.op}(backend={backend!r}) cannot serve these inputs: {why}; "
                "change that option or use backend='auto', which falls back"
            )
        return backend

    def get(self, name: str) -> Callable:
        """The implementation registered under ``name``."""
        return _load(self._entries[name].impl)

    def __call__(self, backend: str, inputs: Mapping, *args, **kwargs):
        """Resolve ``backend`` against ``inputs`` (the ``why_not`` arguments) and call it."""
        return self.get(self.resolve(backend, **inputs))(*args, **kwargs)


def check_mode(op: str, mode, modes: Sequence[str]) -> None:
    """``ValueError`` unless ``mode`` is ``None`` or one of ``modes``."""
    if mode is not None and mode not in modes:
        raise ValueError(f"{op}: mode must be one of {', '.join(modes)} (or None); got {mode!r}")


__all__ = ["BACKENDS", "BackendTable", "check_mode", "platform"]
