"""Tests for cgcnn/model/network.py: upstream-compatible parameters and the convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cgcnn.data import CIFData, collate_pool
from cgcnn.model import ConvLayer, CrystalGraphConvNet


def upstream_keys(orig=92, nbr=41, a=64, n_conv=3, h=128, n_h=1, classification=False):
    """State-dict keys and shapes of upstream CGCNN's ``CrystalGraphConvNet``."""
    keys = {"embedding.weight": (a, orig), "embedding.bias": (a,)}
    for i in range(n_conv):
        p = f"convs.{i}."
        keys.update({p + "fc_full.weight": (2 * a, 2 * a + nbr), p + "fc_full.bias": (2 * a,)})
        for bn, width in (("bn1", 2 * a), ("bn2", a)):
            for name in ("weight", "bias", "running_mean", "running_var"):
                keys[f"{p}{bn}.{name}"] = (width,)
            keys[f"{p}{bn}.num_batches_tracked"] = ()
    keys.update({"conv_to_fc.weight": (h, a), "conv_to_fc.bias": (h,)})
    for j in range(n_h - 1):
        keys.update({f"fcs.{j}.weight": (h, h), f"fcs.{j}.bias": (h,)})
    out = 2 if classification else 1
    keys.update({"fc_out.weight": (out, h), "fc_out.bias": (out,)})
    return keys


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"atom_fea_len": 64, "n_conv": 4, "h_fea_len": 16},  # the gong2021 source model
        {"atom_fea_len": 16, "n_conv": 2, "h_fea_len": 32, "n_h": 3},
        {"atom_fea_len": 8, "n_conv": 1, "h_fea_len": 4, "classification": True},
    ],
)
def test_state_dict_matches_upstream(kwargs):
    net = CrystalGraphConvNet(92, 41, **kwargs)
    want = upstream_keys(
        a=kwargs.get("atom_fea_len", 64), n_conv=kwargs.get("n_conv", 3), h=kwargs.get("h_fea_len", 128),
        n_h=kwargs.get("n_h", 1), classification=kwargs.get("classification", False),
    )
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == want
    assert list(got) == list(want)  # same order as upstream


@pytest.fixture
def batch(cif_folder):
    data = CIFData(cif_folder)
    return collate_pool([data[i] for i in range(len(data))])


def small_net(seed=0, **kwargs):
    torch.manual_seed(seed)
    net = CrystalGraphConvNet(92, 41, atom_fea_len=8, n_conv=2, h_fea_len=6, **kwargs)
    for name, buf in net.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(0.1 * torch.randn_like(buf))
        elif name.endswith("running_var"):
            buf.copy_(0.5 + torch.rand_like(buf))
    return net.eval()


def test_forward_and_crys_fea_shapes(batch):
    inputs, _, ids = batch
    net = small_net()
    with torch.no_grad():
        assert net(*inputs).shape == (len(ids), 1)
        assert net.crystal_features(*inputs).shape == (len(ids), 6)
        out = small_net(classification=True)(*inputs)
    assert out.shape == (len(ids), 2)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(len(ids)))


def test_eval_features_independent_of_batch(cif_folder):
    data = CIFData(cif_folder)
    net = small_net()
    with torch.no_grad():
        alone = [net.crystal_features(*collate_pool([data[i]])[0]) for i in range(len(data))]
        together = net.crystal_features(*collate_pool([data[i] for i in range(len(data))])[0])
        reversed_ = net.crystal_features(*collate_pool([data[i] for i in reversed(range(len(data)))])[0])
    torch.testing.assert_close(torch.cat(alone), together, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together, reversed_.flip(0), rtol=1e-5, atol=1e-6)


def upstream_conv(layer: ConvLayer, atom_in_fea, nbr_fea, nbr_fea_idx):
    """Upstream ``ConvLayer.forward``: fc_full on the concatenation of self, neighbour and edge features."""
    n, m = nbr_fea_idx.shape
    a = layer.atom_fea_len
    atom_nbr_fea = atom_in_fea[nbr_fea_idx, :]
    total_nbr_fea = torch.cat([atom_in_fea.unsqueeze(1).expand(n, m, a), atom_nbr_fea, nbr_fea], dim=2)
    total_gated_fea = layer.fc_full(total_nbr_fea)
    total_gated_fea = layer.bn1(total_gated_fea.view(-1, a * 2)).view(n, m, a * 2)
    nbr_filter, nbr_core = total_gated_fea.chunk(2, dim=2)
    nbr_filter = nn.Sigmoid()(nbr_filter)
    nbr_core = nn.Softplus()(nbr_core)
    nbr_sumed = torch.sum(nbr_filter * nbr_core, dim=1)
    nbr_sumed = layer.bn2(nbr_sumed)
    return nn.Softplus()(atom_in_fea + nbr_sumed)


@pytest.mark.parametrize("train", [False, True])
def test_split_weight_conv_equals_upstream(train):
    torch.manual_seed(1)
    n, m, a, b = 37, 12, 16, 41
    layer = ConvLayer(a, b)
    for bn in (layer.bn1, layer.bn2):
        bn.running_mean.copy_(0.3 * torch.randn_like(bn.running_mean))
        bn.running_var.copy_(0.5 + torch.rand_like(bn.running_var))
        bn.weight.data.copy_(1 + 0.2 * torch.randn_like(bn.weight))
        bn.bias.data.copy_(0.2 * torch.randn_like(bn.bias))
    layer.train(train)
    atom = torch.randn(n, a)
    nbr = torch.rand(n, m, b)
    idx = torch.randint(0, n, (n, m))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    with torch.no_grad():
        ours = layer(atom, nbr, idx)
        layer.load_state_dict(state)  # same running statistics for both in training mode
        theirs = upstream_conv(layer, atom, nbr, idx)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
