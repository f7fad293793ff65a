"""The package's architecture (README, "Layout"): no import cycle, the layers of pyproject.toml, old paths kept."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SUBPACKAGES = ("outputs", "crystals", "data", "model", "transfer", "screening", "evaluation", "refine")


def test_no_import_cycle():
    """No module of cgcnn imports itself back through others (imports inside functions included)."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("cgcnn")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is not None:
                cycles.append((module, *chain))
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_layers_contract_covers_every_subpackage():
    """lint-imports' layers contract (run by .ci/run) names every subpackage, and the tree keeps it."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    layered = {name.strip() for contract in config["contracts"] if contract["type"] == "layers"
               for layer in contract["layers"] for name in layer.split("|")}
    found = {p.name for p in (REPO / "cgcnn").iterdir() if (p / "__init__.py").exists()}
    assert found == set(SUBPACKAGES)
    assert {f"cgcnn.{s}" for s in SUBPACKAGES} <= layered
    lint = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter not installed")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([lint, "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_every_subpackage_says_its_job_and_public_names():
    import importlib

    for name in SUBPACKAGES:
        package = importlib.import_module(f"cgcnn.{name}")
        assert package.__doc__ and len(package.__doc__) > 200, name
        assert package.__all__ and all(hasattr(package, n) for n in package.__all__), name


def test_no_module_over_400_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "cgcnn").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long


def test_last_layer_of_the_previous_version_loads_and_predicts_the_same(tmp_path):
    """tests/data/last_layer_v2.sav: written by the flat-package version (skops records its classes as
    ``cgcnn.estimators.ColumnKernel`` and ``cgcnn.estimators.MemberAverage``; three ensemble members,
    gp, on the first 12 crystals of data/sample); last_layer_v2_results.csv: that version's --train 0
    results on those crystals. This version gives the same bytes."""
    expected = (DATA / "last_layer_v2_results.csv").read_text()
    ids = [row["cif_id"] for row in csv.DictReader(expected.splitlines())]
    sample = REPO / "data" / "sample"
    rows = {line.split(",")[0]: line for line in (sample / "id_prop.csv").read_text().splitlines()}
    folder = tmp_path / "sub"
    folder.mkdir()
    for cif_id in ids:
        shutil.copy(sample / f"{cif_id}.cif", folder)
    (folder / "id_prop.csv").write_text("".join(rows[i] + "\n" for i in ids))
    layer = DATA / "last_layer_v2.sav"
    proc = subprocess.run([sys.executable, str(REPO / "transfer_learning_kappa.py"), "--train", "0",
                           str(REPO / "models" / "source.pth.tar"), str(folder), "--last-layer", str(layer), "-q",
                           "--results", str(tmp_path / "results.csv"), "--test-results", str(tmp_path / "t.csv")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "results.csv").read_text() == expected
    from cgcnn.transfer import LastLayer, MemberAverage

    loaded = LastLayer.load(layer)
    assert isinstance(loaded.estimator, MemberAverage)
    assert np.isfinite(loaded.train_mae)
