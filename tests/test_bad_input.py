"""Bad input and faults, through the command line of every tool (issue 8).

Every mistake must end with one line on stderr, ``error: <file>: <cause>``, naming
the file; exit status 2; no traceback; and no earlier output file lost.  Most
cases call each tool's ``main(argv)`` through :func:`cgcnn.cli.run_main` in this
process; a few run the real command line to check the exit status end to end.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from cgcnn import evaluate, predict, train
from cgcnn.cli import run_main
from cgcnn.transfer import LastLayer
from conftest import REPO, TARGETS, crystals, make_checkpoint, one_hot_table, write_folder

TOOL = REPO / "transfer_learning_kappa.py"
_spec = importlib.util.spec_from_file_location("transfer_learning_kappa", TOOL)
transfer_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(transfer_tool)

MAINS = {"transfer": transfer_tool.main, "predict": predict.main, "evaluate": evaluate.main, "train": train.main}


def call(capsys, tool: str, *args) -> tuple[int, str, str]:
    """Run a tool's ``main`` as its command line does; returns (exit status, stdout, stderr)."""
    code = run_main(MAINS[tool], [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def tool_args(tool: str, model, folder, work: Path) -> list:
    """Arguments of ``tool`` on ``model`` and ``folder`` with every output inside ``work``, quiet."""
    if tool == "transfer":
        return [model, folder, "--train", 1, "-q", "--last-layer", work / "last_layer.sav",
                "--test-results", work / "test_results.csv"]
    if tool == "predict":
        return [model, folder, "-q", "--out", work / "predictions.csv"]
    if tool == "evaluate":
        return [model, folder, "-q", "--out-dir", work / "evaluation", "--last-layers", "ridge", "--kfold", 2]
    return [folder, "--epochs", 1, "--out-dir", work, "-b", 2]  # train: no model


def assert_error(code: int, err: str, *names, progress: bool = False) -> str:
    """Exit 2 and one line ``error: ...`` naming each of ``names``, no traceback; returns the line.

    With ``progress``, progress lines may come before the error line (cgcnn.train)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if progress:
        assert sum(line.startswith("error: ") for line in lines) == 1, err
    else:
        assert len(lines) == 1, err
    line = lines[-1]
    assert line.startswith("error: "), err
    for name in names:
        assert str(name) in line, err
    return line


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty working folder, also the current one (default output paths land there)."""
    path = tmp_path / "work"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def lone_atom() -> Structure:
    """One Na atom in a cubic cell of 20 Å: no neighbour within 8 Å."""
    return Structure(Lattice.cubic(20.0), ["Na"], [[0, 0, 0]])


# --------------------------------------------------------------------------------------------------
# model path


def _bad_model(kind: str, tmp_path: Path, small_model: Path) -> Path:
    if kind == "missing":
        return tmp_path / "nothing.pth.tar"
    if kind == "folder":
        (tmp_path / "model_dir").mkdir()
        return tmp_path / "model_dir"
    if kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("hello, this is not a checkpoint\n")
        return path
    if kind == "garbage":
        path = tmp_path / "garbage.pth.tar"
        path.write_bytes(np.random.RandomState(0).bytes(4096))
        return path
    if kind in ("truncated", "truncated-legacy"):
        real = make_checkpoint(tmp_path / "real.pth.tar", legacy=kind.endswith("legacy"))
        path = tmp_path / "half.pth.tar"
        data = real.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    return make_checkpoint(tmp_path / "classifier.pth.tar", classification=True)  # "classification"


@pytest.mark.parametrize("tool", ["transfer", "predict", "evaluate"])
@pytest.mark.parametrize("kind", ["missing", "folder", "text", "garbage", "truncated", "truncated-legacy"])
def test_bad_model_path(capsys, tmp_path, work, cif_folder, small_model, tool, kind):
    model = _bad_model(kind, tmp_path, small_model)
    code, _, err = call(capsys, tool, *tool_args(tool, model, cif_folder, work))
    assert_error(code, err, model.name)
    assert not [p for p in work.rglob("*") if p.is_file()]  # nothing written


@pytest.mark.parametrize("tool", ["transfer", "evaluate"])
def test_classification_model_where_regression_is_needed(capsys, tmp_path, work, cif_folder, small_model, tool):
    model = _bad_model("classification", tmp_path, small_model)
    code, _, err = call(capsys, tool, *tool_args(tool, model, cif_folder, work))
    assert "classification" in assert_error(code, err, model.name)


@pytest.mark.parametrize("option", ["--pretrained", "--resume"])
def test_train_bad_model_path(capsys, tmp_path, work, cif_folder, small_model, option):
    model = _bad_model("truncated", tmp_path, small_model)
    code, _, err = call(capsys, "train", *tool_args("train", None, cif_folder, work), option, model)
    assert_error(code, err, model.name)


# --------------------------------------------------------------------------------------------------
# data folder and id_prop.csv


@pytest.mark.parametrize("tool", ["transfer", "predict", "evaluate", "train"])
@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_data_folder_missing_or_empty(capsys, tmp_path, work, small_model, tool, kind):
    folder = tmp_path / f"{kind}_data"
    if kind == "empty":
        folder.mkdir()
    code, _, err = call(capsys, tool, *tool_args(tool, small_model, folder, work))
    assert_error(code, err, folder.name)


ID_PROP_FAULTS = {
    # name: (id_prop.csv text, words expected in the message)
    "row without its CIF": ("Si,2.17\nNaCl,0.85\nKBr,0.5\nMgO,1.78\n", ["line 3", "KBr.cif"]),
    "duplicate id": ("Si,2.17\nNaCl,0.85\nSi,2.0\n", ["line 3", "duplicate", "Si"]),
    "non-numeric target": ("Si,2.17\nNaCl,high\n", ["line 2", "'high'", "not a number"]),
    "NaN target": ("Si,2.17\nNaCl,nan\n", ["line 2", "not finite"]),
    "infinite target": ("Si,inf\nNaCl,0.85\n", ["line 1", "not finite"]),
    "header not on the first line": ("Si,2.17\ncif_id,target\nNaCl,0.85\n", ["line 2", "not a number"]),
    "rows with and without a target": ("Si,2.17\nNaCl\nMgO,1.78\n", ["line 2", "some rows"]),
    "semicolon separated": ("Si;2.17\nNaCl;0.85\n", ["Si;2.17.cif"]),
    "only a header": ("cif_id,target\n", ["only a header"]),
}


@pytest.mark.parametrize("case", list(ID_PROP_FAULTS))
def test_id_prop_faults(capsys, work, cif_folder, small_model, case):
    text, words = ID_PROP_FAULTS[case]
    (cif_folder / "id_prop.csv").write_text(text)
    code, _, err = call(capsys, "transfer", *tool_args("transfer", small_model, cif_folder, work))
    assert_error(code, err, "id_prop.csv", *words)


def test_id_prop_fault_in_train(capsys, work, cif_folder):
    (cif_folder / "id_prop.csv").write_text("Si,2.17\nSi,2.17\n")
    code, _, err = call(capsys, "train", *tool_args("train", None, cif_folder, work))
    assert_error(code, err, "id_prop.csv", "duplicate")


ID_PROP_ACCEPTED = {
    "blank lines": "\nSi,2.17\n\n  \nNaCl,0.85\nGaAs,1.65\n\nMgO,1.78\n\n",
    "header row": "cif_id,log10_kappa\nSi,2.17\nNaCl,0.85\nGaAs,1.65\nMgO,1.78\n",
    "Windows line endings": "Si,2.17\r\nNaCl,0.85\r\nGaAs,1.65\r\nMgO,1.78\r\n",
    "spaces and a byte-order mark": "\ufeffSi , 2.17\n NaCl,0.85 \nGaAs,1.65\nMgO,1.78\n",
}


def test_id_prop_extra_columns_refused(capsys, work, cif_folder):
    """A row with more than cif_id,target (an extra column, or a decimal comma) is refused, not truncated
    (upstream ignored extra columns; a decimal comma then silently read 0,85 as 0)."""
    for text in ("Si,2.17,diamond\nNaCl,0.85\n", "Si,2,17\nNaCl,0.85\n"):
        (cif_folder / "id_prop.csv").write_text(text)
        code, _, err = call(capsys, "train", *tool_args("train", None, cif_folder, work))
        assert_error(code, err, "id_prop.csv", "line 1", "3 fields")


@pytest.mark.parametrize("case", list(ID_PROP_ACCEPTED))
def test_id_prop_variants_accepted(capsys, tmp_path, work, cif_folder, small_model, case):
    code, _, err = call(capsys, "predict", small_model, cif_folder, "-q", "--out", work / "clean.csv")
    assert code == 0, err
    (cif_folder / "id_prop.csv").write_bytes(ID_PROP_ACCEPTED[case].encode())
    code, _, err = call(capsys, "predict", small_model, cif_folder, "-q", "--out", work / "variant.csv")
    assert code == 0, err
    clean, variant = pd.read_csv(work / "clean.csv"), pd.read_csv(work / "variant.csv")
    assert list(variant.cif_id) == list(TARGETS)
    np.testing.assert_allclose(variant.target, list(TARGETS.values()))
    np.testing.assert_array_equal(variant.prediction, clean.prediction)


# --------------------------------------------------------------------------------------------------
# CIF files


def _write_bad_cif(folder: Path, kind: str) -> Path:
    path = folder / "bad.cif"
    if kind == "unparsable":
        path.write_text("data_x\nthis is not a crystal structure\n_cell_length_a oops\n")
    elif kind == "empty":
        path.write_text("")
    elif kind == "partial occupancy":
        s = Structure(Lattice.cubic(5.6), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        s.to(filename=str(path))
    elif kind == "element not in atom_init.json":
        Structure(Lattice.cubic(4.0), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(filename=str(path))
    return path


CIF_FAULTS = {"unparsable": "cannot parse", "empty": "empty file", "partial occupancy": "partial occupancies",
              "element not in atom_init.json": "Cs"}


@pytest.mark.parametrize("kind", list(CIF_FAULTS))
def test_bad_cif(capsys, work, cif_folder, small_model, kind):
    table = one_hot_table(92, zmax=54)  # no Cs (55)
    (cif_folder / "atom_init.json").write_text(json.dumps(table))
    _write_bad_cif(cif_folder, kind)
    with (cif_folder / "id_prop.csv").open("a") as f:
        f.write("bad,1.0\n")
    code, _, err = call(capsys, "transfer", *tool_args("transfer", small_model, cif_folder, work))
    assert_error(code, err, "bad.cif", CIF_FAULTS[kind])
    assert not [p for p in work.rglob("*") if p.is_file()]


def test_bad_cif_in_a_worker_process(capsys, work, cif_folder, small_model):
    """Raised in a DataLoader worker, the error still comes back as one line."""
    _write_bad_cif(cif_folder, "empty")
    (cif_folder / "id_prop.csv").unlink()
    code, _, err = call(capsys, "predict", small_model, cif_folder, "-q", "-j", 1, "--out", work / "p.csv")
    assert_error(code, err, "bad.cif", "empty file")


def _prepend_bad_row(folder: Path) -> None:
    """List ``bad`` first in ``id_prop.csv``: with seed 0 the first row is in the training split
    (rows outside every split are never read, as upstream)."""
    text = (folder / "id_prop.csv").read_text()
    (folder / "id_prop.csv").write_text("bad,1.0\n" + text)


def test_bad_cif_in_train(capsys, work, cif_folder):
    _write_bad_cif(cif_folder, "unparsable")
    _prepend_bad_row(cif_folder)
    code, _, err = call(capsys, "train", *tool_args("train", None, cif_folder, work), "-b", 8)
    assert_error(code, err, "bad.cif", "cannot parse", progress=True)


def test_too_many_sites(capsys, work, cif_folder, small_model, monkeypatch):
    """A cell over the site limit is refused with its number of sites and the limit
    (the limit lowered here from 5000 so the test stays small)."""
    import cgcnn.data
    from cgcnn.crystals import structure as structure_module

    assert cgcnn.data.MAX_SITES == structure_module.MAX_SITES == 5000
    monkeypatch.setattr(structure_module, "MAX_SITES", 12)
    big = crystals()["NaCl"] * (2, 1, 1)  # 16 sites
    write_folder(cif_folder, {"big": big})
    (cif_folder / "id_prop.csv").write_text("Si,2.17\nbig,1.0\n")
    code, _, err = call(capsys, "transfer", *tool_args("transfer", small_model, cif_folder, work))
    assert_error(code, err, "big.cif", "16 sites", "limit of 12")


def test_lone_atom_warns_and_predicts(capsys, work, cif_folder, small_model):
    write_folder(cif_folder, {"lonely": lone_atom()})
    (cif_folder / "id_prop.csv").write_text("Si,2.17\nlonely,0.0\n")
    with pytest.warns(UserWarning, match="lonely: 1 site") as record:
        code, _, err = call(capsys, "predict", small_model, cif_folder, "-q", "--out", work / "p.csv")
    assert code == 0, err
    assert all("\n" not in str(w.message) for w in record)
    assert np.isfinite(pd.read_csv(work / "p.csv").prediction).all()


# --------------------------------------------------------------------------------------------------
# atom_init.json


@pytest.mark.parametrize("tool", ["transfer", "predict", "evaluate", "train"])
@pytest.mark.parametrize("kind", ["missing", "malformed", "unequal vectors", "wrong length"])
def test_bad_atom_init(capsys, work, cif_folder, small_model, tool, kind):
    path = cif_folder / "atom_init.json"
    words = {"missing": "not found", "malformed": "not valid JSON", "unequal vectors": "differ in length",
             "wrong length": "atom features"}[kind]
    if kind == "missing":
        path.unlink()
    elif kind == "malformed":
        path.write_text('{"1": [0, 1,')
    elif kind == "unequal vectors":
        table = one_hot_table()
        table["8"] = table["8"][:50]
        path.write_text(json.dumps(table))
    else:
        if tool == "train":
            pytest.skip("cgcnn.train builds its network for the table it is given")
        path.write_text(json.dumps(one_hot_table(50)))
    code, _, err = call(capsys, tool, *tool_args(tool, small_model, cif_folder, work))
    assert_error(code, err, "atom_init.json", words)


@pytest.mark.parametrize("tool", ["transfer", "predict", "evaluate"])
def test_atom_init_not_the_models(capsys, tmp_path, work, cif_folder, tool):
    """A checkpoint that stores its atom feature table refuses a folder with another one."""
    model = make_checkpoint(tmp_path / "with_table.pth.tar", atom_init=one_hot_table(92, zmax=100))
    (cif_folder / "atom_init.json").write_text(json.dumps(one_hot_table(92, zmax=95)))
    code, _, err = call(capsys, tool, *tool_args(tool, model, cif_folder, work))
    assert_error(code, err, "atom_init.json", model.name, "differs")


# --------------------------------------------------------------------------------------------------
# last_layer.sav


@pytest.fixture
def fitted(capsys, work, cif_folder, small_model) -> Path:
    """``work/last_layer.sav`` fit by ``--train 1`` on ``cif_folder``; ``work/results.csv`` by ``--train 0``."""
    code, _, err = call(capsys, "transfer", small_model, cif_folder, "--train", 1, "-q")
    assert code == 0, err
    code, _, err = call(capsys, "transfer", small_model, cif_folder, "--train", 0, "-q")
    assert code == 0, err
    return work / "last_layer.sav"


def _predict_args(model, folder, last_layer) -> list:
    return [model, folder, "--train", 0, "-q", "--last-layer", last_layer]


def test_last_layer_missing(capsys, work, cif_folder, small_model):
    code, _, err = call(capsys, "transfer", *_predict_args(small_model, cif_folder, work / "last_layer.sav"))
    assert_error(code, err, "last_layer.sav", "not found", "--train 1")


@pytest.mark.parametrize("kind", ["garbage", "truncated", "empty", "another source model", "another feature length",
                                  "bare estimator", "bare estimator of another feature length"])
def test_last_layer_faults(capsys, tmp_path, work, cif_folder, small_model, fitted, kind):
    bad = tmp_path / "bad.sav"
    words = {"garbage": "not a readable last layer", "truncated": "not a readable last layer",
             "empty": "not a readable last layer", "another source model": "other source model",
             "another feature length": "fit on 7 inputs",
             "bare estimator": "--trust-pickle",
             "bare estimator of another feature length": "fit on 7 inputs"}[kind]
    trust = []
    model = small_model
    if kind == "garbage":
        bad.write_bytes(np.random.RandomState(1).bytes(2000))
    elif kind == "truncated":
        data = fitted.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "another source model":
        bad = fitted
        model = make_checkpoint(tmp_path / "other.pth.tar", seed=1)
    elif kind == "another feature length":
        record = LastLayer.load(fitted)
        record.n_features = 7
        record.save(bad)
    else:  # the original tool's file: a bare pickled estimator
        from sklearn.linear_model import Ridge

        joblib.dump(Ridge().fit(np.zeros((3, 7)), np.arange(3.0)), bad)
        trust = ["--trust-pickle"] if kind.endswith("length") else []
    results = (work / "results.csv").read_bytes()
    if trust:
        with pytest.warns(UserWarning, match="bare pickled estimator"):
            code, _, err = call(capsys, "transfer", *_predict_args(model, cif_folder, bad), *trust)
    else:
        code, _, err = call(capsys, "transfer", *_predict_args(model, cif_folder, bad))
    assert_error(code, err, bad.name, words)
    assert (work / "results.csv").read_bytes() == results


def test_last_layer_of_another_sklearn_version_warns_and_predicts(capsys, tmp_path, work, cif_folder, small_model,
                                                                  fitted):
    record = LastLayer.load(fitted)
    record.versions["scikit-learn"] = "0.0.1"
    old = tmp_path / "old.sav"
    record.save(old)
    expected = pd.read_csv(work / "results.csv")
    (work / "results.csv").unlink()
    with pytest.warns(UserWarning, match="scikit-learn 0.0.1") as warned:
        code, _, err = call(capsys, "transfer", *_predict_args(small_model, cif_folder, old))
    assert code == 0, err
    assert [str(w.message).count("\n") for w in warned] == [0]
    assert "old.sav" in str(warned[0].message)
    pd.testing.assert_frame_equal(pd.read_csv(work / "results.csv"), expected)


# --------------------------------------------------------------------------------------------------
# options and output paths


def test_train_option_other_than_0_or_1(capsys, cif_folder, small_model):
    with pytest.raises(SystemExit) as exc:
        run_main(transfer_tool.main, [str(small_model), str(cif_folder), "--train", "2"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["transfer", "predict", "evaluate", "train"])
def test_batch_size_zero(capsys, work, cif_folder, small_model, tool):
    code, _, err = call(capsys, tool, *tool_args(tool, small_model, cif_folder, work), "-b", 0)
    assert_error(code, err, "--batch-size", "at least 1")


def _unwritable(tmp_path: Path, kind: str, name: str) -> Path:
    if kind == "missing folder":
        return tmp_path / "no_such_folder" / name
    if kind == "under a file":  # reliable even as root, where permissions do not stop writes
        (tmp_path / "somefile.txt").write_text("x")
        return tmp_path / "somefile.txt" / name
    (tmp_path / name).mkdir()  # "a folder"
    return tmp_path / name


@pytest.mark.parametrize("kind", ["missing folder", "under a file", "a folder"])
@pytest.mark.parametrize("option", ["--results", "--test-results"])
def test_transfer_output_not_writable(capsys, tmp_path, work, cif_folder, small_model, fitted, kind, option):
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    target = _unwritable(tmp_path, kind, "out.csv")
    code, _, err = call(capsys, "transfer", *_predict_args(small_model, cif_folder, fitted), option, target)
    assert_error(code, err, "out.csv")
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


@pytest.mark.parametrize("kind", ["missing folder", "under a file"])
def test_last_layer_not_writable(capsys, tmp_path, work, cif_folder, small_model, fitted, kind):
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    target = _unwritable(tmp_path, kind, "ll.sav")
    code, _, err = call(capsys, "transfer", small_model, cif_folder, "--train", 1, "-q", "--last-layer", target)
    assert_error(code, err, "ll.sav")
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before  # test_results.csv untouched too


@pytest.mark.parametrize("tool", ["predict", "evaluate", "train"])
def test_other_tools_output_not_writable(capsys, tmp_path, work, cif_folder, small_model, tool):
    target = _unwritable(tmp_path, "under a file", "out")
    option = {"predict": "--out", "evaluate": "--out-dir", "train": "--out-dir"}[tool]
    code, _, err = call(capsys, tool, *tool_args(tool, small_model, cif_folder, work), option, target)
    assert_error(code, err, "somefile.txt")


# --------------------------------------------------------------------------------------------------
# atomic writes: a failed or interrupted run leaves earlier results intact


def test_failed_train_1_keeps_last_layer(capsys, work, cif_folder, small_model, fitted):
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    _write_bad_cif(cif_folder, "unparsable")
    with (cif_folder / "id_prop.csv").open("a") as f:
        f.write("bad,1.0\n")
    code, _, err = call(capsys, "transfer", small_model, cif_folder, "--train", 1, "-q")
    assert_error(code, err, "bad.cif")
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


def test_failed_train_0_keeps_results(capsys, work, cif_folder, small_model, fitted):
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    _write_bad_cif(cif_folder, "empty")
    (cif_folder / "id_prop.csv").write_text("Si\nbad\n")
    code, _, err = call(capsys, "transfer", small_model, cif_folder, "--train", 0, "-q")
    assert_error(code, err, "bad.cif")
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


def test_train_1_without_targets_keeps_earlier_outputs(capsys, work, cif_folder, small_model, fitted):
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    (cif_folder / "id_prop.csv").write_text("Si\nNaCl\n")
    code, _, err = call(capsys, "transfer", small_model, cif_folder, "--train", 1, "-q")
    assert_error(code, err, cif_folder.name, "needs targets")
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


def test_interrupted_write_keeps_last_layer(capsys, work, cif_folder, small_model, fitted, monkeypatch):
    before = fitted.read_bytes()

    def interrupted_dump(data, f):
        f.write(b"half a file")
        raise KeyboardInterrupt

    def save_to(self, outputs, path):  # the last layer's bytes, interrupted half-way through the write
        outputs.save(path, self.dumps(), saver=interrupted_dump)

    monkeypatch.setattr(LastLayer, "save_to", save_to)
    code, _, err = call(capsys, "transfer", small_model, cif_folder, "--train", 1, "-q", "--seed", 3)
    assert code == 130 and "Traceback" not in err
    assert fitted.read_bytes() == before
    assert not list(work.glob(".*.tmp"))  # no temporary file left behind


def test_failed_cgcnn_train_keeps_checkpoint(capsys, work, cif_folder):
    code, _, err = call(capsys, "train", *tool_args("train", None, cif_folder, work))
    assert code == 0, err
    saved = {name: (work / name).read_bytes() for name in ("checkpoint.pth.tar", "model_best.pth.tar")}
    _write_bad_cif(cif_folder, "empty")
    _prepend_bad_row(cif_folder)
    code, _, err = call(capsys, "train", *tool_args("train", None, cif_folder, work), "-b", 8)
    assert_error(code, err, "bad.cif", progress=True)
    assert {name: (work / name).read_bytes() for name in saved} == saved


# --------------------------------------------------------------------------------------------------
# end to end: the real command line


def _run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_command_line_missing_model(tmp_path, cif_folder):
    proc = _run([TOOL, tmp_path / "nothing.pth.tar", cif_folder, "-q"], tmp_path)
    assert_error(proc.returncode, proc.stderr, "nothing.pth.tar", "not found")
    assert proc.stdout == ""


def test_command_line_bad_cif_and_lone_atom(tmp_path, cif_folder, small_model):
    """cgcnn.predict: a lone atom is a one-line warning naming the crystal; a bad CIF, read by a
    worker process, a one-line error and exit 2."""
    write_folder(cif_folder, {"lonely": lone_atom()})
    (cif_folder / "id_prop.csv").write_text("Si,2.17\nlonely,0.0\n")
    proc = _run(["-m", "cgcnn.predict", small_model, cif_folder, "-q", "--out", tmp_path / "p.csv"], REPO)
    assert proc.returncode == 0, proc.stderr
    warnings_ = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings_) == 1 and "lonely" in warnings_[0], proc.stderr
    assert "Traceback" not in proc.stderr

    _write_bad_cif(cif_folder, "unparsable")
    (cif_folder / "id_prop.csv").write_text("Si,2.17\nbad,1.0\n")
    proc = _run(["-m", "cgcnn.predict", small_model, cif_folder, "-q", "-j", 1, "--out", tmp_path / "q.csv"], REPO)
    assert_error(proc.returncode, proc.stderr, "bad.cif", "cannot parse")
