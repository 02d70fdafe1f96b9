"""The README's commands and snippets are the ones that work."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
SETUP = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()


def code_blocks(text, language):
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def first_screen():
    return README[: README.index("\n## ")]


def test_first_screen_gives_two_commands_setup_and_run_then_setup_and_test():
    blocks = code_blocks(first_screen(), "bash")
    assert len(blocks) == 2 and all(len(b.strip().splitlines()) == 1 for b in blocks), blocks
    run, test = (b.strip() for b in blocks)
    assert run.startswith("python3 -m venv .venv && ") and "pip install -e ." in run
    assert "experiments/train.py --config configs/quickstart.py" in run
    assert test.startswith("python3 -m venv .venv && ") and 'pip install -q -e ".[test]"' in test
    assert test.endswith("python -m pytest -n 2 -q tests")


def test_ci_runs_exactly_the_readme_test_command():
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    commands = [line for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [code_blocks(first_screen(), "bash")[1].strip()]


def test_every_config_the_readme_names_exists():
    named = set(re.findall(r"configs/[\w/]+\.py", README))
    assert "configs/quickstart.py" in named and "configs/mixers/gla.py" in named
    for relpath in named:
        assert os.path.isfile(os.path.join(ROOT, relpath)), relpath


def test_tensorboard_command_follows_its_extra():
    assert re.search(r'"tensorboard": \["tensorboard[^"]*"\]', SETUP), "setup.py lacks the [tensorboard] extra"
    assert 'pip install -e ".[tensorboard]"' in README and "tensorboard --logdir" in README


def test_python_snippet_runs_from_another_directory(tmp_path):
    """The README's training snippet, at a tiny size, from a directory outside the repository."""
    (snippet,) = [b for b in code_blocks(README, "python") if "train_and_evaluate" in b]
    workdirs = re.findall(r'train_and_evaluate\(config, "([^"]+)"\)', snippet)
    assert workdirs, "the snippet passes its workdir as a string literal"
    snippet = snippet.replace(f'"{workdirs[0]}"', repr(str(tmp_path / "run")))
    shrink = (
        "import configs\n"
        "_get = configs.get\n"
        "def _tiny(*args):\n"
        "    config = _get(*args)\n"
        "    config.train.num_steps, config.train.batch_size = 2, 4\n"
        "    config.model.num_layers, config.eval.num_batches, config.checkpoint.every = 1, 1, 0\n"
        "    return config\n"
        "configs.get = _tiny\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from the checkout
    result = subprocess.run([sys.executable, "-c", shrink + snippet], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").exists()
