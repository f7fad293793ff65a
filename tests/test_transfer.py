"""transfer_learning_kappa.py through its command line, on small folders built in code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from cgcnn.transfer import LastLayer
from conftest import REPO, SHARED, TARGETS, crystals, make_checkpoint, one_hot_table, write_folder

TOOL = REPO / "transfer_learning_kappa.py"


def run(*args, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(TOOL), *map(str, args), "-q"], cwd=cwd, capture_output=True,
                          text=True, timeout=1200)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def rocksalt_series(n: int) -> dict[str, Structure]:
    """n rocksalt crystals of varied composition and lattice constant."""
    pairs = [("Na", "Cl"), ("K", "Cl"), ("Mg", "O"), ("Ca", "O"), ("Li", "F"), ("Pb", "Te"), ("Na", "F"),
             ("K", "Br"), ("Rb", "I"), ("Sr", "O"), ("Ba", "O"), ("Ag", "Cl")]
    out = {}
    for i in range(n):
        a, b = pairs[i % len(pairs)]
        lat = 4.0 + 0.15 * i
        out[f"{a}{b}_{i:02d}"] = Structure.from_spacegroup("Fm-3m", Lattice.cubic(lat), [a, b],
                                                           [[0, 0, 0], [0.5, 0.5, 0.5]])
    return out


def test_train_then_predict(tmp_path, cif_folder, small_model):
    work = tmp_path / "work"
    work.mkdir()
    out = run("--train", 1, small_model, cif_folder, cwd=work)
    assert "training MAE" in out.stdout
    saved = LastLayer.load(work / "last_layer.sav")
    # no property models beside the model: crys_fea (4) and the 5 structure descriptors
    assert saved.n_features == 4 + 5 and saved.n_train == 4
    assert saved.inputs["sources"][0]["name"] == small_model.name
    assert saved.inputs["descriptors"] == "structure"
    src = pd.read_csv(work / "test_results.csv")
    assert list(src.columns) == ["cif_id", "target", "prediction"]
    assert list(src.cif_id) == list(TARGETS)

    out = run("--train", 0, small_model, cif_folder, cwd=work)
    res = pd.read_csv(work / "results.csv")
    assert list(res.columns) == ["cif_id", "target", "prediction", "kappa", "prediction_low", "prediction_high",
                                 "kappa_low", "kappa_high", "in_domain", "domain_distance"]
    assert list(res.cif_id) == list(TARGETS)  # id_prop.csv order, not sorted
    np.testing.assert_allclose(res.target, [TARGETS[i] for i in TARGETS], rtol=1e-6)
    np.testing.assert_allclose(res.kappa, 10 ** res.prediction, rtol=1e-5)
    assert "MAE" in out.stdout and "R²" in out.stdout
    # the saved estimator reproduces results.csv from crys_fea
    assert np.isfinite(res.prediction).all()


def test_predict_folder_without_targets(tmp_path, cif_folder, small_model, atom_init_table):
    run("--train", 1, small_model, cif_folder, "--last-layer-type", "ridge", cwd=tmp_path)
    new = write_folder(tmp_path / "new", crystals(), atom_init=atom_init_table, id_prop=False)
    out = run("--train", 0, small_model, new, cwd=tmp_path)
    res = pd.read_csv(tmp_path / "results.csv")
    assert list(res.cif_id) == sorted(crystals())  # no id_prop.csv: every CIF by name
    assert res.target.isna().all()
    assert "MAE" not in out.stdout


def test_seed_gives_identical_predictions(tmp_path, small_model):
    data = write_folder(tmp_path / "data", rocksalt_series(12),
                        {k: 0.1 * i for i, k in enumerate(rocksalt_series(12))},
                        atom_init=one_hot_table())
    results = []
    for name in ("a", "b"):
        work = tmp_path / name
        work.mkdir()
        run("--train", 1, small_model, data, "--seed", 3, "--last-layer-type", "gp", cwd=work)
        run("--train", 0, small_model, data, cwd=work)
        results.append((work / "results.csv").read_bytes())
    assert results[0] == results[1]


def test_every_crystal_is_used_beyond_one_batch(tmp_path, small_model):
    """The original fit on the last batch only; a batch size of 5 on 12 crystals must fit on all 12."""
    structures = rocksalt_series(12)
    targets = {k: 0.5 + 0.05 * i for i, k in enumerate(structures)}
    data = write_folder(tmp_path / "data", structures, targets, atom_init=one_hot_table())
    run("--train", 1, small_model, data, "-b", 5, "--last-layer-type", "ridge", cwd=tmp_path)
    assert LastLayer.load(tmp_path / "last_layer.sav").n_train == 12
    run("--train", 0, small_model, data, "-b", 5, cwd=tmp_path)
    small_batches = pd.read_csv(tmp_path / "results.csv")
    run("--train", 0, small_model, data, "-b", 500, cwd=tmp_path)
    one_batch = pd.read_csv(tmp_path / "results.csv")
    assert len(small_batches) == 12
    np.testing.assert_allclose(small_batches.prediction, one_batch.prediction, rtol=1e-5, atol=1e-6)


def test_last_layer_of_another_source_model_is_refused(tmp_path, cif_folder, small_model):
    run("--train", 1, small_model, cif_folder, "--last-layer-type", "ridge", cwd=tmp_path)
    other = make_checkpoint(tmp_path / "other.pth.tar", seed=7)
    proc = run("--train", 0, other, cif_folder, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "other source model" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_missing_last_layer(tmp_path, cif_folder, small_model):
    proc = run("--train", 0, small_model, cif_folder, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "last_layer.sav" in proc.stderr and "--train 1" in proc.stderr


def test_alternative_last_layer(tmp_path, small_model):
    structures = rocksalt_series(10)
    targets = {k: 0.5 + 0.05 * i for i, k in enumerate(structures)}
    data = write_folder(tmp_path / "data", structures, targets, atom_init=one_hot_table())
    run("--train", 1, small_model, data, "--last-layer-type", "rf", cwd=tmp_path)
    saved = LastLayer.load(tmp_path / "last_layer.sav")
    assert saved.kind == "rf" and type(saved.estimator).__name__ == "RandomForestRegressor"
    run("--train", 0, small_model, data, cwd=tmp_path)
    assert len(pd.read_csv(tmp_path / "results.csv")) == 10


def test_multi_source_concatenates_crys_fea(tmp_path, cif_folder, small_model):
    second = make_checkpoint(tmp_path / "second.pth.tar", seed=5)
    models = f"{small_model},{second}"
    run("--train", 1, models, cif_folder, "--last-layer-type", "ridge", cwd=tmp_path)
    saved = LastLayer.load(tmp_path / "last_layer.sav")
    assert saved.n_features == 8 + 5
    assert [s["name"] for s in saved.inputs["sources"]] == ["small.pth.tar", "second.pth.tar"]
    run("--train", 0, models, cif_folder, cwd=tmp_path)
    proc = run("--train", 0, small_model, cif_folder, cwd=tmp_path, check=False)
    assert proc.returncode == 2


def test_bundled_model_and_sample(tmp_path):
    """The README's main command on the project's own source model and sample."""
    model, sample = REPO / "models" / "source.pth.tar", REPO / "data" / "sample"
    if not model.is_file() or not (sample / "id_prop.csv").is_file():
        pytest.skip("bundled model or sample not built yet")
    out = run("--train", 1, model, sample, cwd=tmp_path)
    assert "cross-validated MAE" in out.stdout and "chosen by cross-validation" in out.stdout
    assert "interval (CV+): cross-validated coverage" in out.stdout
    saved = LastLayer.load(tmp_path / "last_layer.sav")
    assert saved.inputs["descriptors"] == "slack" and len(saved.inputs["property_models"]) == 9
    assert saved.inputs["member_folders"] == ["seed1", "seed2"]  # the bundled ensemble members
    assert saved.cv["mae"] < 0.6 * saved.cv["mae_constant"]  # well below a constant, measured inside the sample
    assert 0.8 <= saved.interval["cv_coverage"] <= 0.97
    run("--train", 0, model, sample, cwd=tmp_path)
    res = pd.read_csv(tmp_path / "results.csv")
    ids = [line.split(",")[0] for line in (sample / "id_prop.csv").read_text().split()]
    assert list(res.cif_id) == ids
    assert (res.prediction_low <= res.prediction).all() and (res.prediction <= res.prediction_high).all()
    np.testing.assert_allclose(res.kappa_low, 10 ** res.prediction_low, rtol=1e-5)


def test_original_source_model_works_unchanged(tmp_path):
    """The original tool's published source model with its atom_init.json (skips without ../shared)."""
    orig = SHARED / "models" / "cgcnn_original"
    if not (orig / "gong2021_source.pth.tar").is_file():
        pytest.skip("../shared not present")
    hh = pd.read_csv(SHARED / "data" / "half_heusler_143" / "kappa.csv").head(30)
    data = tmp_path / "hh"
    data.mkdir()
    cifs = SHARED / "data" / "half_heusler_143" / "cif"
    for cif_id in hh.id:
        (data / f"{cif_id}.cif").write_bytes((cifs / f"{cif_id}.cif").read_bytes())
    (data / "id_prop.csv").write_text("".join(f"{i},{np.log10(k):.6f}\n" for i, k in zip(hh.id, hh.kappa_300K_W_mK)))
    (data / "atom_init.json").write_bytes((orig / "atom_init.json").read_bytes())
    run("--train", 1, orig / "gong2021_source.pth.tar", data, "--original", cwd=tmp_path)
    run("--train", 0, orig / "gong2021_source.pth.tar", data, cwd=tmp_path)
    res = pd.read_csv(tmp_path / "results.csv")
    assert list(res.cif_id) == list(hh.id)
    src = pd.read_csv(tmp_path / "test_results.csv")
    ref = pd.read_csv(orig / "reference" / "gong2021_source.csv").set_index("cif_id")
    common = [i for i in src.cif_id if i in ref.index]
    assert common, "no reference structure among the first 30 half-Heuslers"
    np.testing.assert_allclose(src.set_index("cif_id").loc[common, "prediction"], ref.loc[common, "prediction"],
                               rtol=1e-5)


