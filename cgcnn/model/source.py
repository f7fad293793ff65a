"""The source model: a trained CGCNN that turns crystals into ``crys_fea`` and predictions.

``crys_fea``, the input of the network's output layer, is the descriptor on which
the transfer tool of T. Zhu, R. He, S. Gong et al. (Energy Environ. Sci. 14, 3559
(2021)) fits its last layer; the network is upstream CGCNN's (T. Xie,
J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018)).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cgcnn import InputError
from cgcnn.data import CIFData, GraphParams, atom_init_digest
from cgcnn.model.checkpoint import ModelInfo, Normalizer, load_checkpoint, normalizer_from_checkpoint
from cgcnn.model.network import CrystalGraphConvNet
from cgcnn.outputs import file_sha256

__all__ = ["SourceModel", "choose_atom_init", "default_device"]


def default_device() -> torch.device:
    """``cuda`` when torch sees a GPU, else ``cpu``: where :class:`SourceModel` runs by default."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_atom_init(root: str | os.PathLike, atom_init, stored: dict | None):
    """The atom feature table for a data folder, in order of precedence.

    1. ``atom_init`` when given (a path or a table);
    2. else ``root/atom_init.json`` when the folder has one (None is returned and
       :class:`~cgcnn.data.CIFData` reads it);
    3. else ``stored``, the table a checkpoint carries (nothing is written into ``root``).

    Parameters
    ----------
    root : path
        The data folder.
    atom_init : path or dict or None
        The table asked for (e.g. ``--atom-init``).
    stored : dict of int to ndarray, or None
        The checkpoint's table (:attr:`ModelInfo.atom_init`).

    Returns
    -------
    path or dict or None
        What to pass as ``atom_init`` to :class:`~cgcnn.data.CIFData`.
    """
    if atom_init is None and stored is not None and not (Path(root) / "atom_init.json").exists():
        return stored
    return atom_init


