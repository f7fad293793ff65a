"""Threads: the networks run with a fixed number of torch threads (cgcnn.model.network_threads), a pool's
parent runs one thread of torch and BLAS (cgcnn.data.single_threaded), so results do not depend on the
machine's cores or on -j."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from cgcnn.data import CIFData, single_threaded
from cgcnn.model import NETWORK_THREADS, SourceModel, network_threads
from conftest import REPO


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_fixed_threads_and_restored(threads):
    torch.set_num_threads(3)
    with network_threads():
        assert torch.get_num_threads() == NETWORK_THREADS == 1
    assert torch.get_num_threads() == 3
    with pytest.raises(RuntimeError), network_threads():
        raise RuntimeError("stop")
    assert torch.get_num_threads() == 3


def test_single_threaded_limits_blas_and_torch(threads):
    torch.set_num_threads(2)
    with single_threaded():
        assert torch.get_num_threads() == 1
        assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
    assert torch.get_num_threads() == 2


@pytest.mark.skipif(not (REPO / "models" / "source.pth.tar").is_file(), reason="needs the bundled model")
def test_outputs_do_not_depend_on_the_threads_torch_had(threads):
    """torch splits some reductions by thread count (3 threads give other last bits than 1 on some
    machines); a source model's run gives the same bits whatever the process had set."""
    model = SourceModel.load(REPO / "models" / "source.pth.tar", device="cpu")
    outs = []
    for n in (1, 3, 4):
        torch.set_num_threads(n)
        outs.append(model.run(CIFData(REPO / "data" / "sample"), batch_size=31, workers=0, progress=False))
        assert torch.get_num_threads() == n
    for fea, pred in outs[1:]:
        np.testing.assert_array_equal(fea, outs[0][0])
        np.testing.assert_array_equal(pred, outs[0][1])
