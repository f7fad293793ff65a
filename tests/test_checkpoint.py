"""Tests for cgcnn/model/checkpoint.py: safe loading of upstream and project checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgcnn import InputError
from cgcnn.data import CIFData, GraphParams
from cgcnn.model import SourceModel, load_checkpoint
from cgcnn.outputs import save_atomic
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


# --------------------------------------------------------------------------------------------------
# the one atomic writer (cgcnn/outputs/files.py)


def test_save_atomic_writes_through_a_symlink(tmp_path):
    """A link named as output keeps being a link; the file it leads to gets the new bytes."""
    import os

    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "results.csv"
    target.write_bytes(b"old")
    link = tmp_path / "results.csv"
    os.symlink(target, link)
    save_atomic(b"new", link, saver=lambda obj, f: f.write(obj))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in real_dir.iterdir()) == ["results.csv"]  # no temporary file left


@pytest.mark.skipif(not __import__("os").path.exists("/dev/null"), reason="no /dev/null")
def test_save_atomic_refuses_a_device(tmp_path):
    import os

    from cgcnn.outputs import check_output

    with pytest.raises(InputError, match="not a regular file"):
        check_output("/dev/null")
    link = tmp_path / "out.csv"
    os.symlink("/dev/null", link)
    with pytest.raises(InputError, match="not a regular file"):
        save_atomic(b"x", link, saver=lambda obj, f: f.write(obj))
    assert link.is_symlink() and os.path.realpath(link) == "/dev/null"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_save_atomic_cleans_up_on_interrupt(tmp_path, interrupt):
    path = tmp_path / "model.pth.tar"
    path.write_bytes(b"old")

    def interrupted(obj, f):
        f.write(b"partial")
        raise interrupt()

    with pytest.raises(interrupt):
        save_atomic(object(), path, saver=interrupted)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth.tar"]


def test_save_id_prop(tmp_path):
    from cgcnn.data import save_id_prop

    path = tmp_path / "id_prop.csv"
    assert save_id_prop(path, [("Si", 2.1739), ("NaCl", 0.85), ("new", None)]) == 3
    assert path.read_bytes() == b"Si,2.173900\nNaCl,0.850000\nnew\n"


def test_old_names_stay_importable():
    """Upstream CGCNN's and the previous version's import paths: ``cgcnn.data`` and ``cgcnn.model``."""
    import cgcnn.data
    import cgcnn.model
    from cgcnn.data import CIFData, GaussianDistance, collate_pool, read_structure  # noqa: F401
    from cgcnn.model import ConvLayer, CrystalGraphConvNet  # noqa: F401

    assert cgcnn.data.CIFData is cgcnn.data.dataset.CIFData
    assert cgcnn.data.collate_pool is cgcnn.data.dataset.collate_pool
    assert cgcnn.model.CrystalGraphConvNet is cgcnn.model.network.CrystalGraphConvNet
    assert callable(cgcnn.model.Normalizer) and callable(cgcnn.model.load_checkpoint)


def test_numpy1_scalar_alias_loads(tmp_path):
    """Checkpoints pickled under numpy 1 name ``numpy.core.multiarray.scalar`` (upstream's
    semi-metal-classification.pth.tar does); under numpy 2 that is an alias, still allowed."""
    import pickletools

    path = make_checkpoint(tmp_path / "np1.pth.tar", legacy=True, best_mae_error=np.float64(0.9586))
    raw = path.read_bytes()
    current = np.float64(0).__reduce__()[0].__module__  # the module numpy pickles scalars under now
    if current != "numpy.core.multiarray":
        # rewrite the pickled global as numpy 1 wrote it (same length names differ: rebuild the opcode)
        old = f"c{current}\nscalar\n".encode()
        assert old in raw, [op for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"][:3]
        raw = raw.replace(old, b"cnumpy.core.multiarray\nscalar\n")
        path.write_bytes(raw)
    assert b"numpy.core.multiarray\nscalar" in raw
    ckpt = load_checkpoint(path)
    assert float(ckpt["best_mae_error"]) == pytest.approx(0.9586)
    assert SourceModel.load(path).crys_fea_len == 4


def test_model_info_round_trip(small_model):
    from cgcnn.model import ModelInfo
    from cgcnn.model import make_checkpoint as make_ckpt

    table = {z: np.arange(3, dtype=np.float32) + z for z in (1, 8, 14)}
    info = ModelInfo(atom_init=table, graph=GraphParams(radius=6.0), target={"name": "log10 kappa_L"})
    model = SourceModel.load(small_model)
    ckpt = make_ckpt(model.net, torch.optim.SGD(model.net.parameters(), lr=0.1), model.normalizer, epoch=2,
                     best=0.5, args={"task": "regression"}, info=info)
    assert list(ckpt)[-3:] == ["atom_init", "graph", "target"]
    assert list(ckpt["atom_init"]) == ["1", "8", "14"]
    back = ModelInfo.from_checkpoint(ckpt)
    assert back.graph == GraphParams(radius=6.0) and back.target == {"name": "log10 kappa_L"}
    assert all(np.array_equal(back.atom_init[z], table[z]) for z in table)
    assert ModelInfo.from_checkpoint({}) == ModelInfo()


def test_normalizer_sample_of_at_most_500():
    from cgcnn.model import Normalizer

    targets = np.linspace(0.0, 3.0, 800)
    sample = np.random.RandomState(4).choice(targets, 500, replace=False)
    norm = Normalizer.from_targets(targets, seed=4)
    assert float(norm.mean) == pytest.approx(float(np.mean(sample.astype(np.float32))), rel=1e-6)
    few = Normalizer.from_targets(targets[:30], seed=4)
    assert float(few.mean) == pytest.approx(float(np.mean(targets[:30])), rel=1e-6)


def test_check_output_dir(tmp_path):
    from cgcnn.outputs import check_output_dir

    assert check_output_dir(tmp_path, ("a.csv",)) == tmp_path
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"  # can be made
    assert not (tmp_path / "new").exists()  # nothing created
    with pytest.raises(InputError, match="output folder does not exist"):
        check_output_dir(tmp_path / "new", must_exist=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(InputError, match="cannot create the output folder"):
        check_output_dir(tmp_path / "file" / "sub")
    (tmp_path / "a.csv").mkdir()
    with pytest.raises(InputError, match="a.csv: is a folder"):
        check_output_dir(tmp_path, ("a.csv",))