@dataclass
class SourceModel:
    """A trained CGCNN, ready to turn a data folder into ``crys_fea`` and predictions.

    Attributes
    ----------
    path : Path
        The checkpoint file.
    sha256 : str
        Digest of the checkpoint file (recorded by the transfer tool's last layer).
    net : CrystalGraphConvNet
        The network, in evaluation mode, on the device :meth:`load` put it on
        (:attr:`device`).
    normalizer : Normalizer
        Target normalizer of the checkpoint (predictions are de-normalized with it).
    params : GraphParams
        Graph parameters (upstream defaults when the checkpoint does not say).
    atom_init : dict or None
        The atom feature table stored in the checkpoint (None for upstream ones).
    target : dict
        Name, transform and unit of the target ({} when the checkpoint does not say).
    classification : bool
    args : dict
        The training options stored in the checkpoint.
    """

    path: Path
    sha256: str
    net: CrystalGraphConvNet
    normalizer: Normalizer
    params: GraphParams
    atom_init: dict | None
    target: dict
    classification: bool
    args: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike, require_regression: bool = False,
             device: str | torch.device | None = None) -> SourceModel:
        """Load a checkpoint and rebuild its network (sizes read from the ``state_dict``).

        Parameters
        ----------
        path : path
            An upstream or project checkpoint.
        require_regression : bool
            Refuse a classification model.
        device : str or torch.device, optional
            Where the network runs: ``"cuda"`` (or ``"cuda:1"``...), ``"cpu"``; default
            :func:`default_device` (the GPU when torch sees one, as upstream CGCNN and the
            original tool without ``--disable-cuda``).  The network is moved there once.

        Raises
        ------
        InputError
            The cases of :func:`~cgcnn.model.checkpoint.load_checkpoint`; a classification model
            where ``require_regression``; a state dict that does not fit a CGCNN; graph
            parameters that do not give the network's edge feature length.
        """
        path = Path(path)
        ckpt = load_checkpoint(path)
        args = ckpt.get("args") or {}
        if not isinstance(args, dict):
            args = dict(vars(args)) if hasattr(args, "__dict__") else {}
        sd = ckpt["state_dict"]
        classification = args.get("task", "regression") == "classification" or (
            "fc_out.weight" in sd and sd["fc_out.weight"].shape[0] == 2
        )
        if classification and require_regression:
            raise InputError(f"{path}: a classification model; a regression model (e.g. of log10 κ) is needed")
        try:
            atom_fea_len, orig_atom_fea_len = sd["embedding.weight"].shape
            n_conv = len({k.split(".")[1] for k in sd if k.startswith("convs.")})
            nbr_fea_len = sd["convs.0.fc_full.weight"].shape[1] - 2 * atom_fea_len
            h_fea_len = sd["conv_to_fc.weight"].shape[0]
            n_h = 1 + len({k.split(".")[1] for k in sd if k.startswith("fcs.")})
            net = CrystalGraphConvNet(
                orig_atom_fea_len, nbr_fea_len, atom_fea_len=atom_fea_len, n_conv=n_conv,
                h_fea_len=h_fea_len, n_h=n_h, classification=classification,
            )
            # upstream checkpoints predate BatchNorm's num_batches_tracked
            missing, unexpected = net.load_state_dict(sd, strict=False)
        except (KeyError, RuntimeError, IndexError) as exc:
            first = str(exc).splitlines()[0]
            raise InputError(f"{path}: state_dict does not fit a CGCNN ({first})") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise InputError(
                f"{path}: state_dict does not fit a CGCNN (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        net.eval()
        for name, tensor in sd.items():
            if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise InputError(f"{path}: the checkpoint holds NaN or infinite values in {name} (a broken model)")
        normalizer = normalizer_from_checkpoint(ckpt, path)
        stats = [float(normalizer.mean), float(normalizer.std)]
        if not all(np.isfinite(stats)) or stats[1] <= 0:
            raise InputError(f"{path}: the checkpoint's normalizer is not usable (mean {stats[0]:g}, std {stats[1]:g})")
        info = ModelInfo.from_checkpoint(ckpt, str(path))  # its atom table checked (keys, sizes, finite)
        if info.graph.nbr_fea_len != nbr_fea_len:
            raise InputError(
                f"{path}: graph parameters {info.graph} give {info.graph.nbr_fea_len} edge features, "
                f"the network takes {nbr_fea_len}"
            )
        net.to(default_device() if device is None else torch.device(device))
        return cls(
            path=path, sha256=file_sha256(path), net=net, normalizer=normalizer, params=info.graph,
            atom_init=info.atom_init, target=info.target, classification=classification, args=args,
        )

    @property
    def device(self) -> torch.device:
        """The device the network is on."""
        return next(self.net.parameters()).device

    @property
    def crys_fea_len(self) -> int:
        """Length of ``crys_fea`` (``h_fea_len``)."""
        return self.net.fc_out.in_features

    def dataset(self, root, atom_init=None, cache_dir=None, **kwargs) -> CIFData:
        """A :class:`CIFData` over ``root`` with this model's graph parameters, checked
        against the model (see :meth:`check_data`).

        Atom features as :func:`choose_atom_init`: ``atom_init`` when given, else
        ``root/atom_init.json``, else the table stored in the checkpoint (nothing is
        written into ``root``).  ``kwargs`` go to :class:`CIFData` (e.g. ``cache_bytes``).

        Raises
        ------
        InputError
            The cases of :class:`CIFData` and :meth:`check_data`.
        """
        atom_init = choose_atom_init(root, atom_init, self.atom_init)
        data = CIFData(root, params=self.params, atom_init=atom_init, cache_dir=cache_dir, **kwargs)
        self.check_data(data)
        return data

    def check_data(self, data: CIFData) -> None:
        """Refuse a data folder whose features do not fit the model.

        Raises
        ------
        InputError
            If the atom or edge feature lengths differ from the network's, or the
            folder's ``atom_init.json`` differs from the table the model was trained with.
        """
        want_atom = self.net.embedding.in_features
        want_edge = self.net.convs[0].nbr_fea_len
        have_edge = data.params.nbr_fea_len
        if want_atom != data.orig_atom_fea_len or want_edge != have_edge:
            raise InputError(
                f"{self.path}: checkpoint expects {want_edge} edge features (radius {self.params.radius:g} Å, "
                f"step {self.params.step:g}) and {want_atom} atom features; the data gives {have_edge} and "
                f"{data.orig_atom_fea_len} ({data.atom_init_source})"
            )
        if self.atom_init is not None and atom_init_digest(self.atom_init) != atom_init_digest(data.atom_init):
            raise InputError(
                f"{data.atom_init_source}: differs from the atom feature table {self.path} was trained with "
                "(use the model's atom_init.json)"
            )

    def outputs(self, crys_fea: torch.Tensor, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``crys_fea`` and the de-normalized prediction of a batch, on the CPU.

        Parameters
        ----------
        crys_fea : torch.Tensor of shape (C, h_fea_len)
        out : torch.Tensor of shape (C, 1), or (C, 2) for classification
            ``fc_out`` of ``crys_fea``.

        Returns
        -------
        crys_fea : ndarray of shape (C, h_fea_len), float32
        prediction : ndarray of shape (C,), float64
            In the target's units (for classification, the probability of class 1, upstream's
            ``exp`` of the log-softmax).
        """
        out = out.cpu()
        pred = torch.softmax(out, dim=1)[:, 1] if self.classification else self.normalizer.denorm(out[:, 0])
        return crys_fea.cpu().numpy().astype(np.float32, copy=False), pred.double().numpy()

    def run(self, data: CIFData, batch_size: int = 256, workers: int | None = None, progress: bool = True,
            device: str | torch.device | None = None):
        """``crys_fea`` and de-normalized predictions for every crystal, in row order.

        Evaluation mode and no autograd, so a crystal's features do not depend on
        the rest of its batch.  Graphs are built by ``workers`` processes
        (:func:`cgcnn.data.build_graphs`) while this process runs the network on the
        batches already built, with :data:`NETWORK_THREADS` torch threads on a CPU;
        results do not depend on ``workers`` (:func:`cgcnn.model.stack.run_batches`).

        Parameters
        ----------
        data : CIFData or torch.utils.data.Subset of one
        batch_size : int
            Crystals per batch (memory, not results).
        workers : int, optional
            Graph-building processes: None (default) for all cores
            (:func:`cgcnn.available_cores`), 0 for none (everything in this process).
        progress : bool
            Show a progress bar (on stderr, when it is a terminal).
        device : str or torch.device, optional
            Where the network runs (default: where it is, :attr:`device`); another device
            moves the network there, once.  On a GPU each batch is copied once, from pinned
            memory, without blocking; features and predictions agree with the CPU's to
            about 1e-6 relative.

        Returns
        -------
        crys_fea : ndarray of shape (n, h_fea_len), float32
        prediction : ndarray of shape (n,), float64
            De-normalized output in the target's units (:meth:`outputs`).

        Raises
        ------
        InputError
            The faults of :class:`CIFData` met on access (a bad CIF, a missing element).
        """
        from cgcnn.model.stack import ModelSet, run_batches

        if device is not None:
            self.net.to(torch.device(device))
        self.net.eval()
        feas, preds = run_batches(ModelSet([self], [None]), {None: data}, batch_size, workers, progress)
        return feas[0], preds[0]
