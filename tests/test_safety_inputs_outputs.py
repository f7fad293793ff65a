"""No output may be an input, in any command (issue 24, class 2).

Every file a run reads is an input: the data folder's CIFs, ``id_prop.csv`` and
``atom_init.json``, ``--atom-init``, the models, the last layer, an archive.  An output
naming one (the same path, a symbolic link to it, a hard link of it) is refused before
any work: one line naming the output, exit status 2, and every file that was there
before the run is byte for byte as it was.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_safety_outputs import assert_error, snapshot

from cgcnn import atom_init, evaluate, predict, train
from cgcnn.cli import run_main
from cgcnn.outputs import check_outputs
from conftest import REPO

TOOL = REPO / "transfer_learning_kappa.py"
_spec = importlib.util.spec_from_file_location("transfer_learning_kappa", TOOL)
transfer_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(transfer_tool)


def link(kind: str, target: Path, where: Path) -> Path:
    """``target`` itself (``same``), or a ``symlink``/``hardlink`` to it at ``where``."""
    if kind == "same":
        return target
    if kind == "symlink":
        where.symlink_to(target)
    else:
        os.link(target, where)
    return where


def refused(capsys, tmp_path, main, args, out: Path, *words) -> None:
    before = snapshot(tmp_path)
    code = run_main(main, [str(a) for a in args])
    assert_error(code, capsys.readouterr().err, out, "same file as the input", *words)
    assert snapshot(tmp_path) == before
    assert not list(tmp_path.rglob(".*.tmp"))


@pytest.fixture
def last_layer(tmp_path) -> Path:
    """A small fitted last layer on four inputs without descriptors (what --train 0 loads first)."""
    from cgcnn.transfer import LastLayer

    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4))
    path = tmp_path / "last_layer.sav"
    LastLayer.fit(X, X[:, 0], "ridge", cv_folds=0, inputs={"descriptors": "none"}).save(path)
    return path


# ---------------------------------------------------------------------- transfer_learning_kappa.py

@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_train0_results_naming_a_cif(capsys, tmp_path, cif_folder, small_model, last_layer, kind):
    out = link(kind, cif_folder / "Si.cif", tmp_path / "results.csv")
    refused(capsys, tmp_path, transfer_tool.main,
            [small_model, cif_folder, "--train", 0, "-q", "--last-layer", last_layer, "--results", out,
             "--test-results", tmp_path / "t.csv"], out, "--results", "CIF")


def test_train0_test_results_naming_atom_init(capsys, tmp_path, cif_folder, small_model, last_layer):
    out = link("hardlink", cif_folder / "atom_init.json", tmp_path / "t.csv")
    refused(capsys, tmp_path, transfer_tool.main,
            [small_model, cif_folder, "--train", 0, "-q", "--last-layer", last_layer, "--results",
             tmp_path / "r.csv", "--test-results", out], out, "--test-results", "atom_init.json")


def test_train0_skipped_csv_linked_to_a_cif(capsys, tmp_path, cif_folder, small_model, last_layer):
    """skipped.csv (beside --results) is an output too: a hard link of a CIF there is refused."""
    results = tmp_path / "out" / "results.csv"
    results.parent.mkdir()
    skipped = link("hardlink", cif_folder / "NaCl.cif", results.with_name("skipped.csv"))
    refused(capsys, tmp_path, transfer_tool.main,
            [small_model, cif_folder, "--train", 0, "-q", "--last-layer", last_layer, "--results", results,
             "--test-results", tmp_path / "t.csv", "--on-error", "skip"], skipped, "skipped.csv")


def test_train0_results_naming_the_atom_init_option(capsys, tmp_path, cif_folder, small_model, last_layer):
    table = tmp_path / "mine.json"
    table.write_bytes((cif_folder / "atom_init.json").read_bytes())
    out = link("symlink", table, tmp_path / "r.csv")
    refused(capsys, tmp_path, transfer_tool.main,
            [small_model, cif_folder, "--train", 0, "-q", "--last-layer", last_layer, "--atom-init", table,
             "--results", out, "--test-results", tmp_path / "t.csv"], out, "--atom-init")


@pytest.mark.parametrize("option, target", [("--last-layer", "Si.cif"), ("--test-results", "GaAs.cif"),
                                            ("--last-layer", "atom_init.json")])
def test_train1_outputs_naming_folder_files(capsys, tmp_path, cif_folder, small_model, option, target):
    out = link("hardlink", cif_folder / target, tmp_path / "out.file")
    outputs = {"--last-layer": tmp_path / "ll.sav", "--test-results": tmp_path / "t.csv", option: out}
    refused(capsys, tmp_path, transfer_tool.main,
            [small_model, cif_folder, "--train", 1, "-q", "--original", *[x for kv in outputs.items() for x in kv]],
            out, option)


def test_train1_output_in_the_data_folder_over_a_cif(capsys, tmp_path, cif_folder, small_model):
    out = cif_folder / "MgO.cif"
    refused(capsys, tmp_path, transfer_tool.main,
            [small_model, cif_folder, "--train", 1, "-q", "--original", "--last-layer", tmp_path / "ll.sav",
             "--test-results", out], out, "--test-results")


# ---------------------------------------------------------------------- python -m cgcnn.predict

@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink"])
def test_predict_out_naming_a_cif(capsys, tmp_path, cif_folder, small_model, kind):
    out = link(kind, cif_folder / "GaAs.cif", tmp_path / "pred.csv")
    refused(capsys, tmp_path, predict.main, [small_model, cif_folder, "-q", "--out", out], out, "--out")


def test_predict_out_naming_the_atom_init_option(capsys, tmp_path, cif_folder, small_model):
    table = tmp_path / "mine.json"
    table.write_bytes((cif_folder / "atom_init.json").read_bytes())
    out = link("hardlink", table, tmp_path / "pred.csv")
    refused(capsys, tmp_path, predict.main, [small_model, cif_folder, "-q", "--atom-init", table, "--out", out],
            out, "--atom-init")


def test_predict_out_naming_an_archive(capsys, tmp_path, cif_folder, small_model):
    import tarfile

    archive = tmp_path / "crystals.tar"
    with tarfile.open(archive, "w") as tar:
        for cif in sorted(cif_folder.glob("*.cif")):
            tar.add(cif, arcname=cif.name)
    out = link("symlink", archive, tmp_path / "pred.csv")
    refused(capsys, tmp_path, predict.main, [small_model, archive, "-q", "--out", out], out, "CIFPATH")


def test_predict_command_line_exit_status(tmp_path, cif_folder, small_model):
    """The real command line: exit status 2, one line on stderr, the CIF intact."""
    out = link("hardlink", cif_folder / "Si.cif", tmp_path / "pred.csv")
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "cgcnn.predict", str(small_model), str(cif_folder), "-q",
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert_error(proc.returncode, proc.stderr, out, "same file as the input CIF")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------- python -m cgcnn.evaluate

@pytest.mark.parametrize("name, target", [("predictions.csv", "Si.cif"), ("metrics.md", "id_prop.csv"),
                                          ("parity.png", "atom_init.json")])
def test_evaluate_report_file_linked_to_an_input(capsys, tmp_path, cif_folder, small_model, name, target):
    out_dir = tmp_path / "evaluation"
    out_dir.mkdir()
    out = link("symlink" if name == "parity.png" else "hardlink", cif_folder / target, out_dir / name)
    refused(capsys, tmp_path, evaluate.main, [small_model, cif_folder, "-q", "--out-dir", out_dir,
                                              "--last-layers", "ridge", "--descriptors", "none"], out, name)


# ---------------------------------------------------------------------- python -m cgcnn.train

@pytest.mark.parametrize("name, target, kind", [("test_results.csv", "Si.cif", "hardlink"),
                                                ("checkpoint.pth.tar", "atom_init.json", "symlink"),
                                                ("model_best.pth.tar", "NaCl.cif", "symlink")])
def test_train_output_linked_to_a_folder_file(capsys, tmp_path, cif_folder, name, target, kind):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    out = link(kind, cif_folder / target, out_dir / name)
    refused(capsys, tmp_path, train.main, [cif_folder, "--epochs", 1, "-b", 2, "--out-dir", out_dir], out, name)


def test_train_out_dir_is_the_data_folder_with_a_linked_name(capsys, tmp_path, cif_folder):
    """--out-dir the data folder itself, where test_results.csv is a hard link of a CIF."""
    out = link("hardlink", cif_folder / "MgO.cif", cif_folder / "test_results.csv")
    refused(capsys, tmp_path, train.main, [cif_folder, "--epochs", 1, "-b", 2, "--out-dir", cif_folder], out)


# ---------------------------------------------------------------------- python -m cgcnn.atom_init

@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_atom_init_out_linked_to_the_compare_file(capsys, tmp_path, kind):
    ref = tmp_path / "ref.json"
    ref.write_text('{"1": [1]}\n')
    out = link(kind, ref, tmp_path / "out.json")
    refused(capsys, tmp_path, atom_init.main, ["--compare", ref, "--out", out], out, "--compare")


# ---------------------------------------------------------------------- the check itself

def test_check_outputs_indexes_many_inputs(tmp_path):
    """Every CIF of a large folder may be given; a hard link among them is found."""
    files = []
    for i in range(2000):
        path = tmp_path / f"c{i}.cif"
        path.write_text("x")
        files.append(path)
    os.link(files[1234], tmp_path / "out.csv")
    with pytest.raises(Exception, match="c1234.cif"):
        check_outputs({"--out": tmp_path / "out.csv"}, inputs={"CIF": files})
    assert check_outputs({"--out": tmp_path / "new.csv"}, inputs={"CIF": files})
