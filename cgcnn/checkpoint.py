"""CGCNN checkpoints: safe loading, the normalizer, and a source model that
turns data folders into ``crys_fea`` and predictions.

Checkpoints are dicts with ``state_dict``, ``normalizer`` {``mean``, ``std``},
``args`` (training options), ``epoch``, ``best_mae_error`` and ``optimizer``, as
upstream CGCNN ``main.py`` writes them.  Both the legacy (pre-1.6) and the zip
formats load on a machine without CUDA with ``torch.load(weights_only=True)``;
numpy scalars and dtypes, which old checkpoints hold, are allowed through
torch's safe-globals mechanism and nothing else.  Checkpoints this project writes
also carry ``atom_init`` (the atom feature table), ``graph`` (the graph
parameters) and ``target`` (name, transform, unit).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cgcnn import InputError
from cgcnn.data import CIFData, GraphParams, atom_init_digest, collate_pool
from cgcnn.model import CrystalGraphConvNet

__all__ = ["Normalizer", "load_checkpoint", "check_output", "save_atomic", "save_csv", "SourceModel", "file_sha256"]


def _numpy_safe_globals() -> list:
    """numpy types that old checkpoints pickle (scalars, dtypes), nothing else."""
    out = []
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore
    out.append(scalar)
    out.append(np.dtype)
    out.extend(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))
    out.append(np.ndarray)
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct  # type: ignore
    out.append(_reconstruct)
    return out


class Normalizer:
    """Normalise a target tensor to zero mean and unit standard deviation (upstream).

    Parameters
    ----------
    tensor : torch.Tensor shape (n,) or (n, 1)
        Sample of targets; ``mean`` and ``std`` (unbiased) are taken from it.
    """

    def __init__(self, tensor: torch.Tensor | None = None):
        if tensor is None:
            tensor = torch.tensor([0.0, 2.0])
        self.mean = torch.mean(tensor)
        self.std = torch.std(tensor)

    def norm(self, tensor: torch.Tensor) -> torch.Tensor:
        return (tensor - self.mean) / self.std

    def denorm(self, normed_tensor: torch.Tensor) -> torch.Tensor:
        return normed_tensor * self.std + self.mean

    def state_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state_dict: dict) -> None:
        self.mean = torch.as_tensor(state_dict["mean"], dtype=torch.float32)
        self.std = torch.as_tensor(state_dict["std"], dtype=torch.float32)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a CGCNN checkpoint safely on the CPU.

    Raises
    ------
    InputError
        If the path is missing or a folder, the file is not a (complete) torch
        checkpoint, needs code that is not allowed, or is not a CGCNN checkpoint
        (no ``state_dict`` with ``embedding.weight``).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a model checkpoint")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on foreign or truncated bytes
        text = str(exc)
        if "Unsupported global" in text:
            raise InputError(
                f"{path}: checkpoint holds objects other than tensors and plain data; refused (not loaded, "
                "since unpickling could run arbitrary code)"
            ) from None
        # torch wraps the unpickler's own complaint in a long "Weights only load failed" text
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
        cause = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise InputError(f"{path}: not a PyTorch checkpoint, or a truncated one ({cause})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict) or (
        "embedding.weight" not in ckpt["state_dict"]
    ):
        raise InputError(f"{path}: not a CGCNN checkpoint (no state_dict with embedding.weight)")
    return ckpt


def check_output(path: str | os.PathLike) -> Path:
    """Check that a file can be written at ``path`` (before a long run, so it fails at once).

    Returns ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    InputError
        If ``path`` is a folder, or its folder does not exist, is not a folder or is not writable.
    """
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if not folder.exists():
        raise InputError(f"{path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: folder {folder} is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj, path: str | os.PathLike, saver=torch.save) -> None:
    """Write ``obj`` with ``saver(obj, file)`` to a temporary file, then rename it to ``path``.

    An interrupted or failed write leaves any earlier file at ``path`` intact
    (the temporary file is removed).

    Raises
    ------
    InputError
        The cases of :func:`check_output`, and a failed write (e.g. a full disk).
    """
    path = check_output(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            saver(obj, f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the permissions open() would
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
        raise


def save_csv(frame, path: str | os.PathLike, float_format: str | None = "%.8g") -> None:
    """Write a pandas DataFrame as CSV (header, no index, empty cells for NaN) atomically,
    with :func:`save_atomic`.  ``float_format`` as pandas ``to_csv`` (None: full precision)."""
    save_atomic(frame, path, saver=lambda df, f: f.write(
        df.to_csv(index=False, na_rep="", float_format=float_format).encode()))


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
        The network, in evaluation mode.
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
    def load(cls, path: str | os.PathLike, require_regression: bool = False) -> "SourceModel":
        """Load a checkpoint and rebuild its network.

        Raises
        ------
        InputError
            The cases of :func:`load_checkpoint`; a classification model where
            ``require_regression``; a state dict that does not fit a CGCNN.
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
        normalizer = Normalizer()
        if "normalizer" in ckpt:
            normalizer.load_state_dict(ckpt["normalizer"])
        graph = ckpt.get("graph") or {}
        params = GraphParams(**{k: graph[k] for k in ("radius", "max_num_nbr", "dmin", "step") if k in graph})
        if params.nbr_fea_len != nbr_fea_len:
            raise InputError(
                f"{path}: graph parameters {params} give {params.nbr_fea_len} edge features, the network takes {nbr_fea_len}"
            )
        atom_init = ckpt.get("atom_init")
        if atom_init is not None:
            atom_init = {int(k): np.asarray(v, dtype=np.float32) for k, v in atom_init.items()}
        return cls(
            path=path, sha256=file_sha256(path), net=net, normalizer=normalizer, params=params,
            atom_init=atom_init, target=dict(ckpt.get("target") or {}), classification=classification, args=args,
        )

    @property
    def crys_fea_len(self) -> int:
        """Length of ``crys_fea`` (``h_fea_len``)."""
        return self.net.fc_out.in_features

    def dataset(self, root, atom_init=None, cache_dir=None) -> CIFData:
        """A :class:`CIFData` over ``root`` with this model's graph parameters, checked
        against the model (see :meth:`check_data`).

        Atom features come from ``atom_init`` when given, else ``root/atom_init.json``,
        else the table stored in the checkpoint (nothing is written into ``root``).
        """
        if atom_init is None and self.atom_init is not None and not (Path(root) / "atom_init.json").exists():
            atom_init = self.atom_init
        data = CIFData(root, params=self.params, atom_init=atom_init, cache_dir=cache_dir)
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

    @torch.inference_mode()
    def run(self, data: CIFData, batch_size: int = 256, workers: int = 0, progress: bool = True):
        """``crys_fea`` and de-normalized predictions for every crystal, in row order.

        Evaluation mode and no autograd, so a crystal's features do not depend on
        the rest of its batch.

        Returns
        -------
        crys_fea : ndarray of shape (n, h_fea_len), float32
        prediction : ndarray of shape (n,), float64
            De-normalized output (for classification, the probability of class 1).
        """
        from tqdm.auto import tqdm

        self.net.eval()
        loader = DataLoader(
            data, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_pool
        )
        feas, preds = [], []
        with tqdm(total=len(data), desc="crystal graphs", unit="crystal", disable=None if progress else True,
                  leave=False) as bar:
            for (atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx), _, _ in loader:
                crys_fea = self.net.crystal_features(atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx)
                out = self.net.fc_out(crys_fea)
                if self.classification:
                    pred = torch.softmax(out, dim=1)[:, 1]
                else:
                    pred = self.normalizer.denorm(out[:, 0])
                feas.append(crys_fea.numpy())
                preds.append(pred.double().numpy())
                bar.update(len(crystal_atom_idx))
        return np.concatenate(feas).astype(np.float32), np.concatenate(preds)
