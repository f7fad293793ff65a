"""torch's threads while a pool of graph-building processes shares the cores (cgcnn.model.source.network_threads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cgcnn import available_cores
from cgcnn.model import network_threads


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_no_pool_changes_nothing(threads):
    with network_threads(0):
        assert torch.get_num_threads() == threads
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("workers", [None, 1, 2, 64])
def test_the_network_gets_the_cores_the_pool_leaves_at_least_one(threads, workers):
    pool = available_cores() if workers is None else workers
    with network_threads(workers):
        assert torch.get_num_threads() == max(1, min(threads, available_cores() - pool))
    assert torch.get_num_threads() == threads  # restored


def test_restored_after_an_error(threads):
    with pytest.raises(RuntimeError), network_threads(None):
        raise RuntimeError("stop")
    assert torch.get_num_threads() == threads


def test_same_outputs_with_one_thread_or_several(threads):
    """The layers of the network give the same bits with one thread as with all of them."""
    from cgcnn.model import CrystalGraphConvNet

    torch.manual_seed(0)
    net = CrystalGraphConvNet(92, 41).eval()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    n_cryst, n_atoms, m = 300, 3000, 12
    atom_fea = torch.rand(n_atoms, 92)
    nbr_fea = torch.rand(n_atoms, m, 41)
    nbr_fea_idx = torch.randint(0, n_atoms, (n_atoms, m))
    crystal_atom_idx = list(torch.arange(n_atoms).chunk(n_cryst))
    outs = []
    for n in sorted({1, threads, max(threads, 2)}):
        torch.set_num_threads(n)
        with torch.inference_mode():
            outs.append(net.crystal_features(atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx).numpy())
    for out in outs[1:]:
        np.testing.assert_array_equal(outs[0], out)
