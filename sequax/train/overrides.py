"""Command-line overrides ``--config.KEY=VALUE`` applied to a loaded config.

Every key the schema (:mod:`sequax.train.config`) knows can be overridden, and
so can every option of the chosen mixer (``model.mixer_kwargs.KEY``: the
mixer module's fields) and task (``data.task_kwargs.KEY``: the task's
``__init__`` arguments), whether or not the config file sets it. Each value
text is parsed to the key's type (int, float, bool, str, tuple, or a Python
literal where the type is open). Mistakes raise ``ValueError`` with one line
naming the key, the closest valid key, and the file that documents it::

    overrides = [("train.num_steps", "200"), ("model.mixer", "mamba"),
                 ("model.mixer_kwargs.d_state", "8")]
    apply_overrides(config, overrides)

Named sections take names the config chooses: ``evals.NAME.KEY=VALUE`` adds or
changes an evaluation (``KEY`` one of ``split``, ``num_batches`` (an int or
``full``), ``batch_size``, ``every``, or ``task_kwargs.OPTION`` checked against
the task), ``evals.NAME="{...}"`` sets one whole, and
``data.split_sizes.SPLIT=N`` fixes a split's size.

Schema keys are applied first, in order, so the mixer and task options are
checked against the mixer and task the run will use.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import re
from typing import Any, List, Sequence, Tuple

import ml_collections

from sequax.train.config import EVAL_ENTRY, FREE_FORM, default_config

SCHEMA_FILE = "sequax/train/config.py"
_FLAG = re.compile(r"^--?(no)?config\.(.+)$")
_SKIPPED_MIXER_FIELDS = ("parent", "name", "d_model")


def split_overrides(argv: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Separate ``--config.KEY=VALUE`` / ``--config.KEY VALUE`` / ``--noconfig.KEY`` from ``argv``.

    Returns the other arguments (in order) and the ``(KEY, VALUE text)`` pairs.
    """
    rest, overrides = [], []
    args = list(argv)
    i = 0
    while i < len(args):
        match = _FLAG.match(args[i])
        if match is None:
            rest.append(args[i])
        elif match.group(1):  # --noconfig.KEY: a bool set to false
            key = match.group(2)
            if "=" in key:
                raise ValueError(f"--noconfig.{key} takes no value; write --config.{key.split('=')[0]}=...")
            overrides.append((key, "false"))
        elif "=" in match.group(2):
            key, text = match.group(2).split("=", 1)
            overrides.append((key, text))
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            overrides.append((match.group(2), args[i + 1]))
            i += 1
        else:
            raise ValueError(f"--config.{match.group(2)} needs a value: --config.{match.group(2)}=VALUE")
        i += 1
    return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[Tuple[str, str]]) -> None:
    """Set each ``(KEY, VALUE text)`` in ``config`` (in place); ``ValueError`` for a misfit."""
    named = [(k, v) for k, v in overrides if k.startswith(_NAMED)]
    schema = [(k, v) for k, v in overrides if not _free_form_section(k) and not k.startswith(_NAMED)]
    free_form = [(k, v) for k, v in overrides if _free_form_section(k)]
    for key, text in schema:
        _set_schema_key(config, key, text)
    for key, text in named:
        _set_named(config, key, text)
    for key, text in free_form:
        if key in FREE_FORM:
            _set_section(config, key, text)
        else:
            _set_option(config, key, text)


# ------------------------------------------------------------------ schema keys


def _schema_keys(cfg, prefix="") -> dict:
    out = {}
    for key, value in cfg.items():
        path = f"{prefix}{key}"
        out[path] = value
        if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
            out.update(_schema_keys(value, path + "."))
    return out


