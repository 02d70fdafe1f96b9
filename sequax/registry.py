"""A small name -> object registry used for mixers, tasks, heads and optimizers."""

from __future__ import annotations

from typing import Callable, Dict, Generic, List, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names (as written in configs) to objects.

    ``kind`` is used in error messages, e.g. ``"mixer"`` or ``"task"``.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice; pick another name.")
            self._entries[name] = obj
            return obj

        return decorator

    def available(self) -> List[str]:
        """Sorted registered names."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The object registered under ``name``; ``ValueError`` listing the choices otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.available())}"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries
