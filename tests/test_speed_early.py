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
    descriptors, names = tool._layer_hint(fitted / "last_layer.sav")
    assert descriptors == "slack"
    assert names == ["debye_temperature.pth.tar", "bulk_modulus.pth.tar", "shear_modulus.pth.tar"]


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
