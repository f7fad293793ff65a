"""Issue 24, class 11: every line the tools print is true.

``--train 1`` says how the last layer's type was chosen (by cross-validation, or auto's default
when none ran) and how its interval was calibrated (CV+ with how many folds, its coverage
measured or not, or no interval); a last layer fit on the same source models in another order
says what is actually wrong (ensemble members' files swapped, or MODELPATH's order) and what to do."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from test_safety_outputs import snapshot
from test_transfer import rocksalt_series

from cgcnn import InputError
from cgcnn.cli import run_main
from cgcnn.transfer import LastLayer
from conftest import REPO, one_hot_table, write_folder

_spec = importlib.util.spec_from_file_location("transfer_learning_kappa", REPO / "transfer_learning_kappa.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    structures = rocksalt_series(12)
    targets = {k: 0.5 + 0.1 * i for i, k in enumerate(structures)}
    return write_folder(tmp_path_factory.mktemp("twelve") / "data", structures, targets, atom_init=one_hot_table())


def _fit(capsys, tmp_path, model, data, *extra) -> list[str]:
    code = run_main(tool.main, [str(model), str(data), "--train", "1", "-q", "--last-layer", str(tmp_path / "ll.sav"),
                                "--test-results", str(tmp_path / "t.csv"), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out.splitlines()


@pytest.mark.parametrize("folds, no_cv, interval", [
    ("0", "no cross-validation (--cv-folds 0)", "90% interval (CV+ with 2 folds, the fewest it takes); its coverage "
                                                "is not measured: no cross-validation (--cv-folds 0)"),
    ("20", "no cross-validation (--cv-folds 20 is more than the 12 crystals)",
     "90% interval (CV+ with 12 folds, one crystal each); its coverage is not measured: no cross-validation "
     "(--cv-folds 20 is more than the 12 crystals)"),
])
def test_no_cross_validation_is_said(capsys, tmp_path, small_model, twelve, folds, no_cv, interval):
    lines = _fit(capsys, tmp_path, small_model, twelve, "--cv-folds", folds)
    text = "\n".join(lines)
    assert "chosen by cross-validation" not in text and "cross-validated" not in text
    assert lines[0].startswith("fit the ridge (auto's default: no cross-validation ran) last layer on 12 crystals")
    assert f"{no_cv}: no error measured on held-out crystals" in lines
    assert interval in lines
    layer = LastLayer.load(tmp_path / "ll.sav")
    assert layer.cv["folds"] == 0 and layer.conformal is not None
    assert layer.conformal._mapie_regressor.cv == (2 if folds == "0" else 12)  # the folds the line states


def test_requested_type_and_no_interval(capsys, tmp_path, small_model):
    structures = rocksalt_series(8)
    data = write_folder(tmp_path / "data", structures, {k: 0.5 + 0.1 * i for i, k in enumerate(structures)},
                        atom_init=one_hot_table())
    lines = _fit(capsys, tmp_path, small_model, data, "--cv-folds", "0", "--last-layer-type", "rf")
    assert lines[0].startswith("fit the rf last layer on 8 crystals")
    assert lines[-1] == ("no prediction interval: 8 crystals are too few for a 90% interval (CV+ needs at least 10 "
                         "and more than 10)")
    assert LastLayer.load(tmp_path / "ll.sav").conformal is None


def test_cross_validation_is_said_when_it_ran(capsys, tmp_path, small_model, twelve):
    lines = _fit(capsys, tmp_path, small_model, twelve, "--cv-folds", "3", "--last-layer-type", "ridge",
                 "--interval", "0.8")
    assert any(line.startswith("3-fold x 3 cross-validated MAE") for line in lines)
    assert any(line.startswith("80% interval (CV+): cross-validated coverage") for line in lines)
    assert not any("no cross-validation" in line or "not measured" in line for line in lines)
    # 8 crystals in each training part of the outer cross-validation: too few to measure a 90% interval
    lines = _fit(capsys, tmp_path, small_model, twelve, "--cv-folds", "3", "--last-layer-type", "ridge")
    assert lines[-1] == ("90% interval (CV+ with 3 folds); its coverage is not measured: the cross-validation's "
                         "training parts are too few crystals for a 90% interval")


def _layer(member_folders=None) -> LastLayer:
    rng = np.random.RandomState(0)
    layer = LastLayer.fit(rng.randn(12, 3), rng.randn(12), "ridge", cv_folds=0)
    layer.inputs = {"sources": [{"name": "source.pth.tar", "sha256": h} for h in ("a", "b", "c")],
                    "descriptors": "none", "property_models": []}
    if member_folders:
        layer.inputs["member_folders"] = member_folders
    layer.path = "last_layer.sav"
    return layer


def _run(order, member_folders=None) -> dict:
    record = {"sources": [{"name": "source.pth.tar", "sha256": h} for h in order], "descriptors": "none",
              "property_models": []}
    if member_folders:
        record["member_folders"] = member_folders
    return record


def test_swapped_member_files_are_named():
    """One MODELPATH, members found in the recorded seed1/ and seed2/, whose files were swapped."""
    layer = _layer(["seed1", "seed2"])
    with pytest.raises(InputError) as exc:
        layer.check_inputs(_run("acb", ["seed1", "seed2"]))
    message = str(exc.value)
    assert message == ("last_layer.sav: the source models of its ensemble members are not in the folders they were "
                       "fit from (seed1/source.pth.tar holds the model fit as seed2/source.pth.tar; "
                       "seed2/source.pth.tar holds the model fit as seed1/source.pth.tar): put each file back, or "
                       "refit with --train 1")
    assert "give them in that order" not in message


def test_modelpath_in_another_order():
    with pytest.raises(InputError, match=r"MODELPATH lists the source models it was fit on in another order; give "
                                         r"the first alone \(its ensemble members are found beside it: "
                                         r"seed1/source.pth.tar, seed2/source.pth.tar\), or list them in that order"):
        _layer(["seed1", "seed2"]).check_inputs(_run("bac"))
    with pytest.raises(InputError, match=r"in another order; list them as at fitting \(source.pth.tar,"):
        _layer().check_inputs(_run("cba"))


def test_no_message_claims_an_order_the_user_did_not_give():
    import subprocess

    found = subprocess.run(["grep", "-rn", "give them in that order", str(REPO / "cgcnn"),
                            str(REPO / "transfer_learning_kappa.py")], capture_output=True, text=True)
    assert found.stdout == ""


def test_failed_fit_changes_nothing(capsys, tmp_path, small_model, twelve):
    before = snapshot(twelve)
    _fit(capsys, tmp_path, small_model, twelve, "--cv-folds", "0")
    assert snapshot(twelve) == before
