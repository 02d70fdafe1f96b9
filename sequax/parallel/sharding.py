"""Logical axis names of every parameter, the rules mapping them to mesh axes, and the train state's shardings.

**Logical axes.** Every parameter of the backbone and of every registered
mixer has logical axis names, one per dimension (``embed``, ``vocab``,
``mlp``, ``heads``, ``kv_heads``, ``head_dim``, ``inner`` (a mixer's
channels), ``state``, ``conv`` (taps), ``None``: never split).
:func:`param_axes` gives them as a tree shaped like the parameters. They
live in one table per mixer here (:data:`MIXER_PARAM_AXES`, keyed by the
parameter's path inside the mixer) rather than boxed into the parameters
with ``nn.with_logical_partitioning``: parameters stay plain arrays, so
optimizers, checkpoints, decoding and every test see the same trees as
before, a single-device run is bit for bit what it was, and a parameter
added to a mixer without axes fails ``tests/parallel/test_sharding.py``
(which checks every parameter of every registered mixer). A mixer defined
outside sequax adds its entry to :data:`MIXER_PARAM_AXES` when it registers.
Activations are named in the model code (``nn.with_logical_constraint``:
``batch``, ``length``, ``embed``, ``mlp``).

**Rules** (``config.sharding.rules``, :data:`DEFAULT_RULES`): ``(logical,
mesh axis or axes or None)`` pairs in order of precedence; a mesh axis
already used by an earlier dimension of the same array is skipped (flax's
``logical_to_mesh_axes``), so activations ``[batch, length, embed]`` take
``(data, fsdp)``, ``sequence``, nothing, while a parameter ``[embed, mlp]``
takes ``fsdp`` (FSDP) and ``tensor`` (tensor parallelism). A dimension that
the mesh axes do not divide stays whole.

**Train state.** :func:`state_shardings` places parameters by their rules and
every optimizer-state leaf shaped like a parameter (Adam's moments) like that
parameter; everything else (step, counts, RNG) is replicated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sequax.parallel.context import ATTENTION_STRATEGIES, use_layout
from sequax.parallel.mesh import batch_shardings

Axes = Tuple[Optional[str], ...]

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("inner", "tensor"),
    ("embed", "fsdp"),
)

# ----------------------------------------------------------------------------- the tables

BACKBONE_PARAM_AXES: Dict[str, Axes] = {
    "embed/embedding": ("vocab", "embed"),
    "pos_embed/embedding": (None, "embed"),
    "lm_head/kernel": ("embed", "vocab"),
    "mlp/gate_up/kernel": ("embed", "mlp"),
    "mlp/down/kernel": ("mlp", "embed"),
    "mixer_norm/scale": ("embed",), "mixer_norm/bias": ("embed",),
    "mlp_norm/scale": ("embed",), "mlp_norm/bias": ("embed",),
    "final_norm/scale": ("embed",), "final_norm/bias": ("embed",),
    "classifier/logits/kernel": ("embed", None), "classifier/logits/bias": (None,),
    "classifier/hidden/kernel": (None, "embed"), "classifier/hidden/bias": ("embed",),
}

_LINEAR = {
    "q_proj/kernel": ("embed", "heads"), "k_proj/kernel": ("embed", "heads"),
    "v_proj/kernel": ("embed", "heads"), "o_proj/kernel": ("heads", "embed"),
    "qkv_conv": ("conv", "heads"),
}
_GATED_OUTPUT = {**_LINEAR, "o_norm/scale": ("head_dim",), "g_proj/kernel": ("embed", "heads")}
_GELU_GLU = {"out/dense/kernel": ("embed", "mlp"), "out/dense/bias": ("mlp",)}
_S4D = {
    "Lambda_re": ("embed", "state"), "Lambda_im": ("embed", "state"), "log_dt": ("embed",),
    "C": (None, "embed", "state", None), "D": ("embed",), **_GELU_GLU,
}
_EXPLICIT_CONV = {"D": ("embed",), **_GELU_GLU}

MIXER_PARAM_AXES: Dict[str, Dict[str, Axes]] = {
    "attention": {
        "query/kernel": ("embed", "heads", "head_dim"), "query/bias": ("heads", "head_dim"),
        "key/kernel": ("embed", "kv_heads", "head_dim"), "key/bias": ("kv_heads", "head_dim"),
        "value/kernel": ("embed", "kv_heads", "head_dim"), "value/bias": ("kv_heads", "head_dim"),
        "out/kernel": ("heads", "head_dim", "embed"), "out/bias": ("embed",),
        "t5_bias": (None, "heads"),
    },
    "linear_attention": _LINEAR,
    "hedgehog": {
        **_LINEAR, "q_map_w": ("heads", "head_dim", None), "q_map_b": ("heads", None),
        "k_map_w": ("heads", "head_dim", None), "k_map_b": ("heads", None),
    },
    "retention": _GATED_OUTPUT,
    "gla": {**_GATED_OUTPUT, "gk_down/kernel": ("embed", None), "gk_up/kernel": (None, "heads"),
            "gk_up/bias": ("heads",)},
    "deltanet": {**_GATED_OUTPUT, "b_proj/kernel": ("embed", "heads"), "b_proj/bias": ("heads",)},
    "mamba": {
        "in_proj/kernel": ("embed", "inner"), "conv_kernel": ("conv", "inner"), "conv_bias": ("inner",),
        "x_proj/kernel": ("inner", None), "dt_proj/kernel": (None, "inner"), "dt_bias": ("inner",),
        "A_log": ("inner", "state"), "D": ("inner",), "out_proj/kernel": ("inner", "embed"),
    },
    "mamba2": {
        "in_proj/kernel": ("embed", "inner"), "conv_kernel": ("conv", "inner"), "conv_bias": ("inner",),
        "dt_bias": ("heads",), "A_log": ("heads",), "D": ("heads",), "norm": ("inner",),
        "out_proj/kernel": ("inner", "embed"),
    },
    "s4d": _S4D,
    "s4": {**_S4D, "B": ("embed", "state", None), "P": ("embed", "state", None)},
    "s5": {
        "Lambda_re": ("state",), "Lambda_im": ("state",), "log_dt": ("state",), "B": ("state", "embed", None),
        "C": (None, "embed", "state", None), "D": ("embed",), **_GELU_GLU,
    },
    "h3": {
        "q/kernel": ("embed", "heads"), "k/kernel": ("embed", "heads"), "v/kernel": ("embed", "heads"),
        "q/bias": ("heads",), "k/bias": ("heads",), "v/bias": ("heads",),
        "out/kernel": ("heads", "embed"), "out/bias": ("embed",), "shift_kernel": ("conv", "heads"),
        "Lambda_re": ("heads", "state"), "Lambda_im": ("heads", "state"), "log_dt": ("heads",),
        "C": ("heads", "state", None), "D": ("heads",),
    },
    "hyena": {
        "in_proj/kernel": ("embed", "inner"), "in_proj/bias": ("inner",),
        "out_proj/kernel": ("inner", "embed"), "out_proj/bias": ("embed",),
        "short_kernel": ("conv", "inner"), "short_bias": ("inner",),
        "filter_mlp_0/kernel": (None, None), "filter_mlp_0/bias": (None,),
        "filter_mlp_1/kernel": (None, None), "filter_mlp_1/bias": (None,),
        "filter_mlp_2/kernel": (None, "inner"), "filter_mlp_2/bias": ("inner",), "D": (None, "inner"),
    },
    "sgconv": {**_EXPLICIT_CONV, "kernel": (None, None, "embed"), "kernel_reverse": (None, None, "embed")},
    "long_conv": {**_EXPLICIT_CONV, "kernel": ("conv", "embed"), "kernel_reverse": ("conv", "embed")},
}


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _mixer_table(mixer: str) -> Dict[str, Axes]:
    if mixer not in MIXER_PARAM_AXES:
        raise ValueError(
            f"mixer {mixer!r} has no logical axes for its parameters; add them to MIXER_PARAM_AXES in "
            "sequax/parallel/sharding.py"
        )
    return MIXER_PARAM_AXES[mixer]


def _axes_of(key: str, ndim: int, mixer_table: Dict[str, Axes]) -> Axes:
    parts = key.split("/")
    if "mixer" in parts:  # block_<i>/mixer/<path inside the mixer>
        inner = "/".join(parts[parts.index("mixer") + 1:])
        axes = mixer_table.get(inner)
    else:
        axes = next((a for suffix, a in BACKBONE_PARAM_AXES.items()
                     if key == suffix or key.endswith("/" + suffix)), None)
    if axes is None:
        raise ValueError(
            f"parameter {key!r} has no logical axes; add it to sequax/parallel/sharding.py "
            "(BACKBONE_PARAM_AXES, or the mixer's entry of MIXER_PARAM_AXES)"
        )
    if len(axes) != ndim:
        raise ValueError(f"parameter {key!r} has {ndim} dimensions but its logical axes {axes} name {len(axes)}")
    return tuple(axes)


def param_axes(params, mixer: str):
    """The logical axes of every parameter: a tree shaped like ``params`` with a tuple per leaf.

    ``params``: the model's parameters (arrays or ``ShapeDtypeStruct``);
    ``mixer``: ``config.model.mixer``. Raises ``ValueError`` naming a
    parameter without axes.
    """
    table = _mixer_table(mixer)
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    axes = [_axes_of(_path(path), len(leaf.shape), table) for path, leaf in flat]
    return jax.tree_util.tree_unflatten(treedef, axes)


# ----------------------------------------------------------------------------- rules -> specs


def check_rules(rules) -> Tuple[Tuple[str, Any], ...]:
    """``config.sharding.rules`` as a tuple of ``(logical, mesh axes)``; ``ValueError`` if malformed."""
    from sequax.parallel.mesh import AXES

    out = []
    for rule in rules:
        if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(
                f"sharding.rules entries must be (logical_axis, mesh_axis) pairs, e.g. ('mlp', 'tensor'); got {rule!r}"
            )
        target = rule[1]
        names = [target] if isinstance(target, str) or target is None else list(target)
        bad = [n for n in names if n is not None and n not in AXES]
        if bad:
            raise ValueError(f"sharding.rules: {rule!r} names mesh axis {bad[0]!r}; mesh axes are {AXES}")
        out.append((rule[0], target if target is None or isinstance(target, str) else tuple(target)))
    return tuple(out)


def spec_for(axes: Sequence[Optional[str]], shape: Sequence[int], mesh: Mesh, rules) -> PartitionSpec:
    """The ``PartitionSpec`` of an array with logical ``axes`` and ``shape`` under ``rules``.

    Mesh axes of size 1 are dropped; a dimension they do not divide stays whole.
    """
    from flax.linen import logical_to_mesh_axes

    spec = logical_to_mesh_axes(tuple(axes), rules)
    entries = []
    for dim, entry in zip(shape, spec):
        names = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
        names = tuple(n for n in names if mesh.shape.get(n, 1) > 1)
        size = math.prod(mesh.shape[n] for n in names)
        if not names or dim % size:
            entries.append(None)
        else:
            entries.append(names[0] if len(names) == 1 else names)
    return PartitionSpec(*entries)


def param_specs(params, mixer: str, mesh: Mesh, rules):
    """``PartitionSpec`` per parameter (a tree like ``params``)."""
    axes = param_axes(params, mixer)
    return jax.tree_util.tree_map(
        lambda a, p: spec_for(a, p.shape, mesh, rules), axes, params, is_leaf=lambda x: isinstance(x, tuple)
    )


def state_shardings(abstract_state, mesh: Mesh, mixer: str, rules):
    """``NamedSharding`` for every leaf of a train state with ``params`` and ``opt_state`` fields.

    Parameters follow their rules; an optimizer-state leaf whose path ends
    with a parameter's path and has its shape (Adam's ``mu``/``nu``) follows
    that parameter; the rest is replicated.
    """
    specs = param_specs(abstract_state.params, mixer, mesh, rules)
    by_path = {}
    for (path, leaf), spec in zip(jax.tree_util.tree_flatten_with_path(abstract_state.params)[0],
                                  jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))):
        by_path[_path(path)] = (tuple(leaf.shape), spec)
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(path, leaf):
        key = _path(path)
        for start in range(len(key.split("/"))):
            suffix = "/".join(key.split("/")[start:])
            if suffix in by_path and by_path[suffix][0] == tuple(leaf.shape):
                return NamedSharding(mesh, by_path[suffix][1])
        return replicated

    shardings = jax.tree_util.tree_map_with_path(place, abstract_state)
    params = jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs,
                                    is_leaf=lambda x: isinstance(x, PartitionSpec))
    return shardings.replace(params=params)


# ----------------------------------------------------------------------------- a run's layout


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a run is laid out: its mesh, logical-axis rules, mixer (whose parameter table applies) and
    attention strategy (``config.model.sequence_parallel``). Hashable, so compiled steps can be shared."""

    mesh: Mesh
    mixer: str
    rules: Tuple[Tuple[str, Any], ...] = DEFAULT_RULES
    attention: str = "ring"

    def state_shardings(self, abstract_state):
        """:func:`state_shardings` of a train state on this layout."""
        return state_shardings(abstract_state, self.mesh, self.mixer, self.rules)

    def batch_shardings(self, batch):
        """Where each array of a batch lives (:func:`sequax.parallel.mesh.batch_spec`)."""
        return batch_shardings(batch, self.mesh)

    def context(self):
        """Trace model code on this layout (:func:`sequax.parallel.context.use_layout`)."""
        return use_layout(self.mesh, self.rules, self.attention)


def layout_from_config(config, mesh: Optional[Mesh]) -> Optional[Layout]:
    """The :class:`Layout` of ``config`` on ``mesh`` (``None`` without a mesh); ``ValueError`` for
    bad ``sharding.rules`` or ``model.sequence_parallel``."""
    attention = config.model.get("sequence_parallel", "ring")
    if attention not in ATTENTION_STRATEGIES:
        raise ValueError(f"model.sequence_parallel must be one of {ATTENTION_STRATEGIES}; got {attention!r}")
    sharding = config.get("sharding")
    rules = check_rules(sharding.rules) if sharding is not None and "rules" in sharding else DEFAULT_RULES
    if mesh is None:
        return None
    return Layout(mesh, config.model.mixer, rules, attention)


__all__ = [
    "BACKBONE_PARAM_AXES", "Layout", "layout_from_config", "DEFAULT_RULES", "MIXER_PARAM_AXES", "check_rules", "param_axes", "param_specs",
    "spec_for", "state_shardings",
]
