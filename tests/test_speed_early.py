"""--train 0 starts building graphs before the last layer is loaded (cgcnn.screen.EarlyChunks): used
when its graphs are those the run needs, closed otherwise; the results are the same bytes either way."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
from test_screen import FAST, MODEL, SAMPLE, TOOL, folder_of, run

import cgcnn.screen

_spec = importlib.util.spec_from_file_location("transfer_learning_kappa", TOOL)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

pytestmark = pytest.mark.skipif(not (SAMPLE / "C.cif").is_file() or not MODEL.is_file(),
                                reason="needs data/sample and the bundled models")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    work = tmp_path_factory.mktemp("fit")
    data = folder_of(work / "data")
    run("--train", 1, MODEL, data, "--last-layer-type", "ridge", "--cv-folds", 0, cwd=work)
    run("--train", 0, MODEL, data, *FAST[:-1], 0, "--results", work / "results_plain.csv", cwd=work)  # no pool
    return work


def screen_bytes(fitted, out, monkeypatch, taken: list) -> bytes:
    real = cgcnn.screen.EarlyChunks.take

    def take(self, screener, done):
        got = real(self, screener, done)
        taken.append(got is not None)
        return got

    monkeypatch.setattr(cgcnn.screen.EarlyChunks, "take", take)
    args = ["--train", "0", str(MODEL), str(fitted / "data"), "--last-layer", str(fitted / "last_layer.sav"), *FAST,
            "-q", "--results", str(out / "results.csv"), "--test-results", str(out / "test_results.csv")]
    assert tool.main(args) == 0
    return (out / "results.csv").read_bytes() + (out / "test_results.csv").read_bytes()


def test_hint_read_without_scikit_learn(fitted):
    descriptors, names, folders = tool._layer_hint(fitted / "last_layer.sav")
    assert descriptors == "slack"
    assert names == ["debye_temperature.pth.tar", "bulk_modulus.pth.tar", "shear_modulus.pth.tar"] * 3
    assert folders == ["seed1", "seed2"]


def test_early_graphs_used_or_not_same_bytes(fitted, tmp_path, monkeypatch):
    outs = [tmp_path / name for name in ("early", "none", "other")]
    for out in outs:
        out.mkdir()
    taken: list = []
    early = screen_bytes(fitted, outs[0], monkeypatch, taken)
    assert taken == [True]

    monkeypatch.setattr(tool, "_early_chunks", lambda args: None)
    taken.clear()
    assert screen_bytes(fitted, outs[1], monkeypatch, taken) == early
    assert taken == []

    monkeypatch.undo()
    real_init = cgcnn.screen.EarlyChunks.__init__

    def other_graphs(self, spec, data, settings):  # a hint that turns out wrong: not used
        real_init(self, dataclasses.replace(spec, structure_desc=not spec.structure_desc), data, settings)

    monkeypatch.setattr(cgcnn.screen.EarlyChunks, "__init__", other_graphs)
    taken.clear()
    assert screen_bytes(fitted, outs[2], monkeypatch, taken) == early
    assert taken == [False]


def test_no_early_start_when_unusual(fitted, tmp_path):
    base = ["--train", "0", str(MODEL), str(fitted / "data"), "--last-layer", str(fitted / "last_layer.sav")]
    for extra in (["-j", "0"], ["--resume"], ["--dask", "local"], ["--descriptors", "none"]):
        assert tool._early_chunks(tool.build_parser().parse_args(base + extra)) is None
    missing = ["--train", "0", str(MODEL), str(fitted / "data"), "--last-layer", str(tmp_path / "none.sav")]
    assert tool._early_chunks(tool.build_parser().parse_args(missing)) is None


PROBE = """
import json, sys, importlib.util
import cgcnn.screen
real = cgcnn.screen._start_pool
seen = []
def start_pool(workers, spec):
    seen.append({m: m in sys.modules for m in ("torch", "sklearn")})
    return real(workers, spec)
cgcnn.screen._start_pool = start_pool
spec = importlib.util.spec_from_file_location("tool", sys.argv[1])
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
code = tool.main(sys.argv[2:])
print(json.dumps({"code": code, "seen": seen}))
"""


def test_pool_forks_before_torch_and_scikit_learn(fitted, tmp_path):
    import json
    import subprocess
    import sys

    args = ["--train", "0", str(MODEL), str(fitted / "data"), "--last-layer", str(fitted / "last_layer.sav"), *FAST,
            "-q", "--results", str(tmp_path / "results.csv"), "--test-results", str(tmp_path / "test_results.csv")]
    proc = subprocess.run([sys.executable, "-c", PROBE, str(TOOL), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert report["seen"] == [{"torch": False, "sklearn": False}]  # one pool, forked before either import
    assert (tmp_path / "results.csv").read_bytes() == (fitted / "results_plain.csv").read_bytes()


def test_original_route_starts_early_same_bytes(tmp_path_factory, tmp_path, monkeypatch):
    work = tmp_path_factory.mktemp("fit_original")
    data = folder_of(work / "data")
    run("--train", 1, MODEL, data, "--original", "--cv-folds", 0, cwd=work)
    base = ["--train", "0", str(MODEL), str(data), "--original", "--last-layer", str(work / "last_layer.sav"), *FAST,
            "-q", "--test-results", str(tmp_path / "test_results.csv")]
    assert tool._early_chunks(tool.build_parser().parse_args(base)) is not None
    taken: list = []
    real = cgcnn.screen.EarlyChunks.take
    monkeypatch.setattr(cgcnn.screen.EarlyChunks, "take",
                        lambda self, s, d: taken.append(True) or real(self, s, d))
    assert tool.main([*base, "--results", str(tmp_path / "early.csv")]) == 0
    assert taken == [True]
    monkeypatch.setattr(tool, "_early_chunks", lambda args: None)
    assert tool.main([*base, "--results", str(tmp_path / "plain.csv")]) == 0
    assert (tmp_path / "early.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()


WORKER_PROBE = """
import json, sys
from pathlib import Path
from cgcnn.archive import CrystalText
from cgcnn.chunk import _PrepSpec, _prepare_one
from cgcnn.graph import GraphParams
spec = _PrepSpec((GraphParams(), GraphParams(radius=6.0)), True, None, None)
cif = Path(sys.argv[1])
got = _prepare_one(spec, CrystalText(cif.stem, str(cif), cif.read_bytes()))
assert got.error is None and len(got.graphs) == 2 and got.desc is not None, got
print(json.dumps({m: m in sys.modules for m in ("torch", "sklearn", "pandas", "matplotlib")}))
"""


def test_graph_building_imports_no_torch():
    """What a graph-building process does to a crystal (read, check, two graphs, descriptors) imports
    neither torch nor scikit-learn: forked before them, it never pays for them."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", WORKER_PROBE, str(SAMPLE / "GaAs.cif")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"torch": False, "sklearn": False, "pandas": False,
                                                               "matplotlib": False}
