"""Options out of range (issue 13, classes 4 and 5): one line and exit 2, no traceback, no file changed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from test_safety_outputs import assert_error, snapshot

from cgcnn import InputError, train
from cgcnn.cli import add_seed_option, run_main
from cgcnn.train import split_indices

SMALL = ["--epochs", "2", "-b", "2", "--atom-fea-len", "8", "--h-fea-len", "4", "--n-conv", "1"]


@pytest.fixture
def out(tmp_path) -> Path:
    """An output folder holding earlier outputs of cgcnn.train (stand-ins)."""
    folder = tmp_path / "out"
    folder.mkdir()
    for name in train.OUTPUTS:
        (folder / name).write_bytes(f"earlier {name}".encode())
    return folder


@pytest.mark.parametrize("seed", ["-1", str(2**32), "1e3", "x"])
def test_seed_out_of_range(capsys, tmp_path, cif_folder, out, seed):
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_main(train.main, [str(cif_folder), *SMALL, "--out-dir", str(out), "--seed", seed])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("python -m cgcnn.train: error: ")
    assert "--seed" in err and "2**32" in err
    assert snapshot(tmp_path) == before


def test_seed_option_for_other_tools():
    parser = argparse.ArgumentParser()
    add_seed_option(parser, default=7)
    assert parser.parse_args([]).seed == 7
    assert parser.parse_args(["--seed", str(2**32 - 1)]).seed == 2**32 - 1


BAD_OPTIONS = {
    # options: words of the one-line error
    ("--radius", "0"): ["--radius", "positive", "0.0"],
    ("--radius", "-8"): ["--radius", "positive"],
    ("--step", "0"): ["--step", "positive"],
    ("--step", "-0.2"): ["--step", "positive"],
    ("--step", "9"): ["--step 9.0", "smaller than --radius 8.0"],
    ("--max-num-nbr", "0"): ["--max-num-nbr", "at least 1"],
    ("--val-ratio", "-0.1"): ["--val-ratio", "between 0 and 1", "-0.1"],
    ("--test-ratio", "-0.1"): ["--test-ratio", "between 0 and 1"],
    ("--train-ratio", "-0.5"): ["--train-ratio", "between 0 and 1"],
    ("--test-ratio", "1.5"): ["--test-ratio", "between 0 and 1"],
    ("--val-size", "-1"): ["--val-size", "not be negative"],
    ("--test-size", "-2"): ["--test-size", "not be negative"],
    ("--train-size", "0"): ["--train-size", "at least 1"],
    ("--patience", "-1"): ["--patience", "not be negative"],
    ("--lr", "0"): ["--lr", "positive"],
    ("--lr", "nan"): ["--lr", "positive"],
    ("--freeze-convs", "-1"): ["--freeze-convs", "not be negative"],
    ("--epochs", "0"): ["--epochs", "at least 1"],
    ("--radius", "1e300"): ["--radius", "at most 50", "1e+300"],
    ("--step", "0.001"): ["--radius 8.0 and --step 0.001", "Gaussian edge features, more than 1000"],
    ("--lr-milestones", "-3"): ["--lr-milestones", "not be negative"],
    ("--freeze-convs", "2"): ["--freeze-convs 2", "only 1 convolution"],
    ("--task", "classification"): ["id_prop.csv", "targets 0 or 1", "Si has 2.17"],
}


@pytest.mark.parametrize("option", list(BAD_OPTIONS), ids=" ".join)
def test_train_option_out_of_range(capsys, tmp_path, cif_folder, out, option):
    before = snapshot(tmp_path)
    code = run_main(train.main, [str(cif_folder), *SMALL, "--out-dir", str(out), *option])
    assert_error(code, capsys.readouterr().err, *BAD_OPTIONS[option])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kwargs", [{"val_ratio": -0.1}, {"test_size": -1}, {"train_ratio": 1.2}])
def test_split_indices_refuses_negative_parts(kwargs):
    with pytest.raises(InputError):
        split_indices(10, seed=0, **kwargs)


def test_resume_from_a_checkpoint_of_another_shape(capsys, tmp_path, cif_folder):
    first = tmp_path / "first"
    first.mkdir()
    assert run_main(train.main, [str(cif_folder), *SMALL, "--out-dir", str(first)]) == 0
    capsys.readouterr()
    out = tmp_path / "second"
    out.mkdir()
    before = snapshot(tmp_path)
    resume = first / "checkpoint.pth.tar"
    code = run_main(train.main, [str(cif_folder), *SMALL[:4], "--atom-fea-len", "16", "--h-fea-len", "4",
                                 "--n-conv", "2", "--epochs", "3", "--out-dir", str(out), "--resume", str(resume)])
    line = assert_error(code, capsys.readouterr().err, resume.name, "embedding.weight is 8x92 in the checkpoint, "
                        "16x92 here", "--atom-fea-len 8", "--n-conv 1")
    assert "missing from the checkpoint" in line  # the second convolution
    assert snapshot(tmp_path) == before


def test_resume_with_another_optimizer(capsys, tmp_path, cif_folder):
    out = tmp_path / "out"
    out.mkdir()
    assert run_main(train.main, [str(cif_folder), *SMALL, "--out-dir", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    code = run_main(train.main, [str(cif_folder), *SMALL, "--epochs", "3", "--out-dir", str(out), "--optim", "Adam",
                                 "--resume", str(out / "checkpoint.pth.tar")])
    assert_error(code, capsys.readouterr().err, "checkpoint.pth.tar", "--optim SGD")
    assert snapshot(tmp_path) == before
