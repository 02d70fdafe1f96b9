"""experiments/length_generalization.py at a tiny size: exact match per length, RoPE scalings, the plot;
the task-hinting config scores sorting alone."""

import os

import configs
from sequax.experiments import length_generalization
from sequax.experiments.runner import run_configs
from tests.experiments.tiny import tiny


def test_runs_are_scored_by_exact_match_at_each_length_with_rope_scalings(tmp_path):
    config = tiny(configs.get("length_generalization/copy", "rope"))
    config.evals = {f"len_{n}": {"task_kwargs": {"min_len": n, "max_len": n}, "num_batches": 1, "every": 0}
                    for n in (5, 30)}
    config.experiment.rope_scalings = "ntk"
    summary = length_generalization.run(config, str(tmp_path))
    run = summary["runs"]["copy_rope"]
    exact = run["exact_match"]
    assert sorted(exact) == ["rope", "rope+ntk"]
    lines = summary["curves"]["exact_match_copy"]
    assert sorted(lines) == ["rope", "rope+ntk"] and sorted(x for x, _ in lines["rope"]) == [5.0, 30.0]
    for n in (5, 30):  # a whole sequence right needs every token right
        assert 0 <= exact["rope"][f"len_{n}"] <= run[f"len_{n}_accuracy"] <= 1
    # Shorter than training, the NTK factor is 1: the same model, the same score.
    assert exact["rope+ntk"]["len_5"] == exact["rope"]["len_5"]
    assert summary["plots"] == ["accuracy_vs_length.png"] and os.path.exists(tmp_path / "accuracy_vs_length.png")
    assert length_generalization.position_scheme(run_configs(config)["copy_rope"]) == "rope"


def test_task_hinting_trains_with_and_without_the_hint_and_scores_sorting_alone():
    runs = run_configs(configs.get("length_generalization/task_hinting"))
    assert sorted(runs) == ["sort_hint", "sort_plain"]
    assert runs["sort_hint"].data.task_kwargs.hint_fraction == 0.5
    assert runs["sort_plain"].data.task_kwargs.get("hint_fraction", 0.0) == 0.0
    for run in runs.values():
        assert run.data.task_kwargs.max_len == 20 and run.model.mixer_kwargs.positional == "none"
        assert {e.task_kwargs.max_len for e in run.evals.values()} == {20, 50, 100}
        assert all(e.task_kwargs.hint_fraction == 0.0 for e in run.evals.values())
    assert length_generalization.position_scheme(runs["sort_hint"]) == "nope + hint"
