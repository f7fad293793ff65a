"""Compatibility with upstream CGCNN: the original models on 40 reference structures.

Uses ``shared/models/cgcnn_original`` next to the repository (skipped when absent):
predictions of ``python -m cgcnn.predict`` and the library's ``crys_fea`` must equal
what the upstream code computed (``reference/<model>.csv``) to 1e-5.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cgcnn.model import SourceModel

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models" / "cgcnn_original"
REFERENCE = MODELS / "reference"

pytestmark = pytest.mark.skipif(
    not (REFERENCE / "structures.txt").is_file(), reason="shared/models/cgcnn_original/reference not available"
)


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory) -> Path:
    """The 40 reference structures, ``id_prop.csv`` with ids only in the listed order,
    and the models' ``atom_init.json``, copied into a temporary folder."""
    folder = tmp_path_factory.mktemp("reference")
    ids = []
    for line in (REFERENCE / "structures.txt").read_text().split():
        src = SHARED / line
        shutil.copy(src, folder / src.name)
        ids.append(src.stem)
    (folder / "id_prop.csv").write_text("\n".join(ids) + "\n")
    shutil.copy(MODELS / "atom_init.json", folder / "atom_init.json")
    return folder


@pytest.mark.parametrize("model", ["gong2021_source", "bulk-moduli", "formation-energy-per-atom"])
def test_matches_upstream(model, reference_folder, tmp_path):
    checkpoint = MODELS / f"{model}.pth.tar"
    if not checkpoint.is_file():
        pytest.skip(f"{checkpoint.name} not available")
    ref = pd.read_csv(REFERENCE / f"{model}.csv")
    out = tmp_path / "predictions.csv"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "cgcnn.predict", str(checkpoint), str(reference_folder), "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(out)
    assert list(got.columns) == ["cif_id", "target", "prediction"]
    assert list(got["cif_id"]) == list(ref["cif_id"])
    assert got["target"].isna().all()
    np.testing.assert_allclose(got["prediction"], ref["prediction"], rtol=1e-5, atol=1e-6)

    source = SourceModel.load(checkpoint)
    crys_fea, prediction = source.run(source.dataset(reference_folder), progress=False)
    want = ref[[f"crys_fea_{k}" for k in range(source.crys_fea_len)]].to_numpy()
    assert crys_fea.shape == want.shape
    np.testing.assert_allclose(crys_fea, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prediction, ref["prediction"], rtol=1e-5, atol=1e-6)