def test_original_route_is_the_mlp_on_crys_fea(tmp_path, small_model):
    structures = rocksalt_series(12)
    targets = {k: 0.5 + 0.05 * i for i, k in enumerate(structures)}
    data = write_folder(tmp_path / "data", structures, targets, atom_init=one_hot_table())
    run("--train", 1, small_model, data, "--original", cwd=tmp_path)
    saved = LastLayer.load(tmp_path / "last_layer.sav")
    assert saved.kind == "mlp" and saved.inputs["descriptors"] == "none" and saved.n_features == 4
    assert type(saved.estimator).__name__ == "MLPRegressor"
    proc = run("--train", 1, small_model, data, "--original", "--last-layer-type", "gp", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--original" in proc.stderr


def test_last_layer_of_the_previous_version_predicts(tmp_path):
    """A last_layer.sav written before last layers became skops files still predicts (issue 12)."""
    model = REPO / "models" / "source.pth.tar"
    data = write_folder(tmp_path / "data", crystals(), id_prop=False)  # the atom table stored in the model
    run("--train", 0, model, data, "--last-layer", REPO / "tests" / "data" / "last_layer_v1.sav", cwd=tmp_path)
    res = pd.read_csv(tmp_path / "results.csv")
    assert len(res) == len(crystals()) and np.isfinite(res.prediction).all()
    assert res.prediction_low.isna().all() and res.in_domain.all()


def test_kappa_instead_of_log10_is_refused(tmp_path, small_model):
    structures = rocksalt_series(6)
    data = write_folder(tmp_path / "data", structures, {k: 5.0 + 40 * i for i, k in enumerate(structures)},
                        atom_init=one_hot_table())
    proc = run("--train", 1, small_model, data, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "look like κ_L" in proc.stderr
    assert not (tmp_path / "last_layer.sav").exists()
