"""Issue 24, class 9: every numeric option of every command is checked before any work: finite and
within the range its --help shows (cgcnn.cli.OPTION_RANGES); one line naming the option, exit 2,
every file as it was."""

from __future__ import annotations

import argparse
import importlib.util

import pytest
from test_safety_outputs import assert_error, snapshot

import cgcnn.model
import cgcnn.train
from cgcnn import evaluate, predict, train
from cgcnn.cli import OPTION_RANGES, check_options, run_main
from conftest import REPO

_spec = importlib.util.spec_from_file_location("transfer_learning_kappa", REPO / "transfer_learning_kappa.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

BAD = {
    "transfer": [
        ("-b", "0", "--batch-size must be at least 1"), ("-b", "1000000000", "--batch-size must be at most 100000"),
        ("-j", "-1", "--workers must not be negative"), ("-j", "100000", "--workers must be at most 1024"),
        ("--interval", "nan", "--interval must lie in [0.5, 1)"), ("--interval", "1", "--interval must lie in"),
        ("--interval", "0.2", "--interval must lie in"), ("--cv-folds", "-1", "--cv-folds must not be negative"),
        ("--cv-folds", "100000", "--cv-folds must be at most 1000"), ("-p", "-1", "--print-freq must not be negative"),
        ("--chunk-size", "0", "--chunk-size must be at least 1"),
        ("--chunk-size", "1000000000000", "--chunk-size must be at most 10000000"),
    ],
    "train": [
        ("--atom-fea-len", "100000000", "--atom-fea-len must be at most 1024"),
        ("--h-fea-len", "1000000000", "--h-fea-len must be at most 4096"),
        ("--max-num-nbr", "1000000000", "--max-num-nbr must be at most 1000"),
        ("--n-conv", "1000", "--n-conv must be at most 32"), ("--n-h", "1000000", "--n-h must be at most 32"),
        ("--lr", "inf", "--lr must be at most 10"), ("--lr", "-0.1", "--lr must be a positive number"),
        ("--momentum", "nan", "--momentum must be between 0 and 1"), ("--momentum", "5", "--momentum must be between"),
        ("--weight-decay", "-1", "--weight-decay must be between 0 and 1"),
        ("--weight-decay", "inf", "--weight-decay must be between 0 and 1"),
        ("--epochs", "1000000000000", "--epochs must be at most 1000000"),
        ("--start-epoch", "-1", "--start-epoch must not be negative"),
        ("--lr-milestones", "5", "-1", "--lr-milestones must not be negative, not -1"),
        ("--radius", "inf", "--radius must be at most 50"), ("--step", "nan", "--step must be a positive number"),
        ("-b", "1000000000", "--batch-size must be at most 100000"), ("-j", "1000000", "--workers must be at most"),
        ("-p", "-2", "--print-freq must not be negative"), ("--patience", "1000000000", "--patience must be at most"),
        ("--freeze-convs", "100", "--freeze-convs must be at most 32"),
        ("--train-size", "0", "--train-size must be at least 1"),
        ("--val-size", "10000000000", "--val-size must be at most"), ("--test-ratio", "nan", "--test-ratio must be"),
    ],
    "predict": [
        ("-b", "0", "--batch-size must be at least 1"), ("-b", "1000000000", "--batch-size must be at most"),
        ("-j", "-1", "--workers must not be negative"), ("-j", "1000000", "--workers must be at most 1024"),
        ("-p", "-1", "--print-freq must not be negative"), ("--chunk-size", "0", "--chunk-size must be at least 1"),
        ("--chunk-size", "1000000000", "--chunk-size must be at most"),
    ],
    "evaluate": [
        ("--finetune-lr", "nan", "--finetune-lr must be a positive number, not nan"),
        ("--finetune-lr", "-1", "--finetune-lr must be a positive number"),
        ("--finetune-lr", "inf", "--finetune-lr must be at most 10"),
        ("--finetune-patience", "-1", "--finetune-patience must not be negative"),
        ("--finetune", "-1", "--finetune must not be negative"), ("--finetune", "1000000000", "--finetune must be at"),
        ("--finetune-batch-size", "0", "--finetune-batch-size must be at least 1"),
        ("--splits", "0", "--splits must be at least 1"), ("--splits", "1000000", "--splits must be at most 1000"),
        ("--train-fraction", "1", "--train-fraction must lie in (0, 1)"),
        ("--train-fraction", "nan", "--train-fraction must lie in (0, 1)"),
        ("--kfold", "1", "--kfold must be at least 2"), ("--kfold", "1000000", "--kfold must be at most 1000"),
        ("--group-folds", "1", "--group-folds must be at least 2"), ("--interval", "1.5", "--interval must lie in"),
        ("-b", "0", "--batch-size must be at least 1"), ("-j", "-1", "--workers must not be negative"),
    ],
}
CASES = [(command, case) for command, cases in BAD.items() for case in cases]


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model or training is work: it must not start."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(cgcnn.model.SourceModel, "load", refuse)
    monkeypatch.setattr(cgcnn.train, "train", refuse)


@pytest.mark.parametrize("command, case", CASES, ids=[f"{c} {' '.join(case[:-1])}" for c, case in CASES])
def test_bad_numeric_option(capsys, tmp_path, cif_folder, small_model, no_work, command, case):
    *option, words = case
    out = tmp_path / "out"
    out.mkdir()
    argv = {
        "transfer": [str(small_model), str(cif_folder), "-q", "--last-layer", str(out / "ll.sav"),
                     "--test-results", str(out / "t.csv")],
        "train": [str(cif_folder), "--out-dir", str(out)],
        "predict": [str(small_model), str(cif_folder), "-q", "--out", str(out / "p.csv")],
        "evaluate": [str(small_model), str(cif_folder), "-q", "--out-dir", str(out / "ev")],
    }[command]
    main = {"transfer": tool.main, "train": train.main, "predict": predict.main, "evaluate": evaluate.main}[command]
    before = snapshot(tmp_path)
    code = run_main(main, [*argv, *option])
    line = assert_error(code, capsys.readouterr().err, words)
    assert line.startswith("error: --")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["transfer", "train", "predict", "evaluate"])
def test_every_numeric_option_has_a_range_in_its_help(command):
    parser = {"transfer": tool.build_parser, "train": train.build_parser, "evaluate": evaluate.build_parser,
              "predict": None}[command]
    if parser is None:  # cgcnn.predict builds its parser in main: read it from --help
        with pytest.raises(SystemExit):
            run_main(predict.main, ["--help"])
        return
    p = parser()
    numeric = [a for a in p._actions if a.type in (int, float) and not a.choices]
    assert numeric
    for action in numeric:
        assert action.dest in OPTION_RANGES, action.option_strings
        assert f"[{OPTION_RANGES[action.dest].text()}]" in action.help
    defaults = p.parse_args(["a", "b"] if command != "train" else ["a"])
    check_options(defaults)  # every default lies in its range


def test_predict_help_shows_the_ranges(capsys):
    with pytest.raises(SystemExit):
        run_main(predict.main, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--batch-size", "--workers", "--print-freq", "--chunk-size"):
        assert f"[{OPTION_RANGES[option[2:].replace('-', '_')].text()}]" in text


def test_values_inside_the_ranges_pass():
    check_options(argparse.Namespace(lr=10.0, momentum=0.0, interval=0.5, train_fraction=0.99, workers=0,
                                     lr_milestones=[0, 100], seed=7, quiet=True, atom_fea_len=1024, cv_folds=0))
