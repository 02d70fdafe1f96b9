"""Byte-level LM end to end (bits per byte), and sampling with the mixers' recurrent decoding."""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs
from sequax.experiments import lm, sampling
from sequax.models import build_model
from sequax.train.config import default_config
from tests.experiments.tiny import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_lm_reports_bits_per_byte_and_sample_py_continues_a_prompt(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"f{i}.txt").write_text(("hello sequax " * 20)[i:] + "\n")
    config = tiny(configs.get("lm/bytes"))
    config.experiment.runs.attention.data.task_kwargs = dict(path=str(corpus), seq_len=32, validation_every=3)
    workdir = tmp_path / "w"
    summary = lm.run(config, str(workdir))
    run = summary["runs"]["attention"]
    assert run["bits_per_byte"]["validation"] == pytest.approx(run["validation_loss"] / math.log(2))
    assert 4 < run["bits_per_byte"]["validation"] < 10  # ~8 bits for an untrained byte model
    assert [x for x, _ in summary["curves"]["bits_per_byte"]["attention/validation"]] == [2.0]
    assert summary["plots"] == ["bits_per_byte.png"]
    done = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "sample.py"), "--workdir",
                           str(workdir / "attention"), "--prompt", "hello", "--num_bytes", "12", "--top_k", "5",
                           "--num_samples", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == f"# {workdir / 'attention'} at step 2"
    assert sum(line.startswith("hello") for line in lines) == 2
    missing = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "sample.py"), "--workdir",
                              str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert missing.returncode == 1 and "holds no config.json" in missing.stderr.splitlines()[-1]


def model_and_params(mixer, init=True, **model):
    config = default_config()
    config.model.mixer, config.model.d_model, config.model.num_heads, config.model.vocab_size = mixer, 16, 2, 40
    config.model.num_layers = 1
    for key, value in model.items():
        config.model[key] = value
    module = build_model(config.model)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 10), 0, 40)
    params = jax.jit(module.init)(jax.random.PRNGKey(1), tokens)["params"] if init else None
    return module, params, tokens


@pytest.mark.parametrize("mixer, model", [
    ("attention", {"position_embedding": "learned", "max_length": 16}),
    ("mamba", {"tie_embeddings": True}),
])
def test_step_by_step_logits_equal_the_parallel_forward_pass(mixer, model):
    module, params, tokens = model_and_params(mixer, **model)
    parallel = jax.jit(module.apply)({"params": params}, tokens)
    stepped = sampling.step_logits(module, params, tokens)
    np.testing.assert_allclose(stepped, parallel, atol=2e-5, rtol=2e-5)


def test_greedy_generation_follows_the_argmax_and_top_k_samples_the_k_most_likely():
    module, params, tokens = model_and_params("attention")
    prompt = tokens[:, :3]
    greedy = sampling.generate(module, params, prompt, 5, jax.random.PRNGKey(0), temperature=0.0)
    assert greedy.shape == (2, 8)
    np.testing.assert_array_equal(greedy[:, :3], prompt)
    forward = jax.jit(module.apply)
    logits = forward({"params": params}, greedy)  # causal: position t - 1 sees the prefix only
    for t in range(3, 8):  # each new token is the parallel model's argmax after its prefix
        np.testing.assert_array_equal(greedy[:, t], jnp.argmax(logits[:, t - 1], -1))
    a = sampling.generate(module, params, prompt, 12, jax.random.PRNGKey(1), temperature=1.0, top_k=3)
    b = sampling.generate(module, params, prompt, 12, jax.random.PRNGKey(2), temperature=1.0, top_k=3)
    assert not np.array_equal(a, b)  # sampling, not argmax
    top3 = np.argsort(np.asarray(forward({"params": params}, a)), -1)[..., -3:]
    assert all(a[i, t + 1] in top3[i, t] for i in range(2) for t in range(2, 14))  # only the 3 most likely


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_tokens=-1), "must be >= 0"),
    (dict(top_k=41), r"top_k \(41\) exceeds the vocabulary"),
])
def test_bad_sampling_arguments_raise(kwargs, message):
    module, params, tokens = model_and_params("attention", init=False)  # refused before any parameter is read
    arguments = {**dict(num_tokens=2, rng=jax.random.PRNGKey(0), temperature=1.0, top_k=0), **kwargs}
    with pytest.raises(ValueError, match=message):
        sampling.generate(module, params, tokens[:, :2], **arguments)
    with pytest.raises(ValueError, match=r"needs a causal model"):
        m, p, t = model_and_params("attention", init=False, causal=False)
        sampling.step_logits(m, p, t)
