"""Graphs built by a pool of processes (``workers``) give the same graphs, features and errors as in one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cgcnn import InputError, available_cores
from cgcnn.data import CIFData, build_graphs
from cgcnn.model import SourceModel
from conftest import crystals, make_checkpoint, write_folder


@pytest.fixture
def folder(tmp_path, atom_init_table):
    """Twelve crystals: the four of conftest, three times each, interleaved."""
    all_ = crystals()
    structures = {f"{name}_{k}": all_[name] for k in range(3) for name in ("Si", "NaCl", "GaAs", "MgO")}
    targets = {cif_id: float(i) for i, cif_id in enumerate(structures)}
    return write_folder(tmp_path / "twelve", structures, targets, atom_init_table)


def same_graphs(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_array_equal(x.nbr_dist, y.nbr_dist)
        np.testing.assert_array_equal(x.nbr_fea_idx, y.nbr_fea_idx)


def test_available_cores():
    assert 1 <= available_cores() <= (torch.multiprocessing.cpu_count() or 1)


@pytest.mark.parametrize("chunk_size", [1, 5])
def test_pool_gives_the_graphs_of_one_process(folder, chunk_size):
    serial = list(build_graphs(CIFData(folder), workers=0))
    data = CIFData(folder)
    pooled = list(build_graphs(data, workers=2, chunk_size=chunk_size))
    same_graphs(serial, pooled)
    assert len(data._cache._data) == len(data)  # kept in this process, for data[i] and later runs


def test_pool_on_a_subset_in_its_order(folder):
    data = CIFData(folder)
    subset = torch.utils.data.Subset(data, [7, 2, 11, 0, 5])
    pooled = list(build_graphs(subset, workers=2, chunk_size=1))
    same_graphs([CIFData(folder).graph(i) for i in (7, 2, 11, 0, 5)], pooled)


@pytest.mark.parametrize("batch_size", [1, 5, 256])
def test_run_same_results_with_and_without_workers(tmp_path, folder, batch_size):
    model = SourceModel.load(make_checkpoint(tmp_path / "m.pth.tar"), device="cpu")
    fea0, pred0 = model.run(CIFData(folder), batch_size=batch_size, workers=0, progress=False)
    fea2, pred2 = model.run(CIFData(folder), batch_size=batch_size, workers=2, progress=False)
    feadef, preddef = model.run(CIFData(folder), batch_size=batch_size, progress=False)  # all cores
    np.testing.assert_array_equal(fea0, fea2)
    np.testing.assert_array_equal(pred0, pred2)
    np.testing.assert_array_equal(fea0, feadef)
    np.testing.assert_array_equal(pred0, preddef)
    assert fea0.shape == (12, model.crys_fea_len) and pred0.shape == (12,)


def test_run_on_a_subset_with_workers(tmp_path, folder):
    model = SourceModel.load(make_checkpoint(tmp_path / "m.pth.tar"), device="cpu")
    data = CIFData(folder)
    rows = [9, 1, 4, 10, 3]
    fea, pred = model.run(torch.utils.data.Subset(data, rows), batch_size=2, workers=2, progress=False)
    all_fea, all_pred = model.run(CIFData(folder), batch_size=12, workers=0, progress=False)
    np.testing.assert_allclose(fea, all_fea[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred, all_pred[rows], rtol=1e-6)


def test_worker_error_is_the_one_line_error_of_one_process(folder):
    (folder / "GaAs_1.cif").write_text("data_broken\n_cell_length_a 5\n")
    with pytest.raises(InputError) as serial:
        list(build_graphs(CIFData(folder), workers=0))
    with pytest.raises(InputError) as pooled:
        list(build_graphs(CIFData(folder), workers=2, chunk_size=1))
    assert str(pooled.value) == str(serial.value)
    assert "GaAs_1.cif" in str(pooled.value) and "\n" not in str(pooled.value)


def test_stopping_early_stops_the_pool(folder):
    graphs = build_graphs(CIFData(folder), workers=2, chunk_size=1, ahead=2)
    next(graphs)
    graphs.close()  # shuts the pool down (no processes left behind)
    import multiprocessing

    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
