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

from cgcnn import InputError
from cgcnn.model import SourceModel, load_checkpoint
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


def test_start_epoch_runs_the_rest_of_the_schedule(folder, tmp_path, capsys):
    out = train(folder, tmp_path / "late", "--start-epoch", "2")
    ckpt = load_checkpoint(out / "checkpoint.pth.tar")
    assert ckpt["epoch"] == 4 and ckpt["args"]["start_epoch"] == 2
    err = capsys.readouterr().err
    assert err.count("train loss") == 2 and "epoch    3/4" in err
    with pytest.raises(InputError, match="--start-epoch 4 leaves no epoch"):
        main([str(folder), *OPTS, "--out-dir", str(out), "--start-epoch", "4"])


def test_start_epoch_past_a_milestone_starts_with_the_dropped_rate(folder, tmp_path):
    out = train(folder, tmp_path / "drop", "--start-epoch", "2", "--lr-milestones", "1", "--lr", "0.5")
    groups = load_checkpoint(out / "checkpoint.pth.tar")["optimizer"]["param_groups"]
    assert groups[0]["initial_lr"] == 0.5 and groups[0]["lr"] == pytest.approx(0.05)


def test_resume_without_normalizer_is_one_line(folder, tmp_path, capsys):
    from cgcnn.cli import run_main

    half = train(folder, tmp_path / "half", "--epochs", "2") / "checkpoint.pth.tar"
    ckpt = load_checkpoint(half)
    del ckpt["normalizer"]
    torch.save(ckpt, tmp_path / "no_norm.pth.tar")
    out = tmp_path / "resumed"
    out.mkdir()
    code = run_main(main, [str(folder), *OPTS, "--out-dir", str(out), "--resume", str(tmp_path / "no_norm.pth.tar")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"error: {tmp_path / 'no_norm.pth.tar'}: checkpoint has no normalizer "
                                            "(mean and std of the targets); cannot resume")
    # a checkpoint that has trained all the epochs asked for: an error, not a silent exit 0
    code = run_main(main, [str(folder), *OPTS, "--out-dir", str(out), "--resume", str(half), "--epochs", "2"])
    assert code == 2 and "already trained 2 epochs" in capsys.readouterr().err


def test_settings_objects_without_argparse(folder, tmp_path):
    """The library takes settings objects; the command line only maps its options onto them."""
    from cgcnn.train import FitSettings, NetworkSettings, TrainSettings, build_parser, settings_from_args
    from cgcnn.train import train as train_run

    out = tmp_path / "lib"
    out.mkdir()
    settings = TrainSettings(data=folder, out_dir=out, fit=FitSettings(epochs=4, batch_size=8, print_freq=1),
                             network=NetworkSettings(atom_fea_len=8, h_fea_len=4, n_conv=1))
    result = train_run(settings)
    assert result.epochs == 4 and np.isfinite(result.test)
    cli = settings_from_args(build_parser().parse_args([str(folder), *OPTS, "--out-dir", str(out)]))
    assert cli.fit == settings.fit and cli.network == settings.network and cli.split == settings.split
    stored = load_checkpoint(out / "checkpoint.pth.tar")["args"]
    assert stored == settings.record()


def test_finetune_keeps_the_source_and_freezes_the_embedding(folder, tmp_path):
    from cgcnn.train import FitSettings, finetune

    base = train(folder, tmp_path / "base") / "model_best.pth.tar"
    source = SourceModel.load(base)
    data = source.dataset(folder)
    before = {k: v.clone() for k, v in source.net.state_dict().items()}
    tuned = finetune(source, data, np.arange(14), np.arange(14, 17), FitSettings(epochs=2, batch_size=8, lr=0.01,
                                                                                  optim="Adam"))
    assert all(torch.equal(before[k], v) for k, v in source.net.state_dict().items())  # source untouched
    after = tuned.net.state_dict()
    assert torch.equal(after["embedding.weight"], before["embedding.weight"])
    assert not torch.equal(after["fc_out.weight"], before["fc_out.weight"])
    assert float(tuned.normalizer.mean) == pytest.approx(float(np.mean(data.targets[:14])), rel=1e-6)
