"""cgcnn.model.stack: the networks of a run as one batched call (NetworkStack) and grouped by input (ModelSet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cgcnn.data import collate_pool
from cgcnn.model import ModelSet, NetworkStack, SourceModel, run_batches
from conftest import REPO, make_checkpoint

MODELS = REPO / "models"


@pytest.fixture(scope="module")
def twelve():
    """The recommended route's twelve networks (three members × source, Debye, bulk, shear) on the CPU."""
    from cgcnn.transfer import default_property_models, with_members

    if not (MODELS / "seed2" / "shear_modulus.pth.tar").is_file():
        pytest.skip("needs the bundled models")
    paths, props = with_members([str(MODELS / "source.pth.tar")], default_property_models(MODELS / "source.pth.tar"))
    return [SourceModel.load(p, device="cpu") for p in [*paths, *props]]


def sample_batch(model):
    data = model.dataset(REPO / "data" / "sample")
    return collate_pool([data[i] for i in range(len(data))])[0]


def test_stack_agrees_with_each_network_alone(twelve):
    """One batched call for the twelve networks gives each one's crys_fea and prediction to 1e-6 (float32)."""
    batch = sample_batch(twelve[0])
    keys = [None] * len(twelve)
    alone = ModelSet(twelve, keys, stack=False)
    stacked = ModelSet(twelve, keys, stack=True)
    assert alone.groups[0][2] is None and isinstance(stacked.groups[0][2], NetworkStack)
    assert stacked.groups[0][2].k == 12
    fa, pa = alone.run({None: batch})
    fs, ps = stacked.run({None: batch})
    for model, a, s, p, q in zip(twelve, fa, fs, pa, ps):
        assert a.dtype == s.dtype == np.float32 and a.shape == s.shape == (62, model.crys_fea_len)
        np.testing.assert_allclose(s, a, rtol=0, atol=1e-6 * np.abs(a).max())
        np.testing.assert_allclose(q, p, rtol=0, atol=1e-6)
    # the per-model path is each network's own forward pass, bit for bit
    with torch.inference_mode():
        own = twelve[5].net.crystal_features(*batch).numpy()
    np.testing.assert_array_equal(fa[5], own)


def test_models_of_other_architecture_or_input_run_alone(tmp_path, twelve):
    """A model of another architecture, or reading another input, gets a group of its own; every model's
    outputs are those of its own run."""
    small = SourceModel.load(make_checkpoint(tmp_path / "small.pth.tar", nbr_fea_len=41), device="cpu")
    models = [twelve[0], small, twelve[1], twelve[2]]
    keys = ["a", "a", "a", "b"]
    ms = ModelSet(models, keys, stack=True)
    sizes = sorted((len(members), runner is not None) for _, members, runner in ms.groups)
    assert sizes == [(1, False), (1, False), (2, True)]
    batch = sample_batch(twelve[0])
    feas, preds = ms.run({"a": batch, "b": batch})
    for model, fea, pred in zip(models, feas, preds):
        with torch.inference_mode():
            crys = model.net.crystal_features(*batch)
            own_fea, own_pred = model.outputs(crys, model.net.fc_out(crys))
        np.testing.assert_allclose(fea, own_fea, rtol=0, atol=1e-6 * np.abs(own_fea).max())
        np.testing.assert_allclose(pred, own_pred, rtol=0, atol=1e-6)


def test_stack_refuses_mixed_architectures(tmp_path, twelve):
    small = SourceModel.load(make_checkpoint(tmp_path / "small.pth.tar"), device="cpu")
    with pytest.raises(ValueError):
        NetworkStack([twelve[0].net, small.net])


def test_run_batches_as_each_source_model_run(twelve):
    """run_batches over a data folder (graphs from one dataset, three batches) gives what each model's own
    SourceModel.run gives, bit for bit on the CPU."""
    models = twelve[:2]
    data = models[0].dataset(REPO / "data" / "sample")
    feas, preds = run_batches(ModelSet(models, [None, None]), {None: data}, batch_size=25, workers=0, progress=False)
    for model, fea, pred in zip(models, feas, preds):
        own_fea, own_pred = model.run(models[0].dataset(REPO / "data" / "sample"), batch_size=25, workers=0,
                                      progress=False)
        np.testing.assert_array_equal(fea, own_fea)
        np.testing.assert_array_equal(pred, own_pred)


def test_a_batch_runs_in_slices_as_each_slice_alone(twelve, monkeypatch):
    """On a CPU a batch runs in slices of consecutive crystals, within blocks of SLICE_CRYSTALS from its start,
    of at most SLICE_ATOMS atoms: the outputs are those of each slice collated and run alone, bit for bit."""
    import cgcnn.model.stack as stack

    monkeypatch.setattr(stack, "SLICE_ATOMS", 100)
    monkeypatch.setattr(stack, "SLICE_CRYSTALS", 16)
    model = twelve[3]
    data = model.dataset(REPO / "data" / "sample")
    items = [data[i] for i in range(len(data))]
    batch = collate_pool(items)[0]
    slices = stack._slices(batch)
    sizes = [len(s[3]) for s in slices]
    assert len(slices) > 5 and sum(sizes) == 62 and all(s[0].shape[0] <= 100 or len(s[3]) == 1 for s in slices)
    ends = np.cumsum(sizes)
    assert {16, 32, 48} <= set(ends.tolist())  # no slice straddles a block
    fea, pred = ModelSet([model], [None]).run({None: batch})
    start, own_fea, own_pred = 0, [], []
    for size in sizes:
        part = collate_pool(items[start:start + size])[0]
        with torch.inference_mode():
            crys = model.net.crystal_features(*part)
            f, p = model.outputs(crys, model.net.fc_out(crys))
        own_fea.append(f)
        own_pred.append(p)
        start += size
    np.testing.assert_array_equal(fea[0], np.concatenate(own_fea))
    np.testing.assert_array_equal(pred[0], np.concatenate(own_pred))
