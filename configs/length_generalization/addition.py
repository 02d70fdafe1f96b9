r"""Length generalisation on addition: ``a PLUS b SEP (a + b) END``, digits least significant first; trained on n <= 20, evaluated to n = 60.

    python experiments/length_generalization.py --config length_generalization/addition --workdir /tmp/lg_addition
    python experiments/length_generalization.py --config length_generalization/addition:nope,rope,alibi \
        --workdir /tmp/lg_addition_3

Schemes, model, evaluations and budget: configs/length_generalization/_schemes.py."""

from configs.length_generalization._schemes import decoder_config, scheme_names, scheme_runs

EVAL_LENGTHS = (10, 20, 30, 40, 50, 60)


def get_config(arg: str = "all"):
    c = decoder_config("addition", dict(min_len=1, max_len=20), EVAL_LENGTHS,
                       max_seq_len=3 * 60 + 4, num_steps=10_000)
    c.experiment.runs = scheme_runs("addition", scheme_names(arg))
    return c
