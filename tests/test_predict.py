"""End-to-end tests of ``python -m cgcnn.predict`` and the library function behind it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cgcnn.data
from cgcnn import InputError
from cgcnn.data import CIFData
from cgcnn.model import SourceModel
from cgcnn.predict import predict
from conftest import TARGETS, crystals, make_checkpoint, write_folder

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "cgcnn.predict", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_cli_with_targets(small_model, cif_folder, tmp_path):
    proc = run_cli(str(small_model), str(cif_folder), "-b", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(tmp_path / "test_results.csv")  # the default --out, in the working directory
    assert rows[0] == ["cif_id", "target", "prediction"]
    assert [r[0] for r in rows[1:]] == list(TARGETS)  # id_prop.csv order, not sorted or shuffled
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], list(TARGETS.values()))
    predictions = np.array([float(r[2]) for r in rows[1:]])
    mae = np.mean(np.abs(predictions - np.array(list(TARGETS.values()))))
    assert "MAE" in proc.stdout and f"{mae:.4f}" in proc.stdout and "4 crystals" in proc.stdout
    # the same as the library, whatever the batch size
    model = SourceModel.load(small_model)
    _, expected = model.run(CIFData(cif_folder), batch_size=256, progress=False)
    np.testing.assert_allclose(predictions, expected, rtol=1e-6)


def test_cli_without_targets(small_model, tmp_path, atom_init_table):
    all_ = crystals()
    folder = write_folder(tmp_path / "new", {k: all_[k] for k in ("MgO", "Si", "NaCl")}, atom_init=atom_init_table)
    out = tmp_path / "sub" / "pred.csv"
    out.parent.mkdir()
    proc = run_cli(str(small_model), str(folder), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out)
    assert rows[0] == ["cif_id", "target", "prediction"]
    assert [r[0] for r in rows[1:]] == ["MgO", "Si", "NaCl"]
    assert all(r[1] == "" and np.isfinite(float(r[2])) for r in rows[1:])
    assert "MAE" not in proc.stdout
    suffix = getattr(cgcnn.data, "CACHE_SUFFIX", ".npy")  # the graph cache's file suffix
    assert len(list((tmp_path / "cache").glob(f"*{suffix}"))) == 3
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.csv"]  # no temporary file left


def test_cli_missing_model(tmp_path, cif_folder):
    proc = run_cli(str(tmp_path / "no_such_model.pth.tar"), str(cif_folder), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_such_model.pth.tar" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "test_results.csv").exists()


def test_predict_uses_the_checkpoints_table_and_writes_nothing(tmp_path, atom_init_table):
    folder = write_folder(tmp_path / "bare", {"GaAs": crystals()["GaAs"]})  # no atom_init.json
    before = sorted(p.name for p in folder.iterdir())
    plain = make_checkpoint(tmp_path / "plain.pth.tar")
    with pytest.raises(InputError, match="atom_init.json not found"):
        predict(plain, folder, progress=False)
    own = make_checkpoint(tmp_path / "own.pth.tar", atom_init=atom_init_table)
    frame = predict(own, folder, progress=False)
    assert list(frame["cif_id"]) == ["GaAs"] and frame["target"].isna().all()
    assert sorted(p.name for p in folder.iterdir()) == before
    with_file = write_folder(tmp_path / "with", {"GaAs": crystals()["GaAs"]}, atom_init=atom_init_table)
    np.testing.assert_allclose(frame["prediction"], predict(plain, with_file, progress=False)["prediction"])


def test_predict_classification_probability(tmp_path, cif_folder):
    frame = predict(make_checkpoint(tmp_path / "cls.pth.tar", classification=True), cif_folder, progress=False)
    assert ((frame["prediction"] > 0) & (frame["prediction"] < 1)).all()
