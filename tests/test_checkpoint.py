"""Tests for cgcnn/checkpoint.py: safe loading of upstream and project checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgcnn import InputError
from cgcnn.checkpoint import SourceModel, load_checkpoint, save_atomic
from cgcnn.data import CIFData, GraphParams
from conftest import make_checkpoint, one_hot_table


class Namespace:
    """Stands for any class a pickle could name (upstream stored argparse options)."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class Payload:
    """Unpickling this would create a file: a loader that executes pickles would show it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_load_formats_with_numpy_scalars(tmp_path, cif_folder, legacy):
    path = make_checkpoint(
        tmp_path / "m.pth.tar", legacy=legacy,
        best_mae_error=np.float64(0.123),
        normalizer={"mean": np.float64(1.5), "std": np.float32(0.5)},
    )
    reference = make_checkpoint(tmp_path / "ref.pth.tar")
    ckpt = load_checkpoint(path)
    assert float(ckpt["best_mae_error"]) == pytest.approx(0.123)
    assert ckpt["args"]["task"] == "regression"
    for key, value in load_checkpoint(reference)["state_dict"].items():
        assert torch.equal(ckpt["state_dict"][key], value), key
    model = SourceModel.load(path)
    assert float(model.normalizer.mean) == 1.5 and float(model.normalizer.std) == 0.5
    assert model.crys_fea_len == 4 and not model.classification
    fea, pred = model.run(model.dataset(cif_folder), progress=False)
    fea_ref, pred_ref = SourceModel.load(reference).run(CIFData(cif_folder), progress=False)
    assert fea.shape == (4, 4)
    np.testing.assert_allclose(pred, pred_ref, rtol=1e-6)
    np.testing.assert_allclose(fea, fea_ref, rtol=1e-6)


def test_arbitrary_class_refused(tmp_path):
    path = make_checkpoint(tmp_path / "ns.pth.tar", args=Namespace(task="regression"))
    with pytest.raises(InputError, match="refused"):
        load_checkpoint(path)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_code_in_pickle_not_executed(tmp_path, legacy):
    marker = tmp_path / "executed"
    path = make_checkpoint(tmp_path / "evil.pth.tar", legacy=legacy, extra=Payload(marker))
    with pytest.raises(InputError, match="refused"):
        SourceModel.load(path)
    assert not marker.exists()


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "none.pth.tar")


def test_directory(tmp_path):
    with pytest.raises(InputError, match="folder"):
        load_checkpoint(tmp_path)


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.pth.tar"
    path.write_bytes(b"\x00\x01 this is not a checkpoint" * 20)
    with pytest.raises(InputError, match="garbage.pth.tar"):
        load_checkpoint(path)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_truncated(tmp_path, legacy):
    full = make_checkpoint(tmp_path / "full.pth.tar", legacy=legacy).read_bytes()
    path = tmp_path / "half.pth.tar"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(InputError, match="half.pth.tar"):
        load_checkpoint(path)


def test_dict_without_state_dict(tmp_path):
    path = tmp_path / "plain.pth.tar"
    torch.save({"epoch": 3, "weights": torch.zeros(3)}, path)
    with pytest.raises(InputError, match="not a CGCNN checkpoint"):
        load_checkpoint(path)


def test_classification_refused_where_regression_needed(tmp_path):
    path = make_checkpoint(tmp_path / "cls.pth.tar", classification=True)
    assert SourceModel.load(path).classification
    with pytest.raises(InputError, match="classification"):
        SourceModel.load(path, require_regression=True)


def test_edge_feature_mismatch(small_model, cif_folder):
    model = SourceModel.load(small_model)
    data = CIFData(cif_folder, params=GraphParams(radius=9.0))  # 46 Gaussians
    with pytest.raises(InputError, match="expects 41 edge features") as err:
        model.check_data(data)
    assert "gives 46" in str(err.value)


def test_atom_feature_mismatch(small_model, cif_folder, tmp_path):
    short = tmp_path / "atom_init_10.json"
    short.write_text(json.dumps(one_hot_table(length=10)))
    model = SourceModel.load(small_model)
    with pytest.raises(InputError, match="expects 41 edge features") as err:
        model.dataset(cif_folder, atom_init=short)
    assert "92 atom features" in str(err.value) and "gives 41 and 10" in str(err.value)


def test_embedded_atom_init_refuses_different_table(tmp_path, cif_folder):
    table = json.loads((cif_folder / "atom_init.json").read_text())
    path = make_checkpoint(tmp_path / "own.pth.tar", atom_init=table, graph=GraphParams().as_dict())
    model = SourceModel.load(path)
    assert model.atom_init is not None
    model.dataset(cif_folder)  # the same table: accepted
    other = dict(table)
    other["11"], other["17"] = table["17"], table["11"]
    (cif_folder / "atom_init.json").write_text(json.dumps(other))
    with pytest.raises(InputError, match="differs from the atom feature table"):
        model.dataset(cif_folder)


def test_save_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def broken(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_atomic(object(), path, saver=broken)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(InputError, match="does not exist"):
        save_atomic({}, tmp_path / "no" / "x.pt")


def test_save_atomic_gives_ordinary_permissions(tmp_path):
    """mkstemp creates 0600 files; results must be readable as open() would make them."""
    import os

    path = tmp_path / "results.csv"
    save_atomic(b"a,b\n", path, saver=lambda obj, f: f.write(obj))
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
