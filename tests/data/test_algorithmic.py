"""Length-generalisation tasks (copy, reverse, addition, sort + successor hint) and passkey retrieval:
each example decodes back to a right answer, the loss counts exactly the answer."""

import numpy as np
import pytest

from sequax.data import algorithmic as A
from sequax.data import make_task


def rows(task, batch_size=16, seed=0):
    batch = task.batch(np.random.default_rng(seed), batch_size)
    for inputs, targets, mask in zip(batch["inputs"], batch["targets"], batch["loss_mask"]):
        length = int(np.flatnonzero(targets)[-1]) + 1  # the last real next token is END (or a hint answer)
        tokens = np.concatenate([inputs[:1], targets[:length]])
        np.testing.assert_array_equal(inputs[1:length], targets[:length - 1])  # targets are the next tokens
        assert (inputs[length:] == 0).all() and (mask[length:] == 0).all()
        yield tokens, mask[:length]


def split(tokens, mark):
    at = int(np.flatnonzero(tokens == mark)[0])
    return tokens[:at], tokens[at + 1:]


@pytest.mark.parametrize("name", ["copy", "reverse", "sort"])
def test_copy_reverse_and_sort_answers(name):
    task = make_task(name, min_len=3, max_len=9)
    assert task.seq_len == 2 * 9 + 2
    lengths = set()
    for tokens, mask in rows(task, 128):
        items, answer = split(tokens, A.SEP)
        expected = {"copy": list(items), "reverse": list(items[::-1]), "sort": sorted(items)}[name]
        assert list(answer) == expected + [A.END]
        assert (items >= A.VALUE0).all()
        # The loss counts the answer and END: the positions from the separator on.
        assert mask.sum() == len(answer) and (mask[len(items):] == 1).all() and (mask[:len(items)] == 0).all()
        lengths.add(len(items))
    assert lengths == set(range(3, 10))


def number(digits):
    """The integer whose digits, least significant first, are ``digits`` (value tokens)."""
    return int("".join(str(int(d) - A.VALUE0) for d in digits[::-1]))


def test_addition_is_right_with_digits_least_significant_first():
    task = make_task("addition", min_len=4, max_len=4)
    for tokens, mask in rows(task, 32, seed=2):
        left, rest = split(tokens, A.PLUS)
        right, answer = split(rest, A.SEP)
        assert len(left) == len(right) == 4 and len(answer) == 6  # 5 digits and END
        assert number(answer[:-1]) == number(left) + number(right) and answer[-1] == A.END
        assert mask.sum() == 6


def test_successor_hint_examples_name_each_elements_successor():
    items = [A.VALUE0 + v for v in (7, 2, 9, 4)]
    tokens, scored = A.successor_example(items)
    assert tokens[:5] == items + [A.HINT]
    pairs = tokens[5:]
    successor = dict(zip(pairs[0::2], pairs[1::2]))
    assert successor == {A.VALUE0 + 7: A.VALUE0 + 9, A.VALUE0 + 2: A.VALUE0 + 4, A.VALUE0 + 9: A.END,
                         A.VALUE0 + 4: A.VALUE0 + 7}
    assert [tokens[p] for p in scored] == pairs[1::2]
    task = make_task("sort", min_len=5, max_len=5, hint_fraction=0.5)
    assert task.seq_len == 3 * 5 + 1
    kinds = [A.HINT in tokens for tokens, _ in rows(task, 64, seed=1)]
    assert 0.3 < np.mean(kinds) < 0.7
    plain = make_task("sort", min_len=5, max_len=5, hint_fraction=0.0)
    assert not any(A.HINT in tokens for tokens, _ in rows(plain, 16))


def test_passkey_hides_the_key_at_every_depth_and_asks_for_it():
    task = make_task("passkey", seq_len=64, num_digits=5, vocab_size=32)
    batch = task.batch(np.random.default_rng(0), 64)
    depths = []
    for inputs, targets, mask in zip(batch["inputs"], batch["targets"], batch["loss_mask"]):
        key_at = int(np.flatnonzero(inputs == task.KEY)[0])
        key = inputs[key_at + 1:key_at + 6]
        assert ((key >= task.DIGIT0) & (key < task.DIGIT0 + 10)).all()
        query_at = int(np.flatnonzero(inputs == task.QUERY)[0])
        assert query_at == 64 - 6
        np.testing.assert_array_equal(targets[mask == 1], key)
        np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(query_at, query_at + 5))
        depths.append(key_at)
    assert min(depths) < 10 and max(depths) > 40
    filler = inputs[(inputs >= task.FILLER0)]
    assert len(set(filler.tolist())) == 16  # the repeated 16-token phrase


@pytest.mark.parametrize("name, kwargs, message", [
    ("copy", dict(min_len=5, max_len=3), r"min_len \(5\) must not exceed max_len \(3\)"),
    ("copy", dict(max_len=10, seq_len=8), r"seq_len \(8\) is shorter than the longest example"),
    ("sort", dict(max_len=50, num_values=20), "distinct sorting of max_len=50 items needs num_values >= max_len"),
    ("sort", dict(hint_fraction=1.5), r"hint_fraction must be in \[0, 1\]"),
    ("passkey", dict(filler="noise"), "filler must be 'repeat' or 'random'"),
])
def test_bad_options_raise(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task(name, **kwargs)
