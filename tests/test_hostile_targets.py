"""Issue 24, class 3: log10 κ_L targets of real (computed) sets are accepted, κ_L itself is refused,
before any feature is computed, by ``--train 1``, ``--train 0`` and ``cgcnn.evaluate``; rows with extra
fields are refused naming the file and line."""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest
from test_safety_outputs import assert_error, snapshot

from cgcnn import InputError
from cgcnn import evaluate as evaluate_tool
from cgcnn.cli import run_main
from cgcnn.crystals import LOG10_KAPPA_RANGE, check_log10_kappa, read_id_prop
from conftest import REPO, SHARED, TARGETS, crystals, one_hot_table, write_folder

_spec = importlib.util.spec_from_file_location("transfer_learning_kappa", REPO / "transfer_learning_kappa.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def test_range_is_every_possible_kappa():
    assert LOG10_KAPPA_RANGE == (-3.0, 4.0)
    check_log10_kappa([-3.0, -2.01, -1.6, 0.0, 3.4, 4.0], "id_prop.csv")


@pytest.mark.skipif(not (SHARED / "data" / "aflow_agl_300K" / "kappa.csv").is_file(), reason="no shared data")
def test_every_aflow_agl_value_is_accepted():
    with open(SHARED / "data" / "aflow_agl_300K" / "kappa.csv") as f:
        rows = list(csv.DictReader(f))
    kappa = np.array([float(r["kappa_300K_W_mK"]) for r in rows])
    assert np.log10(kappa).min() < -1.5  # the values the earlier range refused
    check_log10_kappa(np.log10(kappa), "kappa.csv", [r["id"] for r in rows])
    with pytest.raises(InputError, match=r"none negative\) look like κ_L in W m-1 K-1, not log10 κ_L"):
        check_log10_kappa(kappa, "kappa.csv")  # κ_L itself


@pytest.mark.parametrize("values, words", [
    ([2.17, 5.9, 7.09, 34.51], ["values from 2.17 to 34.5", "3 of 4 above 4, none negative", "look like κ_L"]),
    ([0.0099, 0.5, 145.2], ["1 of 3 above 4, none negative", "look like κ_L"]),
    ([0.0, 12.0, 420.0], ["2 of 3 above 4", "look like κ_L"]),
    ([-0.2, 12.0, 30.0, 420.0], ["3 of 4 above 4, 1 negative", "look like κ_L"]),
    ([1.0, -3.5, 2.0], ["target -3.5", "lies outside -3 ... 4", "10^-3 ... 10^4 W m-1 K-1"]),
    ([-1.0, 4.5, 2.0, 1.0, 0.5], ["target 4.5", "lies outside -3 ... 4"]),
])
def test_not_log10_kappa(values, words):
    with pytest.raises(InputError) as exc:
        check_log10_kappa(values, "data/id_prop.csv", [f"c{i}" for i in range(len(values))])
    message = str(exc.value)
    assert "\n" not in message and message.startswith("data/id_prop.csv: ")
    for word in words:
        assert word in message


def _folder(tmp_path, targets=None):
    structures = crystals()
    targets = targets or {k: TARGETS[k] for k in structures}
    return write_folder(tmp_path / "data", structures, targets, atom_init=one_hot_table())


def _no_features(monkeypatch):
    import cgcnn.transfer

    def refuse(*args, **kwargs):
        raise AssertionError("features computed before the targets were checked")

    monkeypatch.setattr(cgcnn.transfer, "compute_features", refuse)


RAW = {"NaCl": 7.1, "Si": 148.0, "MgO": 60.0, "GaAs": 45.0}  # κ_L in W m-1 K-1, not log10


def test_train_refuses_kappa_before_features(capsys, monkeypatch, tmp_path, small_model):
    data = _folder(tmp_path, RAW)
    _no_features(monkeypatch)
    before = snapshot(tmp_path)
    code = run_main(tool.main, [str(small_model), str(data), "--train", "1", "-q", "--last-layer",
                                str(tmp_path / "ll.sav"), "--test-results", str(tmp_path / "t.csv")])
    assert_error(code, capsys.readouterr().err, data / "id_prop.csv", "look like κ_L", "take log10")
    assert snapshot(tmp_path) == before


def test_evaluate_refuses_kappa_before_features(capsys, monkeypatch, tmp_path, small_model):
    data = _folder(tmp_path, RAW)
    _no_features(monkeypatch)
    before = snapshot(tmp_path)
    code = run_main(evaluate_tool.main, [str(small_model), str(data), "-q", "--out-dir", str(tmp_path / "ev"),
                                         "--descriptors", "none"])
    assert_error(code, capsys.readouterr().err, data / "id_prop.csv", "look like κ_L")
    assert snapshot(tmp_path) == before and not (tmp_path / "ev").exists()


def test_evaluate_refuses_a_protocol_before_features(capsys, monkeypatch, tmp_path, small_model):
    data = _folder(tmp_path)
    _no_features(monkeypatch)
    code = run_main(evaluate_tool.main, [str(small_model), str(data), "-q", "--out-dir", str(tmp_path / "ev"),
                                         "--kfold", "9", "--descriptors", "none"])
    assert_error(code, capsys.readouterr().err, "--kfold 9")


def test_low_computed_kappa_is_fit_then_screen_refuses_kappa(capsys, tmp_path, small_model):
    """A target of -2.01 (AFLOW-AGL's lowest) is fit; then κ_L itself in the folder screened is refused."""
    low = dict(TARGETS, NaCl=-2.01)
    data = _folder(tmp_path, low)
    layer, results = tmp_path / "ll.sav", tmp_path / "results.csv"
    code = run_main(tool.main, [str(small_model), str(data), "--train", "1", "-q", "--last-layer", str(layer),
                                "--test-results", str(tmp_path / "t.csv"), "--cv-folds", "0"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    (data / "id_prop.csv").write_text("".join(f"{k},{v}\n" for k, v in RAW.items()))
    before = snapshot(tmp_path)
    code = run_main(tool.main, [str(small_model), str(data), "--train", "0", "-q", "--last-layer", str(layer),
                                "--results", str(results), "--test-results", str(tmp_path / "t0.csv")])
    assert_error(code, capsys.readouterr().err, data / "id_prop.csv", "look like κ_L")
    assert snapshot(tmp_path) == before
    assert not results.exists() and not (tmp_path / "results.csv.parts").exists()


@pytest.mark.parametrize("row, words", [
    ("NaCl,0,85", ["line 2", "3 fields", "'NaCl,0,85'", "a decimal comma? write 0.85"]),
    ("NaCl,0.85,x", ["line 2", "3 fields", "cif_id,target"]),
    ("NaCl,1,5,3", ["line 2", "4 fields"]),
])
def test_id_prop_rows_with_extra_fields(capsys, tmp_path, small_model, row, words):
    data = _folder(tmp_path)
    (data / "id_prop.csv").write_text(f"Si,2.17\n{row}\nMgO,1.78\nGaAs,1.65\n")
    with pytest.raises(InputError) as exc:
        read_id_prop(data)
    assert str(exc.value).startswith(f"{data / 'id_prop.csv'}, line 2: ")
    for word in words:
        assert word in str(exc.value)
    before = snapshot(tmp_path)
    code = run_main(tool.main, [str(small_model), str(data), "--train", "1", "-q", "--last-layer",
                                str(tmp_path / "ll.sav"), "--test-results", str(tmp_path / "t.csv")])
    assert_error(code, capsys.readouterr().err, data / "id_prop.csv", "line 2", *words)
    assert snapshot(tmp_path) == before


def test_id_prop_trailing_empty_fields_are_kept(tmp_path):
    data = _folder(tmp_path)
    (data / "id_prop.csv").write_text("Si,2.17,\nNaCl,0.85,,\nMgO,1.78\nGaAs,1.65\n")
    ids, targets = read_id_prop(data)
    assert ids == ["Si", "NaCl", "MgO", "GaAs"] and targets.tolist() == [2.17, 0.85, 1.78, 1.65]
