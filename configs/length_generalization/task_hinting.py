r"""Task hinting for sorting (Awasthi & Gupta 2023): train on n <= 20, test at n = 100.

    python experiments/length_generalization.py --config length_generalization/task_hinting \
        --workdir /tmp/task_hinting
    python experiments/length_generalization.py --config length_generalization/task_hinting:rope \
        --workdir /tmp/task_hinting_rope

Two runs, ``sort_plain`` and ``sort_hint``: the same decoder-only transformer sorts sequences of n
in [1, 20] distinct values (of 128); ``sort_hint`` also trains on the auxiliary successor task for
half its examples (each element followed by its successor in sorted order), the hint the paper found
to carry sorting to longer inputs. Both are scored on sorting alone (``hint_fraction=0``) at n = 20,
50, 100 by exact match. The argument is the position scheme (default nope). Published: < 1% at
length 100 without the hint, > 92% with it; the target here: >= 80% with the hint while plain
training stays far below. Budget: 20,000 steps of batch 64."""

from configs.length_generalization._schemes import SCHEMES, decoder_config, scheme_names

EVAL_LENGTHS = (20, 50, 100)


def get_config(arg: str = "nope"):
    (scheme,) = scheme_names(arg)
    c = decoder_config("sort", dict(min_len=1, max_len=20, num_values=128), EVAL_LENGTHS,
                       max_seq_len=2 * 100 + 2, num_steps=20_000)
    for entry in c.evals.values():
        entry["task_kwargs"]["hint_fraction"] = 0.0
    c.experiment.rope_scalings = ""
    model = dict(SCHEMES[scheme])
    c.experiment.runs = {
        "sort_plain": {"model": model},
        "sort_hint": {"model": model, "data": {"task_kwargs": dict(min_len=1, max_len=20, num_values=128,
                                                                  hint_fraction=0.5)}},
    }
    return c
