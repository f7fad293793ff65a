"""Issue 13, class 1: a checkpoint or atom table holding NaN is refused in one line (no empty predictions)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cgcnn.cli import run_main
from conftest import REPO, crystals, make_checkpoint, one_hot_table, write_folder

_spec = importlib.util.spec_from_file_location("transfer_learning_kappa", REPO / "transfer_learning_kappa.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def _nan_checkpoint(tmp_path, where: str):
    path = make_checkpoint(tmp_path / "model.pth.tar", seed=2)
    ckpt = torch.load(path, weights_only=False)
    if where == "weights":
        ckpt["state_dict"]["conv_to_fc.weight"][0, 0] = float("nan")
    elif where == "normalizer":
        ckpt["normalizer"]["std"] = torch.tensor(float("nan"))
    else:
        table = one_hot_table()
        table["14"][0] = float("nan")
        ckpt["atom_init"] = table
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("where", ["weights", "normalizer", "atom table"])
def test_checkpoint_with_nan_is_refused(capsys, tmp_path, where):
    model = _nan_checkpoint(tmp_path, where)
    data = write_folder(tmp_path / "data", crystals(), {k: 1.0 + 0.1 * i for i, k in enumerate(crystals())},
                        atom_init=None if where == "atom table" else one_hot_table())
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    code = run_main(tool.main, [str(model), str(data), "--train", "1", "-q", "--last-layer",
                                str(tmp_path / "ll.sav"), "--test-results", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1
    assert "NaN" in err or "not usable" in err
    assert not (tmp_path / "ll.sav").exists() and not (tmp_path / "t.csv").exists()
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_atom_init_json_with_nan_is_refused(capsys, tmp_path):
    model = make_checkpoint(tmp_path / "model.pth.tar", seed=2)
    table = one_hot_table()
    data = write_folder(tmp_path / "data", crystals(), {k: 1.0 for k in crystals()}, atom_init=table)
    (data / "atom_init.json").write_text(json.dumps(table).replace("1.0", "NaN", 1))
    code = run_main(tool.main, [str(model), str(data), "--train", "1", "-q", "--last-layer", str(tmp_path / "ll.sav"),
                                "--test-results", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "atom_init.json" in err and "NaN" in err and err.count("\n") == 1
