"""cgcnn.peek reads a checkpoint's graph parameters without torch, as torch.load would give them, and
runs nothing from the file."""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import pytest
import torch

from cgcnn.checkpoint import ModelInfo
from cgcnn.graph import GraphParams
from cgcnn.peek import read_graph_params
from cgcnn.source import SourceModel

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "models" / "cgcnn_original"


def ckpt(graph=None, **extra) -> dict:
    out = {"epoch": 3, "state_dict": {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(4)},
           "normalizer": {"mean": torch.tensor(0.5), "std": torch.tensor(1.5)}, "args": {"radius": 8}, **extra}
    if graph is not None:
        out["graph"] = graph
    return out


@pytest.mark.parametrize("zipped", [True, False])
def test_graph_params_as_torch_load(tmp_path, zipped):
    graph = {"radius": 6.5, "max_num_nbr": 9, "dmin": 0.0, "step": 0.25}
    for name, content in (("project", ckpt(graph)), ("upstream", ckpt())):
        path = tmp_path / f"{name}.pth.tar"
        torch.save(content, path, _use_new_zipfile_serialization=zipped)
        want = ModelInfo.from_checkpoint(torch.load(path, weights_only=True)).graph
        assert read_graph_params(path) == want
    assert read_graph_params(tmp_path / "project.pth.tar") == GraphParams(6.5, 9, 0.0, 0.25)
    assert read_graph_params(tmp_path / "upstream.pth.tar") == GraphParams()


def test_bundled_and_original_checkpoints():
    paths = sorted((REPO / "models").glob("*.pth.tar")) + sorted(SHARED.glob("*.pth.tar"))
    assert paths
    for path in paths:
        assert read_graph_params(path) == SourceModel.load(path).params, path


@pytest.mark.parametrize("zipped", [True, False])
def test_foreign_classes_are_not_read(tmp_path, zipped):
    path = tmp_path / "namespace.pth.tar"
    torch.save(ckpt(args=argparse.Namespace(radius=8)), path, _use_new_zipfile_serialization=zipped)
    assert read_graph_params(path) is None


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_nothing_runs_and_bad_files_give_none(tmp_path):
    marker = tmp_path / "ran"
    evil = _Evil()
    evil.marker = marker
    path = tmp_path / "evil.pth.tar"
    path.write_bytes(pickle.dumps(evil))
    assert read_graph_params(path) is None
    assert not marker.exists()
    (tmp_path / "text.pth.tar").write_text("not a checkpoint")
    assert read_graph_params(tmp_path / "text.pth.tar") is None
    assert read_graph_params(tmp_path / "missing.pth.tar") is None
    torch.save({"graph": "radius 8"}, tmp_path / "odd.pth.tar")
    assert read_graph_params(tmp_path / "odd.pth.tar") is None
