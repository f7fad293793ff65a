"""The phonon-BTE value as one more last-layer input (cgcnn.transfer.bte; --bte FILE or a compounds.csv column):
reading the values, the two models of a last layer, the route of each crystal, refused and noted uses,
and ``cgcnn.evaluate --bte``.  Small real data: a subset of data/sample with a refined.csv made from its
targets (a BTE value biased low, as SevenNet's), some crystals refused as unstable and one not computed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgcnn import InputError
from cgcnn.transfer import (
    ROUTE_COLUMNS,
    LastLayer,
    bte_columns,
    check_bte_use,
    fit_bte,
    folder_bte,
    predict_routes,
    read_bte,
)
from conftest import REPO

SAMPLE = REPO / "data" / "sample"
SOURCE = REPO / "models" / "source.pth.tar"
HEADER = "cif_id,kappa_bte,log10_kappa_bte,converged,reason,potential,supercell,cutoff,mesh,seconds\n"
UNSTABLE = "dynamically unstable at 0 K: imaginary mode of -0.5 THz (negative = imaginary)"


def refined_rows(ids, targets, skip=()) -> str:
    """refined.csv rows as cgcnn.refine writes them: every 5th crystal refused as unstable, ``skip`` not
    listed, the others a value 0.15 below the target with a little seeded noise."""
    rng = np.random.RandomState(3)
    lines = [HEADER]
    for i, (cif_id, y) in enumerate(zip(ids, targets)):
        if cif_id in skip:
            continue
        if i % 5 == 3:
            lines.append(f"{cif_id},,,True,\"{UNSTABLE}\",7net-l3i5,2x2x2,4,11x11x11,12.5\n")
        else:
            v = y - 0.15 + 0.05 * rng.randn()
            lines.append(f"{cif_id},{10 ** v:.6g},{v:.6g},True,,7net-l3i5,2x2x2,4,11x11x11,80.1\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> tuple[Path, Path]:
    """16 crystals of data/sample and their refined.csv (3 refused as unstable, GaSb not computed)."""
    base = tmp_path_factory.mktemp("bte")
    folder = base / "sub"
    folder.mkdir()
    rows = (SAMPLE / "id_prop.csv").read_text().splitlines()[:16]
    for row in rows:
        shutil.copy(SAMPLE / f"{row.split(',')[0]}.cif", folder)
    shutil.copy(SAMPLE / "atom_init.json", folder)
    (folder / "id_prop.csv").write_text("".join(r + "\n" for r in rows))
    ids = [r.split(",")[0] for r in rows]
    targets = [float(r.split(",")[1]) for r in rows]
    refined = base / "refined.csv"
    refined.write_text(refined_rows(ids, targets, skip=("GaSb",)))
    return folder, refined


def run(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(REPO / "transfer_learning_kappa.py"), *map(str, args), "-j", "0"],
                          cwd=cwd, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


# --- reading the values ----------------------------------------------------------


def test_read_bte_values_and_reasons(subset):
    folder, refined = subset
    bte = read_bte(refined)
    ids = [r.split(",")[0] for r in (folder / "id_prop.csv").read_text().splitlines()]
    values, reasons = bte.lookup(ids)
    assert np.isfinite(values).sum() == 12 and len(bte.values) == 12
    assert reasons[3] == UNSTABLE and np.isnan(values[3])
    assert reasons[ids.index("GaSb")] == "not in refined.csv"
    assert all(r == "" for r, v in zip(reasons, values) if np.isfinite(v))
    assert bte.potentials[ids[0]] == "7net-l3i5" and bte.source["name"] == "refined.csv"


@pytest.mark.parametrize("body, message", [
    ("cif_id,log10_kappa_bte\nSi,1.7\nSi,1.8\n", "row 3: Si is listed twice"),
    ("cif_id,log10_kappa_bte\nSi,fast\n", "row 2: log10_kappa_bte of Si is 'fast', not a number"),
    ("cif_id,log10_kappa_bte\nSi,150\n", "row 2: log10_kappa_bte of Si is 150, not a log10"),
    ("cif_id,log10_kappa_bte\nSi,nan\n", "row 2: log10_kappa_bte of Si is nan"),
    ("cif_id,kappa_bte\nSi,54\n", "no log10_kappa_bte column"),
    ("cif_id,log10_kappa_bte\n,1.2\n", "row 2: empty cif_id"),
])
def test_read_bte_refuses_bad_files_in_one_line(tmp_path, body, message):
    path = tmp_path / "refined.csv"
    path.write_text(body)
    with pytest.raises(InputError) as exc:
        read_bte(path)
    assert message in str(exc.value) and str(path) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(InputError, match="not found"):
        read_bte(tmp_path / "missing.csv")


def test_bte_values_of_a_mapping(subset):
    from cgcnn.transfer import BTEValues

    values = BTEValues.of({"Si": 2.1, "NaCl": None, "PbTe": float("nan")}, name="mine")
    assert values.values == {"Si": 2.1} and values.reasons == {"NaCl": "no value in mine", "PbTe": "no value in mine"}
    assert BTEValues.of(values) is values and BTEValues.of(None) is None
    assert BTEValues.of(subset[1]).values == read_bte(subset[1]).values  # a path: read_bte
    with pytest.raises(InputError, match="mine: log10_kappa_bte of Si is 50, not a log10 κ_L"):
        BTEValues.of({"Si": 50}, name="mine")
    with pytest.raises(InputError, match="bte: log10_kappa_bte of Si is 'high', not a number"):
        BTEValues.of({"Si": "high"})
    with pytest.raises(InputError, match="bte: give a refined.csv path or a mapping"):
        BTEValues.of([1.0])


def test_folder_bte_takes_the_option_then_the_compounds_column(tmp_path, subset):
    _, refined = subset
    assert folder_bte(None, tmp_path) == (None, False)  # no compounds.csv
    (tmp_path / "compounds.csv").write_text("cif_id,prototype\nSi,diamond\n")
    assert folder_bte(None, tmp_path) == (None, False)  # no column
    (tmp_path / "compounds.csv").write_text("cif_id,prototype,log10_kappa_bte\nSi,diamond,1.73\nAgCl,rocksalt,\n")
    bte, explicit = folder_bte(None, tmp_path)
    assert not explicit and bte.values == {"Si": 1.73} and bte.reasons == {"AgCl": "no value in compounds.csv"}
    bte, explicit = folder_bte(refined, tmp_path)
    assert explicit and bte.source["name"] == "refined.csv"


# --- the two models of a last layer -----------------------------------------------


def test_bte_columns_follow_each_member():
    X = np.arange(2 * 2 * 5, dtype=np.float64).reshape(2, 10)  # 2 members of 3 crys_fea + 2 descriptors
    out = bte_columns(X, np.array([7.0, 8.0]), (3, 2, 2))
    assert out.shape == (2, 12)
    np.testing.assert_array_equal(out[:, [5, 11]], [[7, 7], [8, 8]])
    np.testing.assert_array_equal(np.delete(out, [5, 11], axis=1), X)


def synthetic(n=40, seed=0):
    """Inputs that say little about y, and a BTE value that says much (biased low)."""
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 6)
    y = 1.5 + 0.8 * rng.randn(n)
    values = y - 0.2 + 0.05 * rng.randn(n)
    return X, y, values


def test_layer_with_bte_fits_two_models_and_routes_each_crystal(tmp_path):
    from cgcnn.transfer import BTEValues

    X, y, values = synthetic()
    ids = [f"c{i}" for i in range(len(y))]
    known = {i: float(v) for k, (i, v) in enumerate(zip(ids, values)) if k % 4}
    bte = BTEValues(known, {ids[0]: UNSTABLE}, {i: "7net-l3i5" for i in known}, {"name": "refined.csv"})
    plain = LastLayer.fit(X, y, "ridge", cv_folds=3)
    layer = LastLayer.fit(X, y, "ridge", cv_folds=3)
    assert "bte" not in layer.to_dict() and layer.to_dict()["format"] == "cgcnn-kappa last layer 2"  # as before
    sub = fit_bte(layer, X, y, ids, bte, (4, 2), kind="ridge", mode="descriptor", cv_folds=3)
    assert layer.bte["mode"] == "descriptor" and layer.bte["n_with"] == 30 and layer.bte["n_without"] == 10
    assert sub.n_train == 30
    assert sub.n_features == 7 and sub.inputs["groups"] == [4, 3]
    assert sub.cv["mae"] < 0.5 * layer.cv["mae"]  # the value carries the target: the layer learns its bias
    path = tmp_path / "last_layer.sav"
    layer.save(path)
    loaded = LastLayer.load(path)
    assert loaded.to_dict()["format"] == "cgcnn-kappa last layer 3" and loaded.bte["n_with"] == 30
    pred, columns = predict_routes(loaded, X, ids, bte, (4, 2))
    has = np.array([i in known for i in ids])
    assert columns["route"] == ["bte" if h else "plain" for h in has] and list(columns) == list(ROUTE_COLUMNS)
    assert columns["no_bte_reason"][0] == UNSTABLE and columns["no_bte_reason"][4] == "not in refined.csv"
    np.testing.assert_array_equal(pred.prediction[~has], plain.predict(X[~has]).prediction)
    np.testing.assert_array_equal(columns["prediction_plain"], plain.predict(X).prediction)  # beside, for all
    routed = sub.predict(bte_columns(X[has], values[has], (4, 2)))
    np.testing.assert_array_equal(pred.prediction[has], routed.prediction)
    assert np.all(pred.low[has] < pred.high[has])
    none, columns = predict_routes(loaded, X, ids, None, (4, 2))  # no values given: all plain, said so
    np.testing.assert_array_equal(none.prediction, plain.predict(X).prediction)
    assert set(columns["route"]) == {"plain"} and set(columns["no_bte_reason"]) == {"no BTE values given"}


def test_stacked_bte_model_calibrates_the_plain_prediction_and_the_value(tmp_path):
    from sklearn.model_selection import KFold

    from cgcnn.transfer import BTEValues, make_estimator, plain_oof

    X, y, values = synthetic(60, seed=1)
    ids = [f"c{i}" for i in range(len(y))]
    known = {i: float(v) for k, (i, v) in enumerate(zip(ids, values)) if k % 4}
    bte = BTEValues(known, {ids[0]: UNSTABLE}, {}, {"name": "refined.csv"})
    layer = LastLayer.fit(X, y, "ridge", cv_folds=3)
    # the out-of-fold predictions: each crystal by the plain type fit on the other folds
    oof = plain_oof(layer, X, y, None, seed=0, folds=3)
    for train, test in KFold(3, shuffle=True, random_state=0).split(X):
        np.testing.assert_allclose(oof[test], make_estimator("ridge").fit(X[train], y[train]).predict(X[test]))
    sub = fit_bte(layer, X, y, ids, bte, None, kind="ridge", cv_folds=3)  # the default mode: stack
    assert layer.bte["mode"] == "stack" and sub.kind == "ridge" and sub.n_features == 2 and sub.n_train == 45
    a, b, c = layer.bte["coefficients"]
    assert abs(a) < 0.2 and 0.8 < b < 1.1 and 0.1 < a * 1.5 + c < 0.3  # a·(mean plain ≈ 1.5) + c: the bias (-0.2)
    assert sub.cv["mae"] < 0.3 * layer.cv["mae"]
    path = tmp_path / "stack.sav"
    layer.save(path)
    loaded = LastLayer.load(path)
    assert loaded.bte["mode"] == "stack" and loaded.bte["coefficients"] == [a, b, c]
    pred, columns = predict_routes(loaded, X, ids, bte, None)
    has = np.array([i in known for i in ids])
    plain = layer.predict(X)
    np.testing.assert_array_equal(columns["prediction_plain"], plain.prediction)
    np.testing.assert_allclose(pred.prediction[has], a * plain.prediction[has] + b * values[has] + c, atol=1e-9)
    np.testing.assert_array_equal(pred.prediction[~has], plain.prediction[~has])
    np.testing.assert_array_equal(pred.in_domain, plain.in_domain)  # the transfer's domain, on both routes
    assert np.all(pred.low[has] < pred.prediction[has]) and np.all(pred.prediction[has] < pred.high[has])
    with pytest.raises(InputError, match="--bte-mode 'both': choose one of stack, descriptor"):
        fit_bte(layer, X, y, ids, bte, None, kind="ridge", mode="both")


def test_bte_model_of_a_file_without_a_mode_is_the_descriptor_one():
    from cgcnn.transfer import BTEValues

    X, y, values = synthetic(30)
    ids = [f"c{i}" for i in range(30)]
    bte = BTEValues({i: float(v) for i, v in zip(ids, values)}, {}, {}, {"name": "refined.csv"})
    layer = LastLayer.fit(X, y, "ridge", cv_folds=0)
    fit_bte(layer, X, y, ids, bte, (4, 2), kind="ridge", mode="descriptor", cv_folds=0)
    before, _ = predict_routes(layer, X, ids, bte, (4, 2))
    del layer.bte["mode"]  # a format-3 file written before the modes
    after, _ = predict_routes(layer, X, ids, bte, (4, 2))
    np.testing.assert_array_equal(before.prediction, after.prediction)


def test_mismatched_use_is_refused_or_noted():
    from cgcnn.transfer import BTEValues

    X, y, values = synthetic(20)
    ids = [f"c{i}" for i in range(20)]
    bte = BTEValues({i: float(v) for i, v in zip(ids, values)}, {}, {i: "7net-l3i5" for i in ids},
                    {"name": "refined.csv"})
    plain = LastLayer.fit(X, y, "ridge", cv_folds=0)
    with pytest.raises(InputError, match="fit without BTE values, so --bte refined.csv cannot be used"):
        check_bte_use(plain, bte, explicit=True)
    assert "not used" in check_bte_use(plain, bte, explicit=False)
    assert check_bte_use(plain, None, explicit=False) is None
    layer = LastLayer.fit(X, y, "ridge", cv_folds=0)
    fit_bte(layer, X, y, ids, bte, (4, 2), kind="ridge", cv_folds=0)
    assert "every crystal is predicted by the plain model" in check_bte_use(layer, None, explicit=False)
    assert check_bte_use(layer, bte, explicit=True) is None
    other = BTEValues(bte.values, {}, {i: "7net-0" for i in ids}, {"name": "other.csv"})
    with pytest.raises(InputError, match="c0 was computed with 7net-0; the last layer's BTE model was fit on values "
                                         "of 7net-l3i5"):
        check_bte_use(layer, other, explicit=True)
    few = BTEValues({ids[0]: 1.0}, {}, {}, {"name": "few.csv"})
    with pytest.raises(InputError, match="few.csv: 1 of the 20 training crystals"):
        fit_bte(LastLayer.fit(X, y, "ridge", cv_folds=0), X, y, ids, few, (4, 2), kind="ridge", cv_folds=0)


# --- the command lines -------------------------------------------------------------


def test_train_and_predict_with_bte(tmp_path, subset):
    folder, refined = subset
    out = run("--train", 1, SOURCE, folder, "--bte", refined, "--members", "none", "--last-layer-type", "ridge",
              "-q", cwd=tmp_path)
    assert ("BTE values (refined.csv, column log10_kappa_bte): 12 of 16 crystals have a value; the stacked "
            "calibration" in out.stdout)
    assert "without a BTE value (3 dynamically unstable at 0 K, 1 not in refined.csv): 4 crystals" in out.stdout
    layer = LastLayer.load(tmp_path / "last_layer.sav")
    assert layer.bte["potentials"] == ["7net-l3i5"] and layer.bte["layer"].n_features == 2
    a, b, c = layer.bte["coefficients"]
    assert f"{a:.3f}*plain + {b:.3f}*log10_kappa_bte {c:+.3f}" in out.stdout
    from cgcnn import KappaModel

    api = KappaModel.load(tmp_path / "last_layer.sav", source=SOURCE, workers=0).predict([str(folder / "Si.cif")])
    assert list(api.columns[-4:]) == list(ROUTE_COLUMNS) and api.route.tolist() == ["plain"]  # the API: no values
    assert api.no_bte_reason.tolist() == ["no BTE values given"]
    assert api.prediction.item() == api.prediction_plain.item()

    out = run("--train", 0, SOURCE, folder, "--bte", refined, "-q", cwd=tmp_path)
    res = pd.read_csv(tmp_path / "results.csv", keep_default_na=False, na_values=[""])
    assert list(res.columns[-4:]) == list(ROUTE_COLUMNS)
    np.testing.assert_allclose(res.prediction_plain[res.route == "plain"], res.prediction[res.route == "plain"])
    assert (res.route == "bte").sum() == 12 and (res.route == "plain").sum() == 4
    assert res.loc[res.cif_id == "GaSb", "no_bte_reason"].item() == "not in refined.csv"
    assert res.loc[res.route == "plain", "log10_kappa_bte"].isna().all()
    assert "routes: 12 of 16 crystals predicted with their BTE value (route bte), 4 by the plain" in out.stdout

    # the same layer without values: every crystal by the plain model, said on stderr and in the columns
    out = run("--train", 0, SOURCE, folder, "--results", "plain.csv", "-q", cwd=tmp_path)
    assert "every crystal is predicted by the plain model" in out.stderr
    plain = pd.read_csv(tmp_path / "plain.csv", keep_default_na=False, na_values=[""])
    assert (plain.route == "plain").all() and (plain.no_bte_reason == "no BTE values given").all()
    routed = res.route == "plain"
    np.testing.assert_array_equal(plain.prediction[routed], res.prediction[routed])

    # the API: predict with the values (a path, or a mapping) gives the rows of --train 0 --bte
    model = KappaModel.load(tmp_path / "last_layer.sav", source=SOURCE, workers=0)
    cifs = sorted(folder.glob("*.cif"))
    values = read_bte(refined)
    table = model.predict(cifs, bte=values.values)
    want = res.set_index("cif_id").loc[table.index]
    assert table.route.tolist() == want.route.tolist()
    np.testing.assert_allclose(table.prediction, want.prediction, atol=1e-6)
    assert table.loc["GaSb", "no_bte_reason"] == "not in bte"
    # and fit with them: the same BTE model as --train 1 --bte
    fitted = KappaModel.fit(folder, source=SOURCE, members="none", last_layer_type="ridge", bte=refined)
    np.testing.assert_allclose(fitted.layer.bte["coefficients"], layer.bte["coefficients"], atol=1e-6)
    with pytest.raises(InputError, match="bte_mode 'x': choose one of stack, descriptor"):
        KappaModel.fit(folder, source=SOURCE, bte=refined, bte_mode="x")
    plain_model = KappaModel.fit(folder, source=SOURCE, members="none", last_layer_type="ridge")
    with pytest.raises(InputError, match="fit without BTE values"):
        plain_model.predict(cifs[:1], bte=refined)


def test_plain_layer_refuses_bte_and_compounds_column_is_read(tmp_path, subset):
    folder, refined = subset
    run("--train", 1, SOURCE, folder, "--members", "none", "--last-layer-type", "ridge", "-q", cwd=tmp_path)
    proc = run("--train", 0, SOURCE, folder, "--bte", refined, "-q", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "fit without BTE values, so --bte refined.csv cannot be used" in proc.stderr.strip().splitlines()[-1]
    # the values as a column of the data folder's compounds.csv: used by --train 1 without --bte
    table = pd.read_csv(refined, keep_default_na=False, na_values=[""])[["cif_id", "log10_kappa_bte"]]
    copy = tmp_path / "with_column"
    shutil.copytree(folder, copy)
    table.to_csv(copy / "compounds.csv", index=False)
    out = run("--train", 1, SOURCE, copy, "--members", "none", "--last-layer-type", "ridge", "--last-layer",
              "col.sav", "--bte-mode", "descriptor", "-q", cwd=tmp_path)
    assert "BTE values (compounds.csv, column log10_kappa_bte): 12 of 16" in out.stdout
    assert "the ridge last layer with log10_kappa_bte as one more descriptor" in out.stdout
    layer = LastLayer.load(tmp_path / "col.sav")
    assert layer.bte["mode"] == "descriptor" and layer.bte["layer"].n_features == layer.n_features + 1
    assert "3 no value in compounds.csv, 1 not in compounds.csv" in out.stdout


def test_evaluate_with_bte(tmp_path, subset):
    from cgcnn.evaluate import evaluate
    from cgcnn.evaluation import format_table

    folder, refined = subset
    table, predictions = evaluate([SOURCE], folder, splits=2, last_layers=["ridge"], descriptors="structure",
                                  progress=False, bte=read_bte(refined))
    assert list(table.index) == ["constant", "source", "original", "ridge", "ridge+bte"]
    assert "log10_kappa_bte" in predictions
    plain = predictions[predictions.method == "ridge"].reset_index(drop=True)
    routed = predictions[predictions.method == "ridge+bte"].reset_index(drop=True)
    without = routed.log10_kappa_bte.isna()
    assert without.any() and (~without).any()
    np.testing.assert_array_equal(routed.prediction[without], plain.prediction[without])  # the plain route
    assert not np.array_equal(routed.prediction[~without], plain.prediction[~without])
    subset_table = table.attrs["bte"]["subset"]
    assert subset_table.index[0] == "raw BTE" and "ridge+bte" in subset_table.index
    text = format_table(table)
    assert "+bte rows: stacked calibration a·plain + b·log10 κ_BTE + c" in text
    assert "12 of 16 crystals have one; the others (3 dynamically unstable at 0 K, 1 not in refined.csv)" in text
    assert "| raw BTE |" in text


def test_format_3_without_its_bte_model_is_refused(tmp_path):
    import skops.io as sio

    X, y, values = synthetic(20)
    ids = [f"c{i}" for i in range(20)]
    from cgcnn.transfer import BTEValues

    layer = LastLayer.fit(X, y, "ridge", cv_folds=0)
    fit_bte(layer, X, y, ids, BTEValues(dict(zip(ids, values.tolist())), source={"name": "r.csv"}), (4, 2),
            kind="ridge", cv_folds=0)
    record = layer.to_dict()
    del record["bte"]
    path = tmp_path / "broken.sav"
    path.write_bytes(sio.dumps(record))
    with pytest.raises(InputError, match="format 3 without its BTE model"):
        LastLayer.load(path)


def test_resume_refuses_other_bte_values(tmp_path):
    """A screening run's manifest records the BTE values' digest: --resume with others is refused."""
    from types import SimpleNamespace

    from cgcnn.screening import ScreenSettings
    from cgcnn.screening.workfolder import _check_manifest, _manifest
    from cgcnn.transfer import BTEValues

    data = type("Data", (), {"path": tmp_path, "fingerprint": lambda self: "f", "__len__": lambda self: 3})()
    table = SimpleNamespace(atom_init={1: np.zeros(2)})

    def screener(sha):
        bte = BTEValues({}, source={"name": "refined.csv", "sha256": sha}) if sha else None
        return SimpleNamespace(sources=[SimpleNamespace(sha256="s")], models=[], tables=[table], descriptors="slack",
                               bte=bte)

    settings = ScreenSettings()
    saved = _manifest(screener("aaa"), data, settings, "layer")
    _check_manifest(tmp_path, saved, _manifest(screener("aaa"), data, settings, "layer"))
    for other in ("bbb", None):
        with pytest.raises(InputError, match="made with --bte aaa"):
            _check_manifest(tmp_path, saved, _manifest(screener(other), data, settings, "layer"))
    plain = _manifest(screener(None), data, settings, "layer")
    del plain["options"]["--bte"]  # a run interrupted under the previous version resumes as before
    _check_manifest(tmp_path, plain, _manifest(screener(None), data, settings, "layer"))


# --- --train 0 --refine ----------------------------------------------------------------


def _tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tlk_bte", REPO / "transfer_learning_kappa.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refine_recomputes_listed_and_flagged_crystals_and_calibrates_them(tmp_path, subset, monkeypatch, capsys):
    """--train 0 --refine with cgcnn.refine replaced by a stand-in (the refine extra's phonons take minutes a
    crystal): the crystals named and those flagged go to refine, whose values the BTE model then uses."""
    import cgcnn.refine
    from cgcnn.refine import COLUMNS, RefineSummary

    folder, refined = subset
    run("--train", 1, SOURCE, folder, "--bte", refined, "--members", "none", "--last-layer-type", "ridge", "-q",
        cwd=tmp_path)
    targets = dict(line.split(",") for line in (folder / "id_prop.csv").read_text().split())
    asked = []

    def fake_refine(crystals, results, settings, resume=False, on_error="stop", quiet=False):
        asked.extend(c.cif_id for c in crystals)
        rows = [dict.fromkeys(COLUMNS, "") | {"cif_id": c.cif_id, "log10_kappa_bte": float(targets[c.cif_id]) - 0.15,
                                              "potential": settings.potential} for c in crystals]
        pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(results, index=False)
        return RefineSummary(len(crystals), len(crystals), 0, 1.0)

    monkeypatch.setattr(cgcnn.refine, "require", lambda module: None)
    monkeypatch.setattr(cgcnn.refine, "refine", fake_refine)
    (tmp_path / "ids.txt").write_text("GaSb\n")
    monkeypatch.chdir(tmp_path)
    assert _tool().main(["--train", "0", str(SOURCE), str(folder), "--bte", str(refined), "--refine",
                         "--refine-ids", "ids.txt", "--refined", "new.csv", "-q", "-j", "0"]) == 0
    out = capsys.readouterr().out
    flagged = pd.read_csv(tmp_path / "results.csv", keep_default_na=False, na_values=[""])
    assert asked[-1] == "GaSb" and set(asked[:-1]) <= set(flagged.cif_id)
    assert "refine: " in out and "screening again with the BTE values of new.csv" in out
    row = flagged.set_index("cif_id").loc["GaSb"]
    assert row.route == "bte" and row.log10_kappa_bte == pytest.approx(float(targets["GaSb"]) - 0.15)
    assert np.isfinite(row.prediction_plain) and row.prediction != row.prediction_plain
    assert (flagged.route == "bte").sum() == 13  # the 12 of refined.csv, and GaSb


def test_refine_without_the_extra_is_one_line(tmp_path, subset):
    try:
        import sevenn  # noqa: F401

        pytest.skip("the refine extra is installed")
    except ImportError:
        pass
    folder, _ = subset
    run("--train", 1, SOURCE, folder, "--members", "none", "--last-layer-type", "ridge", "-q", cwd=tmp_path)
    proc = run("--train", 0, SOURCE, folder, "--refine", "-q", cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "pip install .[refine]" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "results.csv").exists()  # refused before the long part
