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
from conftest import REPO, make_checkpoint

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


BUNDLED = REPO / "models"


def twelve_models(device):
    from cgcnn.transfer import default_property_models, with_members

    paths, props = with_members([str(BUNDLED / "source.pth.tar")], default_property_models(BUNDLED / "source.pth.tar"))
    return [SourceModel.load(p, device=device) for p in [*paths, *props]]


@needs_gpu
def test_gpu_stack_of_the_twelve_networks_agrees_with_cpu():
    """On a GPU the recommended route's twelve networks run as one stacked call; they agree with each network
    alone on the CPU to 1e-5."""
    from cgcnn.data import collate_pool
    from cgcnn.model import ModelSet, NetworkStack

    cpu, gpu = twelve_models("cpu"), twelve_models("cuda")
    data = cpu[0].dataset(REPO / "data" / "sample")
    batch = collate_pool([data[i] for i in range(len(data))])[0]
    on_gpu = ModelSet(gpu, [None] * 12)
    assert isinstance(on_gpu.groups[0][2], NetworkStack) and on_gpu.groups[0][2].k == 12
    fg, pg = on_gpu.run({None: batch})
    fc, pc = ModelSet(cpu, [None] * 12).run({None: batch})
    for a, b, p, q in zip(fg, fc, pg, pc):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5)


@needs_gpu
def test_gpu_screening_agrees_with_cpu(tmp_path):
    """--train 0 on the GPU (the pool collates, this process copies and runs the stacked networks) gives the
    CPU's results to 1e-5 log10 (and the same rows)."""
    import subprocess
    import sys

    import pandas as pd

    tool = REPO / "transfer_learning_kappa.py"
    sample = REPO / "data" / "sample"
    fit = [sys.executable, str(tool), "--train", "1", str(BUNDLED / "source.pth.tar"), str(sample), "-q",
           "--last-layer-type", "ridge", "--cv-folds", "3", "--disable-cuda"]
    subprocess.run(fit, cwd=tmp_path, check=True, capture_output=True)
    out = {}
    for name, extra in {"gpu": [], "cpu": ["--disable-cuda"]}.items():
        cmd = [sys.executable, str(tool), "--train", "0", str(BUNDLED / "source.pth.tar"), str(sample), "-q",
               "-b", "16", "--results", f"{name}.csv", "--test-results", f"{name}_test.csv", *extra]
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
        out[name] = pd.read_csv(tmp_path / f"{name}.csv")
    assert list(out["gpu"].cif_id) == list(out["cpu"].cif_id)
    for column in ("prediction", "prediction_low", "prediction_high"):
        np.testing.assert_allclose(out["gpu"][column], out["cpu"][column], rtol=0, atol=1e-5)
