r"""Length generalisation on copy: ``x SEP x END``; trained on n <= 20, evaluated to n = 60.

    python experiments/length_generalization.py --config length_generalization/copy --workdir /tmp/lg_copy
    python experiments/length_generalization.py --config length_generalization/copy:nope,rope,alibi \
        --workdir /tmp/lg_copy_3

Schemes, model, evaluations and budget: configs/length_generalization/_schemes.py."""

from configs.length_generalization._schemes import decoder_config, scheme_names, scheme_runs

EVAL_LENGTHS = (10, 20, 30, 40, 50, 60)


def get_config(arg: str = "all"):
    c = decoder_config("copy", dict(min_len=1, max_len=20, num_values=10), EVAL_LENGTHS,
                       max_seq_len=2 * 60 + 2, num_steps=10_000)
    c.experiment.runs = scheme_runs("copy", scheme_names(arg))
    return c
