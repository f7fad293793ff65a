"""The source model on a device: ``device`` of SourceModel.load/run and ``--disable-cuda``.

The GPU tests run only where torch sees one (they skip cleanly elsewhere); the CPU
ones check that the device parameter and the option work everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cgcnn.data import CIFData
from cgcnn.model import CrystalGraphConvNet, SourceModel, batch_index, default_device
from cgcnn.predict import main as predict_main
from cgcnn.predict import predict
from conftest import make_checkpoint

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU (torch.cuda.is_available() is False)")


def test_default_device_follows_torch():
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_device(tmp_path, cif_folder):
    path = make_checkpoint(tmp_path / "m.pth.tar")
    model = SourceModel.load(path, device="cpu")
    assert model.device.type == "cpu"
    fea, pred = model.run(CIFData(cif_folder), workers=0, progress=False, device="cpu")
    default_fea, default_pred = SourceModel.load(path).run(CIFData(cif_folder), workers=0, progress=False)
    assert model.device.type == "cpu"
    np.testing.assert_allclose(fea, default_fea, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred, default_pred, rtol=1e-5)


def test_load_accepts_torch_device(tmp_path):
    model = SourceModel.load(make_checkpoint(tmp_path / "m.pth.tar"), device=torch.device("cpu"))
    assert all(p.device.type == "cpu" for p in model.net.parameters())


def test_disable_cuda_runs_on_the_cpu(tmp_path, cif_folder, monkeypatch):
    seen = []
    real_load = SourceModel.load.__func__

    def load(cls, path, require_regression=False, device=None):
        seen.append(device)
        return real_load(cls, path, require_regression, device)

    monkeypatch.setattr(SourceModel, "load", classmethod(load))
    path = make_checkpoint(tmp_path / "m.pth.tar")
    assert predict_main([str(path), str(cif_folder), "--disable-cuda", "-q", "--out", str(tmp_path / "a.csv")]) == 0
    assert predict_main([str(path), str(cif_folder), "-q", "--out", str(tmp_path / "b.csv")]) == 0
    assert seen == ["cpu", None]  # None: the GPU when there is one


def test_batch_index_as_upstream():
    idx = [torch.arange(0, 3), torch.arange(3, 4), torch.arange(4, 9)]
    torch.testing.assert_close(batch_index(idx, 9), torch.tensor([0, 0, 0, 1, 2, 2, 2, 2, 2]))
    shuffled = [torch.tensor([4, 0]), torch.tensor([1, 3, 2])]  # any partition of the atoms, not only runs
    torch.testing.assert_close(batch_index(shuffled, 5), torch.tensor([0, 1, 1, 1, 0]))


@needs_gpu
def test_gpu_agrees_with_cpu(tmp_path, cif_folder):
    path = make_checkpoint(tmp_path / "m.pth.tar")
    cpu = SourceModel.load(path, device="cpu").run(CIFData(cif_folder), batch_size=3, workers=0, progress=False)
    model = SourceModel.load(path, device="cuda")
    assert model.device.type == "cuda"
    gpu = model.run(CIFData(cif_folder), batch_size=3, workers=0, progress=False)
    np.testing.assert_allclose(gpu[0], cpu[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-5)


@needs_gpu
def test_gpu_default_and_run_moves_once(tmp_path, cif_folder):
    path = make_checkpoint(tmp_path / "m.pth.tar")
    model = SourceModel.load(path)
    assert model.device.type == "cuda"  # the GPU by default, as the original tool without --disable-cuda
    model.run(CIFData(cif_folder), workers=0, progress=False, device="cpu")
    assert model.device.type == "cpu"
    model.run(CIFData(cif_folder), workers=0, progress=False, device="cuda")
    assert model.device.type == "cuda"


@needs_gpu
def test_gpu_predict_agrees_with_cpu(tmp_path, cif_folder):
    path = make_checkpoint(tmp_path / "m.pth.tar")
    on_gpu = predict(path, cif_folder, progress=False)
    on_cpu = predict(path, cif_folder, progress=False, device="cpu")
    np.testing.assert_allclose(on_gpu["prediction"], on_cpu["prediction"], rtol=1e-5)


@needs_gpu
def test_gpu_network_agrees_with_cpu_on_a_large_batch():
    torch.manual_seed(0)
    net = CrystalGraphConvNet(92, 41, atom_fea_len=64, n_conv=4, h_fea_len=16).eval()
    n, m, b = 5000, 12, 500
    atom = torch.rand(n, 92)
    nbr = torch.rand(n, m, 41)
    idx = torch.randint(0, n, (n, m))
    crystals = list(torch.arange(n).chunk(b))
    with torch.inference_mode():
        cpu = net(atom, nbr, idx, crystals)
        gpu = net.cuda()(atom.cuda(), nbr.cuda(), idx.cuda(), [c.cuda() for c in crystals]).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-5)
