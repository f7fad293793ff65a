"""Start-up: a command imports what it uses and nothing more (checked in fresh interpreters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "pandas", "sklearn", "matplotlib", "pymatgen", "scipy", "gemmi")


def imported_after(code: str, cwd: Path) -> set[str]:
    """The heavy top-level packages a fresh interpreter has imported after running ``code``."""
    loaded = f"sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})"
    probe = f"{code}\nimport json, sys\nprint(json.dumps({loaded}))"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_importing_predict_imports_nothing_heavy(tmp_path):
    assert imported_after("import cgcnn.predict", tmp_path) == set()


def test_predict_help_imports_nothing_heavy(tmp_path):
    code = ("import contextlib, io\nfrom cgcnn.predict import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass")
    assert imported_after(code, tmp_path) == set()


def test_predict_run_imports_no_scikit_learn_or_matplotlib(tmp_path, small_model, cif_folder):
    code = f"from cgcnn.predict import predict\npredict({str(small_model)!r}, {str(cif_folder)!r}, progress=False)"
    loaded = imported_after(code, tmp_path)
    assert {"torch", "pandas"} <= loaded
    assert not loaded & {"sklearn", "matplotlib"}


def test_cached_graphs_run_imports_no_scikit_learn_or_matplotlib(tmp_path, small_model, cif_folder):
    """A cached graph is checked against its CIF by gemmi's symmetry expansion (and pymatgen's periodic
    table for the order of elements; no structure is built: tests/test_data.py), nothing more."""
    cache = tmp_path / "cache"
    run = (f"from cgcnn.predict import predict\n"
           f"predict({str(small_model)!r}, {str(cif_folder)!r}, progress=False, cache_dir={str(cache)!r}, workers=0)")
    assert "pymatgen" in imported_after(run, tmp_path)  # first run: CIFs parsed
    assert not imported_after(run, tmp_path) & {"sklearn", "matplotlib", "scipy"}
