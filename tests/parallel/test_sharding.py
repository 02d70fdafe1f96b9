"""Meshes from the config, logical axes on every parameter, and the rules that turn them into shardings."""

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from sequax import mixers
from sequax.models.backbone import build_model
from sequax.parallel.mesh import make_mesh, mesh_sizes
from sequax.parallel.sharding import DEFAULT_RULES, check_rules, layout_from_config, param_axes, spec_for
from sequax.train.config import default_config

LOGICAL = {"embed", "vocab", "mlp", "heads", "kv_heads", "head_dim", "inner", "state", "conv", None}


def model_config(mixer, **model):
    config = default_config()
    config.model.mixer = mixer
    config.model.d_model, config.model.num_heads, config.model.num_layers = 16, 2, 1
    if mixer in ("hyena", "sgconv", "long_conv"):
        config.model.mixer_kwargs = dict(max_length=32)
    for key, value in model.items():
        config.model[key] = value
    return config


def abstract_params(config):
    model = build_model(config.model)
    tokens = jnp.zeros((1, 2, 8) if config.model.head == "retrieval" else (1, 8), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens))["params"]


@pytest.mark.parametrize("mixer", mixers.available())
def test_every_parameter_of_every_mixer_carries_logical_axes(mixer):
    params = abstract_params(model_config(mixer, mlp_ratio=2.0, norm="layernorm"))
    axes = param_axes(params, mixer)
    flat_params = jax.tree_util.tree_leaves(params)
    flat_axes = jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
    assert len(flat_axes) == len(flat_params)
    for names, leaf in zip(flat_axes, flat_params):
        assert isinstance(names, tuple) and len(names) == leaf.ndim and set(names) <= LOGICAL
    assert jax.tree_util.tree_structure(axes, is_leaf=lambda x: isinstance(x, tuple)) == \
        jax.tree_util.tree_structure(params)


def test_the_backbone_and_attention_name_their_axes():
    axes = param_axes(abstract_params(model_config("attention", mlp_ratio=2.0)), "attention")
    assert axes["embed"]["embedding"] == ("vocab", "embed")
    assert axes["lm_head"]["kernel"] == ("embed", "vocab")
    assert axes["block_0"]["mlp"]["gate_up"]["kernel"] == ("embed", "mlp")
    assert axes["block_0"]["mlp"]["down"]["kernel"] == ("mlp", "embed")
    assert axes["block_0"]["mixer"]["query"]["kernel"] == ("embed", "heads", "head_dim")
    assert axes["block_0"]["mixer"]["out"]["kernel"] == ("heads", "head_dim", "embed")


@pytest.mark.parametrize("head", ["classification", "retrieval"])
def test_heads_and_position_embeddings_carry_axes(head):
    config = model_config("s5", head=head, num_classes=3, position_embedding="learned", max_length=8)
    axes = param_axes(abstract_params(config), "s5")
    assert axes["pos_embed"]["embedding"] == (None, "embed")
    assert axes["classifier"]["logits"]["kernel"] == ("embed", None)


def test_a_parameter_without_axes_is_named():
    params = {"block_0": {"mixer": {"query": {"kernel": jnp.zeros((4, 2, 2))}, "mystery": jnp.zeros(3)}}}
    with pytest.raises(ValueError, match="parameter 'block_0/mixer/mystery' has no logical axes"):
        param_axes(params, "attention")
    with pytest.raises(ValueError, match="mixer 'nope' has no logical axes"):
        param_axes(params, "nope")


def fake_mesh(**sizes):
    return make_mesh({**dict(data=1, fsdp=1, tensor=1, sequence=1), **sizes})


def test_rules_give_fsdp_and_tensor_parallel_specs():
    mesh = fake_mesh(fsdp=4, tensor=2)
    assert spec_for(("embed", "mlp"), (64, 128), mesh, DEFAULT_RULES) == P("fsdp", "tensor")
    assert spec_for(("mlp", "embed"), (128, 64), mesh, DEFAULT_RULES) == P("tensor", "fsdp")
    assert spec_for(("embed", "kv_heads", "head_dim"), (64, 1, 16), mesh, DEFAULT_RULES) == P("fsdp", None, None)
    assert spec_for(("embed",), (6,), mesh, DEFAULT_RULES) == P(None)  # 4 does not divide 6: whole
    # Activations: batch takes data x fsdp first, so embed finds fsdp taken.
    mesh = fake_mesh(data=2, fsdp=2, sequence=2)
    assert spec_for(("batch", "length", "embed"), (8, 16, 64), mesh, DEFAULT_RULES) == \
        P(("data", "fsdp"), "sequence", None)


def test_the_default_mesh_is_one_device_and_sizes_are_checked():
    assert make_mesh(dict(data=1, fsdp=1, tensor=1, sequence=1)) is None
    assert mesh_sizes(dict(data=-1, fsdp=1, tensor=2, sequence=1), 8) == dict(data=4, fsdp=1, tensor=2, sequence=1)
    mesh = make_mesh(dict(data=2, fsdp=1, tensor=1, sequence=-1))
    assert dict(mesh.shape) == dict(data=2, fsdp=1, tensor=1, sequence=4)
    with pytest.raises(ValueError, match=r"needs 16 devices but 8 are visible"):
        make_mesh(dict(data=4, fsdp=1, tensor=1, sequence=4))
    with pytest.raises(ValueError, match=r"mesh.sequence=-1: the other sizes \(3 devices\) do not divide"):
        make_mesh(dict(data=3, fsdp=1, tensor=1, sequence=-1))
    with pytest.raises(ValueError, match="one of them may be -1"):
        make_mesh(dict(data=-1, fsdp=1, tensor=1, sequence=-1))


def test_layout_checks_its_config():
    config = default_config()
    config.mesh.sequence = 2
    layout = layout_from_config(config, make_mesh(config.mesh))
    assert layout.rules == DEFAULT_RULES and layout.attention == "ring" and layout.mixer == "attention"
    config.model.sequence_parallel = "spiral"
    with pytest.raises(ValueError, match="model.sequence_parallel must be one of"):
        layout_from_config(config, None)
    with pytest.raises(ValueError, match="names mesh axis 'model'"):
        check_rules([("mlp", "model")])
    with pytest.raises(ValueError, match=r"\(logical_axis, mesh_axis\) pairs"):
        check_rules(["mlp"])


def test_state_shardings_follow_the_parameters():
    from sequax.train.trainer import TrainState
    import optax

    config = model_config("attention", mlp_ratio=2.0)
    params = abstract_params(config)
    opt_state = jax.eval_shape(optax.adam(1e-3).init, params)
    state = TrainState(jax.ShapeDtypeStruct((), jnp.int32), params, opt_state, jax.ShapeDtypeStruct((2,), jnp.uint32))
    config.mesh.fsdp, config.mesh.tensor = 4, 2
    layout = layout_from_config(config, make_mesh(config.mesh))
    shardings = layout.state_shardings(state)
    kernel = ("block_0", "mlp", "gate_up", "kernel")
    want = P("fsdp", "tensor")
    got = shardings.params
    for k in kernel:
        got = got[k]
    assert got.spec == want
    mu = shardings.opt_state[0].mu
    for k in kernel:
        mu = mu[k]
    assert mu.spec == want  # Adam's moments live with their parameter
    assert shardings.step.spec == P() and shardings.opt_state[0].count.spec == P()