def _set_schema_key(config, key: str, text: str) -> None:
    known = _schema_keys(default_config())
    if key not in known:
        leaves = [k for k, v in known.items() if not isinstance(v, ml_collections.ConfigDict) or k in FREE_FORM]
        raise ValueError(
            f"{key} is not a config key{_did_you_mean(key, leaves)}; "
            f"the keys are documented in {SCHEMA_FILE}"
        )
    parent, _, leaf = key.rpartition(".")
    section = _section(config, parent)
    if isinstance(known[key], ml_collections.ConfigDict):
        raise ValueError(f"{key} is a section; override its keys one by one ({key}.KEY=VALUE)")
    current = section[leaf] if leaf in section else known[key]
    try:
        section[leaf] = _parse(text, None, current, key)
    except TypeError:  # ConfigDict keeps a field's type
        raise ValueError(f"{key} takes a {type(current).__name__}, got {text!r}") from None


def _section(config, dotted: str):
    node = config
    for part in filter(None, dotted.split(".")):
        node = node[part]
    return node


# ------------------------------------------------------------------ named sections

_NAMED = ("evals.", "data.split_sizes.")
_SPLITS = ("train", "validation", "test")


def _set_named(config, key: str, text: str) -> None:
    """``data.split_sizes.SPLIT``, ``evals.NAME``, ``evals.NAME.KEY``, ``evals.NAME.task_kwargs.OPTION``."""
    with config.unlocked():
        if key.startswith("data.split_sizes."):
            split = key[len("data.split_sizes."):]
            if split not in _SPLITS:
                raise ValueError(f"{key}: a split is one of {', '.join(_SPLITS)}{_did_you_mean(split, _SPLITS)}")
            config.data.split_sizes[split] = _parse(text, "int", 0, key)
            return
        name, _, entry_key = key[len("evals."):].partition(".")
        if not name:
            raise ValueError(f"{key}: name the evaluation, e.g. evals.long.split=test")
        if not entry_key:
            value = _parse(text, "dict", {}, key)
            config.evals[name] = ml_collections.ConfigDict(value)
            return
        if name not in config.evals:
            config.evals[name] = ml_collections.ConfigDict()
        entry = config.evals[name]
        if entry_key.startswith("task_kwargs."):
            option = entry_key[len("task_kwargs."):]
            _, _, (annotation, default) = _check_option_name(config, f"data.task_kwargs.{option}")
            if "task_kwargs" not in entry:
                entry.task_kwargs = ml_collections.ConfigDict()
            entry.task_kwargs[option] = _parse(text, annotation, default, key)
            return
        if entry_key not in EVAL_ENTRY:
            raise ValueError(
                f"{key}: an evaluation takes {', '.join(EVAL_ENTRY)}{_did_you_mean(entry_key, EVAL_ENTRY)}; "
                f"see EVAL_ENTRY in {SCHEMA_FILE}"
            )
        if entry_key == "num_batches" and text.strip() == "full":
            value = "full"
        elif entry_key == "split":
            value = text.strip()
        else:
            value = _parse(text, "Optional[int]", None, key)
        if entry_key in entry:
            del entry[entry_key]
        entry[entry_key] = value


# ------------------------------------------------------------------ mixer and task options


def _free_form_section(key: str) -> str:
    for section in FREE_FORM:
        if key == section or key.startswith(section + "."):
            return section
    return ""


