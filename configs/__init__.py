"""Experiment configs, looked up by name.

Each module below this folder defines ``get_config()`` returning an
``ml_collections.ConfigDict`` built from ``sequax.train.config.default_config()``;
its docstring gives the launch command, the step budget and the measured
time. A config's name is its path below ``configs/`` without ``.py``:
``quickstart``, ``mixers/gla``. ``pip install -e .`` installs this package,
so the names work from any directory::

    import configs
    configs.available()            # ['mixers/attention_alibi', ..., 'quickstart']
    config = configs.get("mixers/gla")
    configs.path("quickstart")     # the file, as ``experiments/train.py --config`` takes it

``experiments/train.py --config`` takes a name as well as a path.
"""

from __future__ import annotations

import difflib
import importlib
import os
from typing import List

_ROOT = os.path.dirname(os.path.abspath(__file__))


def available() -> List[str]:
    """Sorted names of all configs, e.g. ``["mixers/gla", ..., "quickstart"]``."""
    names = []
    for base, dirs, files in os.walk(_ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        for file in files:
            if file.endswith(".py") and not file.startswith("_"):
                relative = os.path.relpath(os.path.join(base, file[: -len(".py")]), _ROOT)
                names.append(relative.replace(os.sep, "/"))
    return sorted(names)


def canonical_name(name: str) -> str:
    """``name`` as :func:`available` spells it; ``ValueError`` with a suggestion otherwise.

    Also accepts the name with ``.py`` or a leading ``configs/``
    (``configs/mixers/gla.py`` -> ``mixers/gla``).
    """
    if not isinstance(name, str):
        raise ValueError(f"a config name is a string like 'quickstart', got {name!r}")
    stripped = name.strip().replace(os.sep, "/")
    stripped = stripped[: -len(".py")] if stripped.endswith(".py") else stripped
    stripped = stripped[len("configs/"):] if stripped.startswith("configs/") else stripped
    names = available()
    if stripped in names:
        return stripped
    hint = suggest(stripped)
    raise ValueError(
        f"no config named {name!r}{f' (did you mean {hint}?)' if hint else ''}; "
        f"the names are: {', '.join(names)}"
    )


def suggest(name: str) -> str:
    """The registered name closest to ``name`` (also matching on the last part), or ''."""
    by_key = {}
    for full in available():
        by_key.setdefault(full, full)
        by_key.setdefault(full.rsplit("/", 1)[-1], full)
    close = difflib.get_close_matches(name, list(by_key), n=1, cutoff=0.6)
    return by_key[close[0]] if close else ""


def path(name: str) -> str:
    """The file of config ``name`` (absolute path)."""
    return os.path.join(_ROOT, *canonical_name(name).split("/")) + ".py"


def get(name: str, *args):
    """``get_config(*args)`` of config ``name``: a fresh ``ConfigDict`` each call."""
    module = importlib.import_module(f"{__name__}.{canonical_name(name).replace('/', '.')}")
    return module.get_config(*args)


__all__ = ["available", "canonical_name", "get", "path", "suggest"]
