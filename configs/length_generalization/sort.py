r"""Length generalisation on sort: ``x SEP sorted(x) END`` over 128 distinct values; trained on n <= 20, evaluated to n = 60.

    python experiments/length_generalization.py --config length_generalization/sort --workdir /tmp/lg_sort
    python experiments/length_generalization.py --config length_generalization/sort:nope,rope,alibi \
        --workdir /tmp/lg_sort_3

Schemes, model, evaluations and budget: configs/length_generalization/_schemes.py."""

from configs.length_generalization._schemes import decoder_config, scheme_names, scheme_runs

EVAL_LENGTHS = (10, 20, 30, 40, 50, 60)


def get_config(arg: str = "all"):
    c = decoder_config("sort", dict(min_len=1, max_len=20, num_values=128), EVAL_LENGTHS,
                       max_seq_len=2 * 60 + 2, num_steps=10_000)
    c.experiment.runs = scheme_runs("sort", scheme_names(arg))
    return c
