"""The runs of an experiment config: nested overrides, selection, and the refusals that name the key."""

import ml_collections
import pytest

from sequax.experiments.runner import merge, run_configs, selected
from sequax.train.config import default_config


def test_runs_merge_nested_overrides_and_replace_free_form_sections():
    config = default_config()
    config.model.mixer_kwargs = {"positional": "alibi", "window": 8}
    config.experiment.runs = {
        "a": {"model": {"d_model": 32, "mixer_kwargs": {"positional": "none"}}},
        "b": {"optimizer": {"learning_rate": 1}},  # an int for a float key is fine
        "c": {},
    }
    runs = run_configs(config)
    assert list(runs) == ["a", "b", "c"]
    assert runs["a"].model.d_model == 32 and runs["a"].model.num_layers == config.model.num_layers
    assert dict(runs["a"].model.mixer_kwargs) == {"positional": "none"}  # replaced whole, not merged
    assert dict(runs["b"].model.mixer_kwargs) == {"positional": "alibi", "window": 8}
    assert runs["b"].optimizer.learning_rate == 1.0
    assert all(not r.experiment.runs for r in runs.values())  # each run's config stands alone
    assert config.model.d_model == 64  # the experiment config is left as it was
    (only,) = run_configs(default_config()).values()  # no runs: one, named "run"
    assert list(run_configs(default_config())) == ["run"] and only.model.mixer == "attention"


@pytest.mark.parametrize("overrides, message", [
    ({"model": {"colour": 1}}, r"experiment.runs.x.model.colour is not a config key"),
    ({"modle": {}}, r"experiment.runs.x.modle is not a config key"),
    ({"model": 3}, r"experiment.runs.x.model is a section; give a dict"),
    ({"model": {"d_model": "wide"}}, r"experiment.runs.x.model.d_model takes a int, got 'wide'"),
])
def test_bad_run_overrides_name_the_key(overrides, message):
    config = default_config()
    config.experiment.runs = {"x": overrides}
    with pytest.raises(ValueError, match=message):
        run_configs(config)


def test_run_names_and_selection():
    names = ["attention_T64_d64", "attention_T256_d64", "mamba_T256_d64"]
    assert selected(names, "") == names
    assert selected(names, "*_T256_*") == names[1:]
    assert selected(names, "mamba_T256_d64, attention_T64_*") == [names[0], names[2]]
    with pytest.raises(ValueError, match=r"experiment.only='gla\*' picks none of the runs: attention_T64_d64"):
        selected(names, "gla*")
    config = default_config()
    config.experiment.runs = ml_collections.ConfigDict({"a/b": {}})
    with pytest.raises(ValueError, match="'a/b' is no run name"):
        run_configs(config)


def test_merge_refuses_unknown_top_level_keys():
    with pytest.raises(ValueError, match="where.nothing is not a config key"):
        merge(default_config(), {"nothing": 1}, "where")
