"""python -m cgcnn.train on a small folder: outputs, seeds, resume and fine-tuning."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from cgcnn.checkpoint import SourceModel, load_checkpoint
from cgcnn.train import main, split_indices
from conftest import REPO, one_hot_table, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """20 rocksalt and zincblende crystals; target a smooth function of the lattice constant."""
    structures, targets = {}, {}
    for i in range(20):
        a = 4.0 + 0.1 * i
        if i % 2:
            s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        else:
            s = Structure.from_spacegroup("F-43m", Lattice.cubic(a + 1), ["Ga", "As"], [[0, 0, 0], [0.25] * 3])
        structures[f"x{i:02d}"] = s
        targets[f"x{i:02d}"] = round(2.5 - 0.3 * a + 0.2 * (i % 2), 4)
    return write_folder(tmp_path_factory.mktemp("train") / "data", structures, targets, one_hot_table())


OPTS = ["--epochs", "4", "-b", "8", "--atom-fea-len", "8", "--h-fea-len", "4", "--n-conv", "1", "-p", "1"]


def train(folder, out, *extra):
    out.mkdir(exist_ok=True)
    assert main([str(folder), *OPTS, "--out-dir", str(out), *extra]) == 0
    return out


def test_split_is_disjoint_and_seeded():
    tr, va, te = split_indices(100, seed=3)
    assert (len(tr), len(va), len(te)) == (80, 10, 10)
    assert len(set(tr) | set(va) | set(te)) == 100
    again = split_indices(100, seed=3)
    assert all((x == y).all() for x, y in zip((tr, va, te), again))
    assert not (split_indices(100, seed=4)[0] == tr).all()
    tr, va, te = split_indices(50, seed=0, train_size=30, val_size=5, test_size=7)
    assert (len(tr), len(va), len(te)) == (30, 5, 7)


def test_outputs_and_checkpoint_contents(folder, tmp_path, capsys):
    out = train(folder, tmp_path / "run", "--target-name", "log10 kappa_L", "--target-transform", "log10")
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pth.tar", "model_best.pth.tar", "test_results.csv"}
    err = capsys.readouterr().err
    assert err.count("train loss") == 4 and "test MAE" in err
    ckpt = load_checkpoint(out / "model_best.pth.tar")
    assert set(ckpt) >= {"state_dict", "normalizer", "args", "epoch", "best_mae_error", "optimizer",
                         "atom_init", "graph", "target"}
    assert ckpt["graph"] == {"radius": 8.0, "max_num_nbr": 12, "dmin": 0.0, "step": 0.2}
    assert ckpt["target"]["name"] == "log10 kappa_L"
    assert len(ckpt["atom_init"]) == 100
    assert not any(str(tmp_path) in str(v) for v in ckpt["args"].values())  # no machine paths
    results = pd.read_csv(out / "test_results.csv")
    assert list(results.columns) == ["cif_id", "target", "prediction"]
    _, _, test_idx = split_indices(20, seed=0)
    assert sorted(results.cif_id) == sorted(f"x{i:02d}" for i in test_idx)
    # the project's checkpoint is a source model for the transfer tool
    model = SourceModel.load(out / "model_best.pth.tar", require_regression=True)
    assert model.crys_fea_len == 4 and model.atom_init is not None


def test_same_seed_same_model(folder, tmp_path):
    a = load_checkpoint(train(folder, tmp_path / "a", "--seed", "5") / "checkpoint.pth.tar")
    b = load_checkpoint(train(folder, tmp_path / "b", "--seed", "5") / "checkpoint.pth.tar")
    c = load_checkpoint(train(folder, tmp_path / "c", "--seed", "6") / "checkpoint.pth.tar")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


def test_resume_continues_to_the_same_model(folder, tmp_path):
    full = load_checkpoint(train(folder, tmp_path / "full") / "checkpoint.pth.tar")
    half = tmp_path / "half"
    half.mkdir()
    assert main([str(folder), *OPTS[:1], "2", *OPTS[2:], "--out-dir", str(half)]) == 0
    assert load_checkpoint(half / "checkpoint.pth.tar")["epoch"] == 2
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    assert main([str(folder), *OPTS, "--out-dir", str(resumed), "--resume", str(half / "checkpoint.pth.tar")]) == 0
    after = load_checkpoint(resumed / "checkpoint.pth.tar")
    assert after["epoch"] == 4
    # shuffling restarts with the seed on resume, so weights differ; the run must still be a valid model
    assert set(after["state_dict"]) == set(full["state_dict"])


def test_pretrained_with_frozen_layers(folder, tmp_path):
    base = train(folder, tmp_path / "base", "--target-name", "log10 kappa_L") / "model_best.pth.tar"
    before = load_checkpoint(base)["state_dict"]
    small = tmp_path / "small"  # a high-fidelity set without atom_init.json: the model's table is used
    shutil.copytree(folder, small)
    (small / "atom_init.json").unlink()
    out = tmp_path / "fine"
    out.mkdir()
    assert main([str(small), "--pretrained", str(base), "--freeze-embedding", "--freeze-convs", "1",
                 "--epochs", "3", "-b", "8", "--optim", "Adam", "--lr", "0.01", "--patience", "2",
                 "--out-dir", str(out), "-p", "1"]) == 0
    after = load_checkpoint(out / "checkpoint.pth.tar")["state_dict"]
    for k in before:
        if k.startswith("embedding.") or k.startswith("convs.0."):
            assert torch.equal(before[k], after[k]), k  # frozen, BatchNorm statistics included
    assert not torch.equal(before["fc_out.weight"], after["fc_out.weight"])
    assert load_checkpoint(out / "model_best.pth.tar")["target"]["name"] == "log10 kappa_L"


def test_command_line(folder, tmp_path):
    out = tmp_path / "cli"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "cgcnn.train", str(folder), *OPTS, "--out-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model_best.pth.tar").is_file()
    mae = float(proc.stderr.split("test MAE of the best model:")[1].split()[0])
    assert np.isfinite(mae)
