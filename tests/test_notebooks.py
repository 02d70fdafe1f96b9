"""Every notebook runs top to bottom at a small size, opens in Colab, and installs sequax there."""

import glob
import os
import re
import subprocess

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
SETUP_URL = re.search(r'url="([^"]+)"', open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()).group(1)
BADGE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/main/([^)]+)\)"
)


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("SEQUAX_NOTEBOOK_STEPS", "20")
    monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": ROOT}})
    client.execute()
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert re.search(r"JAX \S+ on (cpu|gpu|tpu): \[", printed), "the notebook says what JAX runs on"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_badge_and_install_url_are_setup_pys(path):
    """The Colab badge opens this notebook of the repository setup.py names, and installs from it."""
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown"
    badge = BADGE.search(notebook.cells[0].source)
    assert badge, "the first cell starts with an Open In Colab badge"
    assert "https://github.com/" + badge.group(1) == SETUP_URL
    assert badge.group(2) == os.path.relpath(path, ROOT)
    urls = re.findall(r'SEQUAX_URL = "([^"]+)"', install_cell(notebook))
    assert urls == [SETUP_URL]


def install_cell(notebook):
    (cell,) = [c.source for c in notebook.cells if c.cell_type == "code" and "SEQUAX_URL" in c.source]
    return cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.parametrize("where", ["checkout", "notebooks_folder", "fresh_runtime"])
def test_install_cell_picks_the_checkout_or_the_url(path, where, tmp_path, monkeypatch):
    """Where sequax is missing, the install cell pip-installs the checkout it runs in, else the URL."""
    import importlib.util

    cwd = {"checkout": ROOT, "notebooks_folder": os.path.join(ROOT, "notebooks"),
           "fresh_runtime": str(tmp_path)}[where]
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    commands = []
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: commands.append(command))
    exec(install_cell(nbformat.read(path, as_version=4)), {})
    (command,) = commands
    assert command[1:5] == ["-m", "pip", "install", "-q"]
    assert command[5:] == (["git+" + SETUP_URL] if where == "fresh_runtime" else ["-e", ROOT])
