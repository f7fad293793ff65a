"""The Python API (cgcnn.api.KappaModel) and the structure formats: the same numbers as the command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgcnn import InputError, KappaModel

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SAMPLE = REPO / "data" / "sample"
SOURCE = REPO / "models" / "source.pth.tar"
LAYER_V2 = DATA / "last_layer_v2.sav"  # 12 crystals of data/sample, three members, gp (see test_layout.py)


def _ids() -> list[str]:
    return pd.read_csv(DATA / "last_layer_v2_results.csv", dtype={"cif_id": str})["cif_id"].tolist()


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "transfer_learning_kappa.py"), *map(str, args), "-q"],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """--train 0 of last_layer_v2.sav on its 12 crystals, without targets (a folder of their CIFs)."""
    folder = tmp_path_factory.mktemp("cifs")
    for cif_id in _ids():
        shutil.copy(SAMPLE / f"{cif_id}.cif", folder)
    (folder / "id_prop.csv").write_text("".join(f"{i}\n" for i in _ids()))
    proc = _cli("--train", 0, SOURCE, folder, "--last-layer", LAYER_V2, "--results", folder.parent / "r.csv",
                "--test-results", folder.parent / "t.csv", cwd=folder.parent)
    assert proc.returncode == 0, proc.stderr
    return folder, pd.read_csv(folder.parent / "r.csv", dtype={"cif_id": str}).set_index("cif_id")


@pytest.fixture(scope="module")
def model():
    return KappaModel.load(LAYER_V2, source=SOURCE)


def _same(table: pd.DataFrame, expected: pd.DataFrame, exact: bool = True) -> None:
    assert list(table.columns) == list(expected.columns)
    assert list(table.index) == list(expected.index)
    assert table["in_domain"].tolist() == expected["in_domain"].tolist()
    for column in expected.columns:
        if column == "in_domain":
            continue
        if exact:
            np.testing.assert_array_equal(table[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
        else:
            np.testing.assert_allclose(table[column].to_numpy(), expected[column].to_numpy(), rtol=1e-6,
                                       err_msg=column)


def test_predict_cif_paths_structures_and_atoms_as_the_command_line(model, expected):
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    folder, want = expected
    paths = [folder / f"{i}.cif" for i in _ids()]
    _same(model.predict(paths), want)
    _same(model.predict(str(folder)), want)  # a data folder, as --train 0 reads it
    structures = [Structure.from_file(p) for p in paths]
    _same(model.predict(structures, ids=_ids()), want)
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
    for a, cif_id in zip(atoms, _ids()):
        a.info["material_id"] = cif_id  # ids from the frames' info
    _same(model.predict(atoms), want)


def test_predict_poscar_json_and_extxyz_files(model, expected, tmp_path):
    from ase.io import write
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Poscar

    folder, want = expected
    structures = [Structure.from_file(folder / f"{i}.cif") for i in _ids()]
    poscars, jsons = [], []
    for s, cif_id in zip(structures, _ids()):
        Poscar(s).write_file(tmp_path / f"{cif_id}.vasp")
        poscars.append(tmp_path / f"{cif_id}.vasp")
        (tmp_path / f"{cif_id}.json").write_text(s.to_json())
        jsons.append(tmp_path / f"{cif_id}.json")
    _same(model.predict(poscars), want, exact=False)  # POSCAR keeps 16 digits of the coordinates
    _same(model.predict(jsons), want)
    frames = [AseAtomsAdaptor.get_atoms(s) for s in structures]
    for a, cif_id in zip(frames, _ids()):
        a.info["cif_id"] = cif_id
    write(tmp_path / "all.extxyz", frames, format="extxyz")
    _same(model.predict([tmp_path / "all.extxyz"]), want, exact=False)
    for a in frames:
        del a.info["cif_id"]
    write(tmp_path / "anon.extxyz", frames, format="extxyz")
    assert list(model.predict([tmp_path / "anon.extxyz"]).index) == [f"anon:{k}" for k in range(len(frames))]


def test_featurize_gives_the_named_last_layer_inputs(model, expected):
    folder, _ = expected
    table = model.featurize([folder / f"{i}.cif" for i in _ids()[:3]])
    assert list(table.index) == _ids()[:3]
    assert table.shape == (3, model.layer.n_features)
    assert table.columns[0].startswith("source.pth.tar:crys_fea[") and np.isfinite(table.to_numpy()).all()


def test_fit_writes_the_last_layer_of_train_1(tmp_path):
    """KappaModel.fit and --train 1 (same options) write last layers that predict the same."""
    ids = _ids()
    folder = tmp_path / "fit"
    folder.mkdir()
    rows = dict(line.split(",") for line in (SAMPLE / "id_prop.csv").read_text().split())
    for cif_id in ids:
        shutil.copy(SAMPLE / f"{cif_id}.cif", folder)
    (folder / "id_prop.csv").write_text("".join(f"{i},{rows[i]}\n" for i in ids))
    options = dict(last_layer_type="ridge", members="none", cv_folds=2)
    fitted = KappaModel.fit(folder, source=SOURCE, **options)
    assert fitted.chosen == "ridge" and fitted.cv_mae is not None and fitted.layer.conformal is not None
    fitted.save(tmp_path / "api.sav")
    proc = _cli("--train", 1, SOURCE, folder, "--last-layer-type", "ridge", "--members", "none", "--cv-folds", 2,
                "--last-layer", tmp_path / "cli.sav", "--test-results", tmp_path / "t1.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("api", "cli"):
        proc = _cli("--train", 0, SOURCE, folder, "--last-layer", tmp_path / f"{name}.sav", "--results",
                    tmp_path / f"{name}.csv", "--test-results", tmp_path / f"t_{name}.csv", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "api.csv").read_bytes() == (tmp_path / "cli.csv").read_bytes()
    # the same fit from Structures and targets
    from pymatgen.core import Structure

    structures = [Structure.from_file(folder / f"{i}.cif") for i in ids]
    again = KappaModel.fit(structures, [float(rows[i]) for i in ids], source=SOURCE, ids=ids, **options)
    assert again.cv_mae == pytest.approx(fitted.cv_mae, abs=1e-9)


def test_errors_are_one_line_input_errors_naming_the_crystal(model, tmp_path):
    from ase import Atoms
    from pymatgen.core import Lattice, Structure

    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(InputError, match=r"crystal 0: overlapping atoms"):
        model.predict([overlapping])
    with pytest.raises(InputError, match="without a lattice"):
        model.predict([Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]])])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="notes.txt: not a structure file"):
        model.predict([tmp_path / "notes.txt"])
    (tmp_path / "bad.vasp").write_text("not a poscar\n")
    with pytest.raises(InputError, match="bad.vasp: not a readable POSCAR"):
        model.predict([tmp_path / "bad.vasp"])
    with pytest.raises(InputError, match="not a pymatgen Structure, ASE Atoms or a file path"):
        model.predict([42])
    with pytest.raises(InputError, match="ids: 1 given for more crystals"):
        model.predict([SAMPLE / "Si.cif", SAMPLE / "C.cif"], ids=["a"])
    with pytest.raises(InputError, match="needs at least 2 crystals|at least 2"):
        KappaModel.fit([SAMPLE / "Si.cif"], [2.2], source=SOURCE, members="none", last_layer_type="ridge")


def test_parquet_results_round_trip_to_the_csv_values(expected, tmp_path):
    """--results FILE.parquet (and --test-results) hold the CSV's values, with its columns; chunked."""
    folder, _ = expected
    for results, test in (("r.parquet", "t.parquet"), ("r.csv", "t.csv")):  # three chunks of 5, 5 and 2
        proc = _cli("--train", 0, SOURCE, folder, "--last-layer", LAYER_V2, "--results", tmp_path / results,
                    "--test-results", tmp_path / test, "--chunk-size", 5, "-b", 5, "-j", 0, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(tmp_path / "r.parquet").set_index("cif_id")
    _same(table, pd.read_csv(tmp_path / "r.csv", dtype={"cif_id": str}).set_index("cif_id"))
    assert table["in_domain"].dtype == bool and table["prediction"].dtype == np.float64
    test = pd.read_parquet(tmp_path / "t.parquet")
    assert list(test.columns) == ["cif_id", "target", "prediction"] and list(test["cif_id"]) == _ids()
    assert not (tmp_path / "r.parquet.parts").exists()


def test_the_documented_example_runs(tmp_path):
    """docs/python_api_example.py (README, "Python API"): fit, predict session structures, plot."""
    out = tmp_path / "kappa.png"
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "python_api_example.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "cross-validated MAE" in proc.stdout and "MgO" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_bytes_whatever_the_workers_or_dask(expected, tmp_path):
    """results.csv does not depend on -j or --dask (issue 24, class 10): the networks give the same bits
    with any number of torch threads, the last layer predicts with one BLAS thread everywhere."""
    folder, _ = expected
    runs = {"j0": ("-j", 0), "j2": ("-j", 2), "dask": ("--dask", "local")}
    for name, option in runs.items():
        proc = _cli("--train", 0, SOURCE, folder, "--last-layer", LAYER_V2, "--results", tmp_path / f"{name}.csv",
                    "--test-results", tmp_path / f"t_{name}.csv", "-b", 4, "--chunk-size", 4, *option, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    first = (tmp_path / "j0.csv").read_bytes()
    assert first == (tmp_path / "j2.csv").read_bytes() == (tmp_path / "dask.csv").read_bytes()
