"""Several trained networks applied to the same crystals at once.

The recommended route runs twelve networks per crystal (three ensemble members × the κ source model
and the Debye, bulk and shear property models) with one architecture and one input graph.

- :class:`NetworkStack`: K networks of one architecture, in evaluation mode, as one network whose
  weights are stacked along a leading axis: one batched call (``torch.bmm``) per layer for all K, the
  model ensembling of PyTorch's ``torch.func.stack_module_state`` + ``torch.vmap``, written with
  stacked weights because the convolution's gathers and in-place sums are outside ``vmap``'s support.
  It gives each network's ``crys_fea`` to about 1e-6 relative of the network run alone (the same
  arithmetic in another order).
- :func:`network_threads`: the fixed torch threads (:data:`NETWORK_THREADS`) the networks run with on a
  CPU, wherever they run;
- :class:`ModelSet`: the models of a run, grouped by their input (graph parameters and atom feature
  table: a batch is collated once per input) and architecture.  On a GPU a group runs as one
  :class:`NetworkStack`; on a CPU its networks run one after the other on the shared input, which
  measured as fast as the stack there (the work is element-wise, per network, either way) without
  the stack's K-fold memory (K × edges × 2 × ``atom_fea_len`` floats per convolution), and gives
  each network's own arithmetic bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cgcnn.model.network import CrystalGraphConvNet, batch_index

__all__ = ["NETWORK_THREADS", "SLICE_ATOMS", "SLICE_CRYSTALS", "network_threads", "NetworkStack", "ModelSet",
           "architecture", "run_batches", "to_device"]


#: torch's intra-op threads of the networks on a CPU, in every process that runs them (this one with
#: ``-j 0``, a graph-building process, a Dask worker): fixed, because torch splits some of the network's
#: reductions by thread count (3 threads give other last bits than 1, 2 or 4), so that a crystal's
#: ``crys_fea`` and predictions depend on neither ``-j``, nor the machine's cores, nor Dask.
NETWORK_THREADS = 1


@contextlib.contextmanager
def network_threads(threads: int = NETWORK_THREADS):
    """torch's intra-op threads set to ``threads`` (default :data:`NETWORK_THREADS`) within the block,
    restored on exit: where the networks run on a CPU.  Cores are used by running the networks in
    several processes (the graph-building pool), each with one thread, never by threads that would
    compete with that pool's processes for the cores."""
    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def architecture(net: CrystalGraphConvNet) -> tuple:
    """What two networks must share to be stacked: every parameter's and buffer's name and shape, and
    the task (a hashable tuple)."""
    shapes = tuple((k, tuple(v.shape)) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked"))
    foldable = all(c.bn1.track_running_stats and c.bn1.running_mean is not None and c.bn1.affine
                   and c.bn2.track_running_stats and c.bn2.running_mean is not None and c.bn2.affine
                   for c in net.convs)
    return shapes + (("classification", bool(net.classification)), ("foldable", foldable))


class NetworkStack:
    """K networks of one architecture (:func:`architecture`) run as one, in evaluation mode.

    The weights are copied once, stacked (each first batch norm folded into its convolution's
    weights, as :class:`~cgcnn.model.network.ConvLayer` does in evaluation mode, each second one
    reduced to a scale and shift), on the networks' device.

    Parameters
    ----------
    nets : sequence of CrystalGraphConvNet
        At least one; equal :func:`architecture`, on one device.

    Raises
    ------
    ValueError
        Networks of different architectures or devices, or with batch norms that cannot be folded.
    """

    @torch.no_grad()
    def __init__(self, nets: Sequence[CrystalGraphConvNet]):
        nets = list(nets)
        if not nets or len({architecture(n) for n in nets}) != 1:
            raise ValueError("a NetworkStack needs networks of one architecture")
        if not dict(architecture(nets[0]))["foldable"]:
            raise ValueError("a NetworkStack needs batch norms with running statistics and affine weights")
        if len({next(n.parameters()).device for n in nets}) != 1:
            raise ValueError("a NetworkStack needs networks on one device")
        self.k = len(nets)
        self.classification = bool(nets[0].classification)

        def linear(layers):  # y = x @ w + b, batched: w (K, in, out), b (K, 1, out)
            return (torch.stack([lay.weight.t() for lay in layers]).contiguous(),
                    torch.stack([lay.bias for lay in layers]).unsqueeze(1).contiguous())

        self.embedding = linear([n.embedding for n in nets])
        self.convs = []
        for i in range(len(nets[0].convs)):
            convs = [n.convs[i] for n in nets]
            a = convs[0].atom_fea_len
            w_all, b_all, s2_all, t2_all = [], [], [], []
            for c in convs:
                bn1, bn2 = c.bn1, c.bn2
                scale = torch.rsqrt(bn1.running_var + bn1.eps) * bn1.weight
                w_all.append(c.fc_full.weight * scale.unsqueeze(1))
                b_all.append(c.fc_full.bias * scale + (bn1.bias - bn1.running_mean * scale))
                s2 = 1 / torch.sqrt(bn2.running_var + bn2.eps) * bn2.weight  # as torch's batch_norm
                s2_all.append(s2)
                t2_all.append(bn2.bias - bn2.running_mean * s2)
            w = torch.stack(w_all)  # (K, 2A, 2A + B)
            self.convs.append({
                "self": w[:, :, :a].transpose(1, 2).contiguous(),  # (K, A, 2A)
                "nbr": w[:, :, a:2 * a].transpose(1, 2).contiguous(),
                "edge": w[:, :, 2 * a:].transpose(1, 2).contiguous(),  # (K, B, 2A)
                "bias": torch.stack(b_all).unsqueeze(1),  # (K, 1, 2A)
                "scale2": torch.stack(s2_all).unsqueeze(1), "shift2": torch.stack(t2_all).unsqueeze(1),
            })
        self.conv_to_fc = linear([n.conv_to_fc for n in nets])
        self.fcs = ([linear([n.fcs[j] for n in nets]) for j in range(len(nets[0].fcs))]
                    if hasattr(nets[0], "fcs") else [])
        self.fc_out = linear([n.fc_out for n in nets])

    def crystal_features(self, atom_fea: torch.Tensor, nbr_fea: torch.Tensor, nbr_fea_idx: torch.Tensor,
                         crystal_atom_idx: Sequence[torch.Tensor]) -> torch.Tensor:
        """``crys_fea`` of every network: inputs as :meth:`CrystalGraphConvNet.crystal_features`
        (N atoms, M neighbours, C crystals), output of shape (K, C, h_fea_len)."""
        k = self.k
        n, m = nbr_fea_idx.shape
        w, b = self.embedding
        x = torch.baddbmm(b, atom_fea.expand(k, -1, -1), w)  # (K, N, A)
        flat = nbr_fea_idx.reshape(-1)
        edges = nbr_fea.reshape(n * m, -1).expand(k, -1, -1)  # (K, N*M, B), no copy
        for conv in self.convs:
            a2 = conv["self"].shape[2]
            gated = torch.bmm(x, conv["nbr"]).index_select(1, flat)  # neighbour parts, (K, N*M, 2A)
            gated.view(k, n, m, a2).add_(torch.baddbmm(conv["bias"], x, conv["self"]).unsqueeze(2))
            gated.baddbmm_(edges, conv["edge"])
            nbr_filter, nbr_core = gated.view(k, n, m, a2).chunk(2, dim=3)
            summed = torch.sum(torch.sigmoid(nbr_filter) * F.softplus(nbr_core), dim=2)  # (K, N, A)
            x = F.softplus(x + (summed * conv["scale2"] + conv["shift2"]))
        index = batch_index(crystal_atom_idx, n)
        c = len(crystal_atom_idx)
        pooled = torch.zeros(k, c, x.shape[2], dtype=x.dtype, device=x.device).index_add_(1, index, x)
        pooled = pooled / torch.bincount(index, minlength=c).to(x.dtype).unsqueeze(1)
        w, b = self.conv_to_fc
        crys_fea = F.softplus(torch.baddbmm(b, F.softplus(pooled), w))
        for w, b in self.fcs:
            crys_fea = F.softplus(torch.baddbmm(b, crys_fea, w))
        return crys_fea

    def fc_out_of(self, crys_fea: torch.Tensor) -> torch.Tensor:
        """Each network's output layer on its ``crys_fea`` (K, C, h) → (K, C, 1 or 2)."""
        w, b = self.fc_out
        return torch.baddbmm(b, crys_fea, w)


class ModelSet:
    """The source models of a run, applied to the same batches of crystals.

    Parameters
    ----------
    models : sequence of :class:`cgcnn.model.SourceModel`
    keys : sequence of hashable
        What each model's input is (e.g. its graph parameters and the digest of its atom feature
        table): models with equal keys read the same collated batch.
    stack : bool, optional
        Run each group of two or more networks of one architecture, input and device as a
        :class:`NetworkStack`; default: where the networks are on a GPU (module docstring).

    Attributes
    ----------
    inputs : list
        The distinct keys, in order of first use.
    """

    def __init__(self, models: Sequence, keys: Sequence[Hashable], stack: bool | None = None):
        self.models = list(models)
        self.keys = list(keys)
        if len(self.keys) != len(self.models):
            raise ValueError("one key per model")
        self.inputs = list(dict.fromkeys(self.keys))
        groups: dict = {}
        for i, model in enumerate(self.models):
            groups.setdefault((self.keys[i], model.device, architecture(model.net)), []).append(i)
        self.groups = []
        for (key, device, arch), members in groups.items():
            use = (device.type != "cpu") if stack is None else stack
            runner = NetworkStack([self.models[i].net for i in members]) \
                if use and len(members) > 1 and dict(arch)["foldable"] else None
            self.groups.append((key, members, runner))

    @torch.inference_mode()
    def run(self, inputs: Mapping) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Every model on one batch; on a CPU in slices (:data:`SLICE_CRYSTALS`, :data:`SLICE_ATOMS`).

        Parameters
        ----------
        inputs : mapping
            Key → the batch collated by :func:`cgcnn.data.collate_pool` for that input (its first
            element, ``(atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx)``), on the CPU.

        Returns
        -------
        crys_fea : list of ndarray of shape (C, h_fea_len), float32
            One per model, in the models' order.
        prediction : list of ndarray of shape (C,), float64
            As :meth:`cgcnn.model.SourceModel.outputs`.
        """
        feas: list = [None] * len(self.models)
        preds: list = [None] * len(self.models)
        for key, members, runner in self.groups:
            device = self.models[members[0]].device
            parts = [self._group(members, runner, to_device(part, device))
                     for part in (_slices(inputs[key]) if device.type == "cpu" else [inputs[key]])]
            for j, i in enumerate(members):
                feas[i] = np.concatenate([p[0][j] for p in parts]) if len(parts) > 1 else parts[0][0][j]
                preds[i] = np.concatenate([p[1][j] for p in parts]) if len(parts) > 1 else parts[0][1][j]
        return feas, preds

    def _group(self, members: list, runner, batch) -> tuple[list, list]:
        """One group's networks on one collated batch on their device: (crys_fea, prediction) lists."""
        if runner is None:
            out = []
            for i in members:
                model = self.models[i]
                crys_fea = model.net.crystal_features(*batch)
                out.append(model.outputs(crys_fea, model.net.fc_out(crys_fea)))
        else:
            crys_fea = runner.crystal_features(*batch)
            fc_out = runner.fc_out_of(crys_fea)
            out = [self.models[i].outputs(crys_fea[j], fc_out[j]) for j, i in enumerate(members)]
        return [o[0] for o in out], [o[1] for o in out]


#: Crystals and atoms the networks take at once on a CPU.  A batch runs in blocks of
#: :data:`SLICE_CRYSTALS` consecutive crystals from its start, each block in slices of consecutive
#: crystals of at most :data:`SLICE_ATOMS` atoms (a crystal with more alone), whose (N * M, 2A)
#: intermediates, some 6 MB, stay in the processor's cache: on AFLOW crystals a sixth less time than 500
#: crystals at once.  Slices are a function of the batch alone, so results still depend on nothing else,
#: and a block is a unit of work of its own (a task of the screening pool: :mod:`cgcnn.screening`).
SLICE_CRYSTALS = 64
SLICE_ATOMS = 1024


def _slices(batch) -> list:
    """A collated batch (:func:`cgcnn.data.collate_pool`, crystals' atoms in consecutive runs) as the
    batches of its slices (:data:`SLICE_CRYSTALS`, :data:`SLICE_ATOMS`): the tensors :func:`collate_pool`
    gives for each slice's crystals alone."""
    atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx = batch
    lengths = [len(idx) for idx in crystal_atom_idx]
    if len(lengths) <= SLICE_CRYSTALS and atom_fea.shape[0] <= SLICE_ATOMS:
        return [batch]
    out, start, first = [], 0, 0
    while first < len(lengths):
        block_end = (first // SLICE_CRYSTALS + 1) * SLICE_CRYSTALS
        last, atoms = first, lengths[first]
        while last + 1 < min(len(lengths), block_end) and atoms + lengths[last + 1] <= SLICE_ATOMS:
            last += 1
            atoms += lengths[last]
        end = start + atoms
        out.append((atom_fea[start:end], nbr_fea[start:end], nbr_fea_idx[start:end] - start,
                    [idx - start for idx in crystal_atom_idx[first:last + 1]]))
        start, first = end, last + 1
    return out

def to_device(inputs, device: torch.device):
    """A collated batch (:func:`cgcnn.data.collate_pool`) on ``device``: on the CPU as it is;
    elsewhere each tensor copied once, from pinned memory and without blocking (the
    crystals' index tensors as one)."""
    atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx = inputs
    if device.type == "cpu":
        return inputs
    lengths = [len(idx) for idx in crystal_atom_idx]
    pin = device.type == "cuda"
    moved = [(t.pin_memory() if pin else t).to(device, non_blocking=True)
             for t in (atom_fea, nbr_fea, nbr_fea_idx, torch.cat(list(crystal_atom_idx)))]
    return moved[0], moved[1], moved[2], list(moved[3].split(lengths))


def run_batches(model_set: ModelSet, datasets: Mapping, batch_size: int = 256, workers: int | None = None,
                progress: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every model of ``model_set`` on every crystal of its datasets, in row order, batch by batch.

    Batches are rows ``k * batch_size ...`` of the datasets; each is collated once per input
    (:attr:`ModelSet.inputs`) and given to :meth:`ModelSet.run`, with :data:`NETWORK_THREADS` torch
    threads.  Graphs are built by ``workers`` processes (:func:`cgcnn.data.build_graphs`), those of
    the first input while the networks run on the batches already built.

    Parameters
    ----------
    model_set : ModelSet
    datasets : mapping
        Key → dataset (:class:`cgcnn.data.CIFData`, a ``Subset`` of one, or anything with its
        ``__getitem__``) for each key of :attr:`ModelSet.inputs`; the same n crystals in the same order.
    batch_size : int
        Crystals per batch.
    workers : int, optional
        Graph-building processes (None: all cores; 0: none).
    progress : bool
        A progress bar on stderr (when it is a terminal).

    Returns
    -------
    crys_fea : list of ndarray of shape (n, h_fea_len), float32
    prediction : list of ndarray of shape (n,), float64
        One of each per model, in the models' order.

    Raises
    ------
    InputError
        The faults of the datasets met on access (a bad CIF, a missing element).
    """
    from tqdm.auto import tqdm

    from cgcnn.data import build_graphs, collate_pool

    keys = model_set.inputs
    n = len(datasets[keys[0]])
    for key in keys[1:]:  # models with other graph parameters or atom tables: their graphs first
        for _ in build_graphs(datasets[key], workers=workers):
            pass
    graphs = build_graphs(datasets[keys[0]], workers=workers, ahead=max(1024, 2 * batch_size))
    feas: list = [[] for _ in model_set.models]
    preds: list = [[] for _ in model_set.models]
    try:
        with network_threads(), tqdm(total=n, desc="crystal graphs", unit="crystal",
                                     disable=None if progress else True, leave=False) as bar:
            for start in range(0, n, batch_size):
                rows = range(start, min(start + batch_size, n))
                for _ in rows:  # the batch's graphs, built in the pool, now in the dataset's cache
                    next(graphs)
                batch = {key: collate_pool([datasets[key][i] for i in rows])[0] for key in keys}
                for out, got in zip((feas, preds), model_set.run(batch)):
                    for kept, value in zip(out, got):
                        kept.append(value)
                bar.update(len(rows))
    finally:
        graphs.close()  # stops the pool at once on an error or interrupt
    if n == 0:
        return ([np.zeros((0, m.crys_fea_len), np.float32) for m in model_set.models],
                [np.zeros(0) for _ in model_set.models])
    return [np.concatenate(f).astype(np.float32) for f in feas], [np.concatenate(p) for p in preds]
