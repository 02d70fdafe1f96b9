"""The benchmark helpers' folder is put first on ``sys.path`` by the PyTorch peer scripts
(``experiments/bench/peers_*.py``), so no module there may share a standard-library name: a
``profile.py`` there once replaced Python's ``profile`` (which ``cProfile`` imports) and the
fla peer died at import."""

import pathlib
import sys


def test_no_bench_module_shadows_the_standard_library():
    folder = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "bench"
    names = {p.stem for p in folder.glob("*.py")}
    assert names and not names & set(sys.stdlib_module_names)
