"""Tests for cgcnn/evaluate.py: the split protocol, the baselines, the outputs of the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from cgcnn import InputError
from cgcnn.cli import run_main
from cgcnn.evaluate import evaluate, main, make_splits, metrics, summarize
from cgcnn.model import SourceModel
from cgcnn.transfer import compute_features
from cgcnn.transfer import make_estimator as make_last_layer
from conftest import REPO, make_checkpoint, write_folder

N = 16  # crystals in the test folder: 12 train / 4 test per ParAIsite split
METHODS = ["constant", "source", "original", "gp", "ridge", "rf", "mlp"]  # auto: see test_lastlayer


def kappa_crystals() -> tuple[dict[str, Structure], dict[str, float]]:
    """16 cubic crystals: 4 prototypes x 4 lattice constants, in a shuffled order.

    Targets are log10 κ_L falling smoothly with the volume per atom and the mean
    atomic mass (a caricature of Slack's law), plus a little seeded noise.
    """
    prototypes = {
        "NaCl": (Structure.from_spacegroup("Fm-3m", Lattice.cubic(1.0), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]), 5.64),
        "Si": (Structure.from_spacegroup("Fd-3m", Lattice.cubic(1.0), ["Si"], [[0, 0, 0]]), 5.43),
        "GaAs": (Structure.from_spacegroup("F-43m", Lattice.cubic(1.0), ["Ga", "As"], [[0, 0, 0], [0.25] * 3]), 5.65),
        "CsCl": (Structure.from_spacegroup("Pm-3m", Lattice.cubic(1.0), ["Cs", "Cl"], [[0, 0, 0], [0.5] * 3]), 4.12),
    }
    rng = np.random.RandomState(7)
    structures, targets = {}, {}
    for scale in (0.94, 0.98, 1.02, 1.06):
        for name, (unit, a) in prototypes.items():
            s = Structure(Lattice.cubic(a * scale), unit.species, unit.frac_coords)
            volume = s.volume / len(s)
            mass = float(np.mean([site.specie.atomic_mass for site in s]))
            cif_id = f"{name}_{scale:.2f}"
            structures[cif_id] = s
            targets[cif_id] = round(2.6 - 0.03 * volume - 0.006 * mass + 0.03 * rng.randn(), 5)
    order = rng.permutation(len(structures))
    ids = list(structures)
    return {ids[i]: structures[ids[i]] for i in order}, {ids[i]: targets[ids[i]] for i in order}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, atom_init_table) -> Path:
    structures, targets = kappa_crystals()
    return write_folder(tmp_path_factory.mktemp("kappa") / "data", structures, targets, atom_init_table)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("model") / "source.pth.tar", seed=1)


def id_prop(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "id_prop.csv", header=None, names=["cif_id", "target"])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, folder, source):
    """The real command line, default protocol, run once in a temporary folder (auto left out for time)."""
    cwd = tmp_path_factory.mktemp("run")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "cgcnn.evaluate", str(source), str(folder), "-q",
                           "--last-layers", "gp,ridge,rf,mlp"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = cwd / "evaluation"
    return proc, out, pd.read_csv(out / "predictions.csv")


# --- the protocol -----------------------------------------------------------


@pytest.mark.parametrize("n", [N, 143])
def test_parasite_splits_are_the_seeded_permutations(n):
    splits = make_splits(n)
    assert [s.seed for s in splits] == list(range(9))
    for s in splits:
        perm = np.random.RandomState(s.seed).permutation(n)
        assert len(s.train) == int(0.8 * n) and len(s.test) == n - int(0.8 * n)
        np.testing.assert_array_equal(s.train, perm[: int(0.8 * n)])
        np.testing.assert_array_equal(s.test, perm[int(0.8 * n):])
        assert not set(s.train) & set(s.test)
        assert sorted([*s.train, *s.test]) == list(range(n))


def test_split_options():
    splits = make_splits(20, splits=3, train_fraction=0.7)
    assert len(splits) == 3 and all(len(s.train) == 14 and len(s.test) == 6 for s in splits)
    folds = make_splits(10, kfold=5)
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(10))
    for f in folds:
        assert sorted([*f.train, *f.test]) == list(range(10))
    with pytest.raises(InputError, match="at least 2"):
        make_splits(4)  # 3 train, 1 test
    with pytest.raises(InputError, match="kfold"):
        make_splits(10, kfold=6)


def test_metrics_of_a_known_prediction():
    y = np.array([0.0, 1.0, 2.0])
    m = metrics(y, y + 0.1)
    assert m["mae"] == pytest.approx(0.1) and m["rmse"] == pytest.approx(0.1)
    assert m["r2"] == pytest.approx(1 - 0.03 / 2)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["mape"] == pytest.approx(100 * (10**0.1 - 1))
    assert np.isnan(metrics(y, np.ones(3))["spearman"])


# --- the command line -------------------------------------------------------


def test_cli_writes_table_predictions_and_plot(cli_run, folder):
    proc, out, pred = cli_run
    table = (out / "metrics.md").read_text()
    assert table in proc.stdout
    assert f"`{folder.name}` ({N} crystals)" in table and "source.pth.tar" in table and "seeds 0-8" in table
    accuracy = table.split("\n\n")[1]  # the first table; the second gives the intervals
    rows = [line.split("|")[1].strip() for line in accuracy.splitlines() if line.startswith("| ")][1:]
    assert rows == METHODS
    assert "±" in accuracy.splitlines()[-1]
    intervals = table.split("\n\n")[3]
    assert "coverage" in intervals and "| gp |" in intervals and "| constant |" not in intervals
    assert (out / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(pred.columns) == ["split", "seed", "cif_id", "method", "target", "prediction", "low", "high",
                                  "in_domain"]
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_predictions_follow_the_protocol(cli_run, folder):
    _, _, pred = cli_run
    ids = id_prop(folder)["cif_id"].tolist()
    assert sorted(pred["split"].unique()) == list(range(9))
    for (split, _method), part in pred.groupby(["split", "method"]):
        assert (part["seed"] == split).all()
        test = np.random.RandomState(split).permutation(N)[int(0.8 * N):]
        assert part["cif_id"].tolist() == [ids[i] for i in sorted(test)]  # id_prop.csv order
    assert set(pred["method"]) == set(METHODS)


def test_baselines_use_the_training_part_only(cli_run, folder):
    _, _, pred = cli_run
    rows = id_prop(folder).set_index("cif_id")["target"]
    for _split, part in pred[pred["method"] == "constant"].groupby("split"):
        train = rows.drop(part["cif_id"])
        assert len(train) == int(0.8 * N)
        np.testing.assert_allclose(part["prediction"], np.median(train), rtol=1e-5)
        np.testing.assert_allclose(part["target"], rows[part["cif_id"]], rtol=1e-5)


def test_last_layers_are_refit_on_each_training_part(cli_run, folder, source):
    _, _, pred = cli_run
    model = SourceModel.load(source)
    feats = compute_features([model], folder, progress=False, descriptors="structure")
    for split in make_splits(N)[:2]:
        test = np.sort(split.test)
        ridge = make_last_layer("ridge", split.index).fit(feats.X[split.train], feats.targets[split.train])
        part = pred[(pred["split"] == split.index) & (pred["method"] == "ridge")]
        np.testing.assert_allclose(part["prediction"], ridge.predict(feats.X[test]), rtol=1e-4, atol=1e-5)
        original = make_last_layer("mlp", split.index).fit(feats.crys_fea[split.train], feats.targets[split.train])
        part = pred[(pred["split"] == split.index) & (pred["method"] == "original")]
        np.testing.assert_allclose(part["prediction"], original.predict(feats.crys_fea[test]), rtol=1e-4, atol=1e-5)
        part = pred[(pred["split"] == split.index) & (pred["method"] == "source")]
        np.testing.assert_allclose(part["prediction"], feats.source_prediction[test, 0], rtol=1e-4, atol=1e-5)


def test_table_is_mean_and_std_over_splits(cli_run):
    proc, _, pred = cli_run
    rf = pred[pred["method"] == "rf"]
    maes = [np.mean(np.abs(p["target"] - p["prediction"])) for _, p in rf.groupby("split")]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| rf "))
    assert row.split("|")[2].strip() == f"{np.mean(maes):.3f} ± {np.std(maes, ddof=1):.3f}"
    table = summarize(pred)
    assert table.loc["rf", "mae"] == pytest.approx(np.mean(maes), abs=1e-5)
    assert (table["n_splits"] == 9).all()


def test_kfold_tests_each_crystal_once(tmp_path, folder, source, capsys):
    out = tmp_path / "kfold"
    assert run_main(main, [str(source), str(folder), "--kfold", "4", "--last-layers", "ridge",
                           "--out-dir", str(out), "-q"]) == 0
    assert "4-fold" in capsys.readouterr().out
    pred = pd.read_csv(out / "predictions.csv")
    ids = id_prop(folder)["cif_id"]
    for method in ("constant", "source", "ridge"):
        assert sorted(pred.loc[pred["method"] == method, "cif_id"]) == sorted(ids)
    assert sorted(pred["split"].unique()) == [0, 1, 2, 3]


def test_user_errors_are_one_line(tmp_path, folder, source, capsys):
    assert run_main(main, [str(source), str(folder), "--last-layers", "svm", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "svm" in err and err.count("\n") == 1
    no_targets = write_folder(tmp_path / "bare", dict(list(kappa_crystals()[0].items())[:4]), None,
                              {str(z): [0.0] * 91 + [1.0] for z in range(1, 101)})
    assert run_main(main, [str(source), str(no_targets), "--out-dir", str(tmp_path / "o"), "-q"]) == 2
    assert "targets" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- fine-tuning ------------------------------------------------------------


def test_finetune_row_leaves_the_source_model_untouched(folder, source):
    model = SourceModel.load(source)
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    table, pred = evaluate([model], folder, splits=2, last_layers=(), finetune=2, finetune_batch_size=6,
                           progress=False)
    assert list(table.index) == ["constant", "source", "original", "finetune"]
    tuned = pred[pred["method"] == "finetune"]
    assert len(tuned) == 2 * (N - int(0.8 * N)) and np.isfinite(tuned["prediction"]).all()
    assert not np.allclose(tuned["prediction"], pred.loc[pred["method"] == "source", "prediction"])
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in model.net.parameters())


def test_grouped_cross_validation_keeps_groups_apart(tmp_path, folder, source, capsys):
    ids = id_prop(folder)["cif_id"].tolist()
    groups = tmp_path / "groups.csv"
    pd.DataFrame({"cif_id": ids, "prototype": [i.split("_")[0] for i in ids]}).to_csv(groups, index=False)
    out = tmp_path / "grouped"
    assert run_main(main, [str(source), str(folder), "--group-by", "prototype", "--groups-file", str(groups),
                           "--last-layers", "ridge", "--out-dir", str(out), "-q"]) == 0
    assert "grouped 4-fold cross-validation by prototype" in capsys.readouterr().out
    pred = pd.read_csv(out / "predictions.csv")
    ridge = pred[pred["method"] == "ridge"]
    assert sorted(ridge["cif_id"]) == sorted(ids)  # each crystal tested once
    for _, part in ridge.groupby("split"):
        assert part["cif_id"].str.split("_").str[0].nunique() == 1  # one whole prototype per test fold
    assert run_main(main, [str(source), str(folder), "--group-by", "nope", "--groups-file", str(groups),
                           "--out-dir", str(tmp_path / "x"), "-q"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err


def test_intervals_are_scored_on_held_out_crystals(cli_run):
    _, _, pred = cli_run
    table = summarize(pred)
    for method in ("gp", "ridge", "original"):
        part = pred[pred["method"] == method]
        covered = ((part["target"] >= part["low"]) & (part["target"] <= part["high"])).mean()
        assert table.loc[method, "coverage"] == pytest.approx(covered)
        assert table.loc[method, "width"] > 0
    assert np.isnan(table.loc["constant", "coverage"])


def test_structure_types_of_the_sample_match_its_prototypes():
    """--group-by structure_type: the labels computed from the CIFs of data/sample partition it as
    the prototype column of its compounds.csv does (fluorite and antifluorite are one structure type)."""
    from cgcnn.evaluate import structure_types

    table = pd.read_csv(REPO / "data" / "sample" / "compounds.csv")
    table = table[table["cif_id"].isin(["NaCl", "KBr", "GaAs", "ZnS", "GaN", "CaF2", "Mg2Si", "Si", "C"])]
    labels = structure_types(REPO / "data" / "sample", list(table["cif_id"]))
    by_label = dict(zip(table["cif_id"], labels))
    assert by_label["NaCl"] == by_label["KBr"] == "225-2-ab"
    assert by_label["GaAs"] == by_label["ZnS"] == "216-2-ac"
    assert by_label["GaN"] == "186-4-b" and by_label["Si"] == by_label["C"] == "227-2-a"
    assert by_label["CaF2"] == by_label["Mg2Si"] == "225-3-ac"
    proto = table["prototype"].replace({"antifluorite": "fluorite"}).tolist()
    same_label = [[a == b for b in labels] for a in labels]
    same_proto = [[a == b for b in proto] for a in proto]
    assert same_label == same_proto
