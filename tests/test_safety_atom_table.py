"""A crafted atom feature table (issue 24, class 7): keys are atomic numbers 1 … 118 and vectors of a
sane equal length, checked before anything is allocated, in ``atom_init.json``, ``--atom-init`` and the
table a checkpoint stores; a bad one is one line naming the file, never a traceback or a huge allocation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_safety_outputs import assert_error, snapshot

from cgcnn import InputError, predict
from cgcnn.cli import run_main
from cgcnn.data import MAX_ATOM_FEATURES, CIFData, atom_table_array, atom_table_from_dict, load_atom_init
from conftest import crystals, make_checkpoint, one_hot_table, write_folder

BAD = {
    "huge key": ({"1": [1.0, 0.0], "99999999999999": [0.0, 1.0]}, "99999999999999"),
    "negative key": ({"-5": [1.0, 0.0], "1": [0.0, 1.0]}, "-5"),
    "zero key": ({"0": [1.0, 0.0], "1": [0.0, 1.0]}, "'0'"),
    "119": ({"119": [1.0, 0.0], "1": [0.0, 1.0]}, "119"),
    "non-integer key": ({"1.5": [1.0, 0.0], "1": [0.0, 1.0]}, "1.5"),
    "symbol key": ({"H": [1.0, 0.0]}, "'H'"),
    "enormous vector": ({"1": [0.0] * (MAX_ATOM_FEATURES + 1)}, f"{MAX_ATOM_FEATURES + 1} features"),
    "not a list": ({"1": "abc"}, "list of numbers"),
    "nested": ({"1": [[1.0], [2.0]]}, "flat list"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_table_is_refused_before_allocating(tmp_path, case):
    table, word = BAD[case]
    path = tmp_path / "atom_init.json"
    path.write_text(json.dumps(table))
    with pytest.raises(InputError) as info:
        load_atom_init(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and word in msg, msg


def test_good_table_unchanged():
    table = {str(z): [float(z), 1.0] for z in (1, 8, 118)}
    checked = atom_table_from_dict(table)
    array = atom_table_array(checked)
    assert array.shape == (119, 2) and array[118, 0] == 118.0 and np.isnan(array[2]).all()


def test_array_of_an_unchecked_table_is_a_programming_error():
    with pytest.raises(ValueError):
        atom_table_array({10**12: np.zeros(2, np.float32)})


@pytest.mark.parametrize("case", ["huge key", "negative key", "non-integer key", "enormous vector"])
def test_bad_atom_init_of_a_data_folder_from_the_command_line(capsys, tmp_path, small_model, case):
    """python -m cgcnn.predict on a folder whose atom_init.json is hostile: exit 2, one line, nothing written."""
    table, word = BAD[case]
    folder = write_folder(tmp_path / "data", crystals(), atom_init=one_hot_table())
    (folder / "atom_init.json").write_text(json.dumps(table))
    before = snapshot(tmp_path)
    code = run_main(predict.main, [str(small_model), str(folder), "-q", "-j", "0", "--out", str(tmp_path / "p.csv")])
    assert_error(code, capsys.readouterr().err, folder / "atom_init.json", word)
    assert snapshot(tmp_path) == before


def test_bad_atom_init_option(capsys, tmp_path, small_model):
    folder = write_folder(tmp_path / "data", crystals(), atom_init=one_hot_table())
    bad = tmp_path / "mine.json"
    bad.write_text(json.dumps(BAD["huge key"][0]))
    code = run_main(predict.main, [str(small_model), str(folder), "-q", "-j", "0", "--atom-init", str(bad),
                                   "--out", str(tmp_path / "p.csv")])
    assert_error(code, capsys.readouterr().err, bad, "99999999999999")
    with pytest.raises(InputError, match="mine.json"):
        CIFData(folder, atom_init=bad)


@pytest.mark.parametrize("case", ["huge key", "negative key", "non-integer key", "enormous vector"])
def test_bad_table_stored_in_a_checkpoint(capsys, tmp_path, case):
    """The checkpoint's own table is checked as a file's is, naming the checkpoint."""
    table, word = BAD[case]
    path = make_checkpoint(tmp_path / "model.pth.tar", seed=2)
    ckpt = torch.load(path, weights_only=False)
    ckpt["atom_init"] = table
    torch.save(ckpt, path)
    folder = write_folder(tmp_path / "data", crystals(), atom_init=None)
    code = run_main(predict.main, [str(path), str(folder), "-q", "-j", "0", "--out", str(tmp_path / "p.csv")])
    line = assert_error(code, capsys.readouterr().err, path, "stored atom feature table", word)
    assert "TiB" not in line
    assert not (tmp_path / "p.csv").exists()