def _options(config, section: str):
    """``(kind, name, {option: (annotation, default)}, documenting file)`` for a free-form section."""
    if section == "model.mixer_kwargs":
        from sequax import mixers

        cls = mixers.get(config.model.mixer)  # ValueError listing the mixers
        options = {
            f.name: (f.type, None if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls)
            if f.name not in _SKIPPED_MIXER_FIELDS
        }
        return "mixer", config.model.mixer, options, _source_file(cls)
    from sequax.data import get_task

    cls = get_task(config.data.task)  # ValueError listing the tasks
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    options = {
        p.name: (p.annotation, None if p.default is inspect.Parameter.empty else p.default)
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return "task", config.data.task, options, _source_file(cls)


def _source_file(cls) -> str:
    import sequax

    root = os.path.dirname(os.path.dirname(os.path.abspath(sequax.__file__)))
    return os.path.relpath(inspect.getsourcefile(cls), root)


def _check_option_name(config, key: str):
    section = _free_form_section(key)
    option = key[len(section) + 1:]
    kind, name, options, source = _options(config, section)
    if option not in options:
        raise ValueError(
            f"{kind} {name!r} has no option {option!r} in {section}{_did_you_mean(option, options)}; "
            f"its options, documented in {source}: {', '.join(options)}"
        )
    return section, option, options[option]


def _set_section(config, key: str, text: str) -> None:
    """A whole free-form section from a dict literal: ``model.mixer_kwargs="{'d_state': 8}"``."""
    value = _parse(text, "dict", {}, key)
    for option in value:
        _check_option_name(config, f"{key}.{option}")
    parent, _, leaf = key.rpartition(".")
    with config.unlocked():
        _section(config, parent)[leaf] = ml_collections.ConfigDict(
            {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        )


def _set_option(config, key: str, text: str) -> None:
    section, option, (annotation, default) = _check_option_name(config, key)
    value = _parse(text, annotation, default, key)
    node = _section(config, section)
    with config.unlocked():
        if option in node:  # the option may change type (e.g. window: 32 -> (32, 0))
            del node[option]
        node[option] = value


# ------------------------------------------------------------------ values


def _kind(annotation, default) -> Tuple[str, bool]:
    """``(kind, optional)`` of a field: kind in bool/int/float/str/tuple/dict/literal."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = (text or "").replace(" ", "")
    optional = default is None
    for pattern in (r"^Optional\[(.*)\]$", r"^Union\[(.*),None\]$", r"^(.*)\|None$"):
        match = re.match(pattern, text)
        if match:
            text, optional = match.group(1), True
    if text in ("bool", "int", "float", "str", "dict"):
        return text, optional
    if re.match(r"^(Tuple|tuple|Sequence|List|list)\b", text):
        return "tuple", optional
    for kind in (bool, int, float, str):  # bool before int: bool is an int
        if type(default) is kind:
            return kind.__name__, optional
    if isinstance(default, (tuple, list)):
        return "tuple", optional
    return "literal", True


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _parse(text: str, annotation, default, key: str) -> Any:
    kind, optional = _kind(annotation, default)
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    if optional and stripped in ("None", "none", "null"):
        return None
    try:
        if kind == "bool":
            if stripped.lower() in _TRUE + _FALSE:
                return stripped.lower() in _TRUE
            raise ValueError
        if kind == "int":
            return int(stripped)
        if kind == "float":
            return float(stripped)
        if kind == "str":
            return text
        value = ast.literal_eval(stripped)
    except (ValueError, SyntaxError):
        if kind == "literal":
            return text  # an open type: the text itself
        raise ValueError(f"{key} takes {_DESCRIBE[kind]}, got {text!r}") from None
    if kind == "tuple":
        if isinstance(value, (int, float, str)):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise ValueError(f"{key} takes {_DESCRIBE[kind]}, got {text!r}")
        return tuple(value)
    if kind == "dict" and not isinstance(value, dict):
        raise ValueError(f"{key} takes {_DESCRIBE[kind]}, got {text!r}")
    return tuple(value) if isinstance(value, list) else value


_DESCRIBE = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "tuple": "a tuple such as '(1, 2)'",
    "dict": "a dict such as \"{'d_state': 8}\"",
}


def _did_you_mean(word: str, choices) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close and "." in word:  # match on the last part: train.num_stpes -> train.num_steps
        leaf = word.rsplit(".", 1)[-1]
        by_leaf = {c.rsplit(".", 1)[-1]: c for c in choices}
        close = [by_leaf[c] for c in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)]
    return f" (did you mean {close[0]}?)" if close else ""


__all__ = ["apply_overrides", "split_overrides"]
