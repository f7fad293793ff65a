"""Data folders (issue 13, classes 1, 5 and 6): upper-case ``.CIF`` files read, ``cif_id`` paths refused,
encodings and symbolic link loops named, κ_L given for log10 κ_L recognised, too few crystals named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_safety_outputs import assert_error, snapshot

from cgcnn import InputError, predict, train
from cgcnn.cli import run_main
from cgcnn.data import CIFData, check_log10_kappa, read_id_prop
from conftest import TARGETS, crystals, write_folder

SMALL = ["--epochs", "2", "-b", "2", "--atom-fea-len", "8", "--h-fea-len", "4", "--n-conv", "1"]


def run_predict(capsys, model, folder, out) -> tuple[int, str]:
    code = run_main(predict.main, [str(model), str(folder), "-q", "--out", str(out)])
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# upper-case suffixes


def test_upper_case_cif_read_without_id_prop(capsys, tmp_path, cif_folder, small_model):
    (cif_folder / "id_prop.csv").unlink()
    (cif_folder / "MgO.cif").rename(cif_folder / "MgO.CIF")
    (cif_folder / "GaAs.cif").rename(cif_folder / "GaAs.Cif")
    assert read_id_prop(cif_folder) == (sorted(TARGETS), None)
    code, err = run_predict(capsys, small_model, cif_folder, tmp_path / "p.csv")
    assert code == 0, err
    assert sorted(pd.read_csv(tmp_path / "p.csv").cif_id) == sorted(TARGETS)


def test_upper_case_cif_named_by_id_prop(cif_folder):
    (cif_folder / "MgO.cif").rename(cif_folder / "MgO.CIF")
    data = CIFData(cif_folder)
    assert data.ids == list(TARGETS)
    assert data.cif_path(data.ids.index("MgO")).name == "MgO.CIF"
    assert data[data.ids.index("MgO")][0][0].shape[0] == 8


def test_same_crystal_in_both_cases_refused(tmp_path, cif_folder):
    (cif_folder / "id_prop.csv").unlink()
    (cif_folder / "Si.CIF").write_bytes((cif_folder / "Si.cif").read_bytes())
    if len(list(cif_folder.glob("Si.*"))) < 2:
        pytest.skip("case-insensitive file system")
    with pytest.raises(InputError, match="both Si.CIF and Si.cif"):
        read_id_prop(cif_folder)


# --------------------------------------------------------------------------------------------------
# cif_id that is a path


@pytest.mark.parametrize("cif_id", ["../outside", "{abs}", "sub/NaCl", "sub\\NaCl", ".."])
@pytest.mark.parametrize("tool", ["predict", "train"])
def test_cif_id_climbing_out_of_the_folder(capsys, tmp_path, cif_folder, small_model, cif_id, tool):
    write_folder(tmp_path, {"outside": crystals()["NaCl"]}, id_prop=False)  # what ../outside would read
    write_folder(cif_folder / "sub", {"NaCl": crystals()["NaCl"]}, id_prop=False)
    cif_id = cif_id.replace("{abs}", str(tmp_path / "outside"))
    (cif_folder / "id_prop.csv").write_text(f"Si,2.17\nNaCl,0.85\n{cif_id},1.0\nMgO,1.78\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "test_results.csv").write_text("earlier\n")
    before = snapshot(tmp_path)
    if tool == "predict":
        code, err = run_predict(capsys, small_model, cif_folder, out / "test_results.csv")
    else:
        code = run_main(train.main, [str(cif_folder), *SMALL, "--out-dir", str(out)])
        err = capsys.readouterr().err
    assert_error(code, err, "id_prop.csv, line 3", repr(cif_id), "is a path, not a name")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# encodings


ENCODED = {
    "Latin-1": ("Si,2.17\nNaCl,0.85 # sel gemme, Chlorure de sodium, é\n".encode("latin-1"),
                ["line 2", "0xe9", "not UTF-8", "save it as UTF-8"]),
    "UTF-16 with BOM": ("Si,2.17\nNaCl,0.85\n".encode("utf-16"), ["UTF-16", "byte-order mark", "save it as UTF-8"]),
    "UTF-16 without BOM": ("Si,2.17\nNaCl,0.85\n".encode("utf-16-le"), ["NUL bytes", "UTF-16", "UTF-8"]),
    "UTF-32": ("Si,2.17\n".encode("utf-32"), ["UTF-32", "UTF-8"]),
}


@pytest.mark.parametrize("case", list(ENCODED))
def test_id_prop_encoding_named(capsys, tmp_path, cif_folder, small_model, case):
    data, words = ENCODED[case]
    (cif_folder / "id_prop.csv").write_bytes(data)
    before = snapshot(tmp_path)
    code, err = run_predict(capsys, small_model, cif_folder, tmp_path / "p.csv")
    assert_error(code, err, "id_prop.csv", *words)
    assert snapshot(tmp_path) == before


def test_utf8_with_accents_accepted(cif_folder):
    (cif_folder / "id_prop.csv").write_text("cif_id,κ_L (log10)\nSi,2.17\nNaCl,0.85\n", encoding="utf-8")
    assert read_id_prop(cif_folder)[0] == ["Si", "NaCl"]


# --------------------------------------------------------------------------------------------------
# symbolic link loops


def _loop(path: Path) -> None:
    other = path.with_name(path.name + ".other")
    path.unlink(missing_ok=True)
    path.symlink_to(other)
    other.symlink_to(path)


@pytest.mark.parametrize("what", ["data folder", "id_prop.csv", "a CIF", "atom_init.json", "model"])
def test_symlink_loop_named(capsys, tmp_path, cif_folder, small_model, what):
    folder, model = cif_folder, small_model
    if what == "data folder":
        folder = tmp_path / "looped"
        _loop(folder)
        name = "looped"
    elif what == "model":
        model = tmp_path / "looped.pth.tar"
        _loop(model)
        name = "looped.pth.tar"
    else:
        name = {"id_prop.csv": "id_prop.csv", "a CIF": "NaCl.cif", "atom_init.json": "atom_init.json"}[what]
        _loop(cif_folder / name)
    before = snapshot(tmp_path)
    code, err = run_predict(capsys, model, folder, tmp_path / "p.csv")
    line = assert_error(code, err, name, "symbolic link loop")
    assert "not found" not in line
    assert snapshot(tmp_path) == before


def test_atom_init_that_is_a_folder(capsys, tmp_path, cif_folder, small_model):
    (cif_folder / "atom_init.json").unlink()
    (cif_folder / "atom_init.json").mkdir()
    code, err = run_predict(capsys, small_model, cif_folder, tmp_path / "p.csv")
    assert "not found" not in assert_error(code, err, "atom_init.json", "is a folder")


@pytest.mark.parametrize("option", ["--out-dir", "--resume"])
def test_train_symlink_loop_named(capsys, tmp_path, cif_folder, option):
    loop = tmp_path / "looped"
    _loop(loop)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(cif_folder), *SMALL, "--out-dir", str(out), option, str(loop)]
    code = run_main(train.main, args)
    assert_error(code, capsys.readouterr().err, "looped", "symbolic link loop")
    assert not list(out.iterdir())


def test_predict_out_under_a_symlink_loop(capsys, tmp_path, cif_folder, small_model):
    _loop(tmp_path / "looped")
    code, err = run_predict(capsys, small_model, cif_folder, tmp_path / "looped" / "p.csv")
    assert_error(code, err, "looped", "symbolic link loop")


# --------------------------------------------------------------------------------------------------
# too few crystals


@pytest.mark.parametrize("n", [1, 2])
def test_train_with_too_few_crystals_names_id_prop(capsys, tmp_path, cif_folder, n):
    (cif_folder / "id_prop.csv").write_text("".join(f"{k},{v}\n" for k, v in list(TARGETS.items())[:n]))
    out = tmp_path / "out"
    out.mkdir()
    code = run_main(train.main, [str(cif_folder), *SMALL, "--out-dir", str(out)])
    assert_error(code, capsys.readouterr().err, cif_folder / "id_prop.csv")
    assert not list(out.iterdir())


# --------------------------------------------------------------------------------------------------
# log10 κ_L targets


def test_log10_kappa_accepted():
    check_log10_kappa([-1.2, 0.0, 2.17, 3.3], "id_prop.csv")
    check_log10_kappa(np.array([]), "id_prop.csv")


def test_kappa_for_log10_kappa():
    with pytest.raises(InputError) as exc:
        check_log10_kappa([0.5, 12.0, 420.0], "data/id_prop.csv")
    message = str(exc.value)
    assert "\n" not in message
    assert message == ("data/id_prop.csv: values from 0.5 to 420 (2 of 3 above 4, none negative) look like κ_L in "
                       "W m-1 K-1, not log10 κ_L: take log10 of the second column")


def test_kappa_for_log10_kappa_large_values():
    with pytest.raises(InputError, match=r"values from 1.2 to 2300 \(1 of 2 above 4, none negative\) look like κ_L"):
        check_log10_kappa([1.2, 2300.0], "id_prop.csv")


@pytest.mark.parametrize("targets", [[-3.1, 1.0], [1.0, float("nan")], [1.0, -5.0, 2.0]])
def test_log10_kappa_outside_the_range(targets):
    with pytest.raises(InputError, match=r"id_prop.csv: target .* lies outside -3 ... 4"):
        check_log10_kappa(targets, "id_prop.csv")


def test_log10_kappa_names_the_crystal():
    with pytest.raises(InputError, match=r"target -5 \(NaCl\)"):
        check_log10_kappa([1.0, -5.0], "id_prop.csv", ids=["Si", "NaCl"])
