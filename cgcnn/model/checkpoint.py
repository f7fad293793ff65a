"""The CGCNN checkpoint format: loading and saving, and the target normalizer it stores.

Checkpoints are dicts with ``epoch``, ``state_dict``, ``best_mae_error``,
``optimizer``, ``normalizer`` {``mean``, ``std``} and ``args`` (the training
options), as upstream CGCNN ``main.py`` writes them (T. Xie, J. C. Grossman,
Phys. Rev. Lett. 120, 145301 (2018)).  Both the legacy (pre-1.6) and the zip
formats load on a machine without CUDA with ``torch.load(weights_only=True)``;
numpy scalars and dtypes, which old checkpoints hold, are allowed through torch's
safe-globals mechanism and nothing else.

Checkpoints this project writes also carry what upstream left implicit, under the
keys of :data:`PROJECT_KEYS`: ``atom_init`` (the atom feature table), ``graph`` (the
graph parameters) and ``target`` (name, transform, unit).  :class:`ModelInfo` is the
one definition of those keys, read by :meth:`ModelInfo.from_checkpoint` and written
by :func:`make_checkpoint`.

The file helpers (:func:`save_atomic`, :func:`save_csv`, :func:`check_output`,
:func:`file_sha256`) live in :mod:`cgcnn.outputs.files` and the source model
(:class:`SourceModel`) in :mod:`cgcnn.model.source`; both stay importable from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cgcnn import InputError
from cgcnn.data import GraphParams, atom_table_from_dict
from cgcnn.outputs import missing_reason, save_atomic

__all__ = [
    "PROJECT_KEYS", "NORMALIZER_SAMPLE", "Normalizer", "ModelInfo", "load_checkpoint", "make_checkpoint",
    "save_checkpoint", "normalizer_from_checkpoint", "state_dict_mismatch",
]

#: The keys this project adds to upstream's checkpoint dict (see :class:`ModelInfo`).
PROJECT_KEYS = ("atom_init", "graph", "target")

#: Targets the normalizer is taken from at most (upstream ``main.py`` samples 500; see
#: :meth:`Normalizer.from_targets`).
NORMALIZER_SAMPLE = 500


def _numpy_safe_globals() -> list:
    """numpy types that old checkpoints pickle (scalars, dtypes, arrays), nothing else.

    A pickle names a global by the module it was written under: numpy 1 wrote
    ``numpy.core.multiarray.scalar``, numpy 2 writes ``numpy._core.multiarray.scalar``.
    torch matches the pickled name against ``{__module__}.{__qualname__}`` of each
    allowed object, so each is also given under its other name with torch's
    ``(object, "module.name")`` form, which torch takes from 2.6 on (upstream's
    ``semi-metal-classification.pth.tar`` holds ``numpy.core.multiarray.scalar``,
    refused under numpy 2 without it).
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    out: list = []
    for name in ("scalar", "_reconstruct"):
        obj = getattr(multiarray, name)
        out.append(obj)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            out.append((obj, f"{module}.{name}"))
    out.append(np.dtype)
    out.extend(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))
    out.append(np.ndarray)
    return out


class Normalizer:
    """Normalise a target tensor to zero mean and unit standard deviation (upstream ``Normalizer``).

    Stored in checkpoints as ``normalizer`` = {``mean``, ``std``}.

    Parameters
    ----------
    tensor : torch.Tensor of shape (n,) or (n, 1), optional
        Sample of targets; ``mean`` and ``std`` (unbiased) are taken from it.
        Default ``[0, 2]`` (mean 1, std √2), a placeholder until :meth:`load_state_dict`.
    """

    def __init__(self, tensor: torch.Tensor | None = None):
        if tensor is None:
            tensor = torch.tensor([0.0, 2.0])
        self.mean = torch.mean(tensor)
        self.std = torch.std(tensor)

    @classmethod
    def from_targets(cls, targets, seed: int = 0, max_sample: int = NORMALIZER_SAMPLE) -> Normalizer:
        """The normalizer of training targets, as upstream ``main.py`` sets it up.

        Upstream takes mean and std of a random sample of at most 500 training targets
        (``sample_data_list``); so do ``python -m cgcnn.train`` and every fine-tuning of
        this project.  With ``max_sample`` or fewer targets, all are used (the sample is
        the set itself); above, ``max_sample`` are drawn without replacement with
        ``np.random.RandomState(seed)``.

        Parameters
        ----------
        targets : array-like of shape (n,)
            Training targets in the model's units (e.g. log10 κ_L).
        seed : int
            Seed of the sample (only used when ``n > max_sample``).
        max_sample : int
            Largest sample.
        """
        targets = np.asarray(targets)
        if len(targets) > max_sample:
            targets = np.random.RandomState(seed).choice(targets, max_sample, replace=False)
        return cls(torch.tensor(targets, dtype=torch.float32))

    def norm(self, tensor: torch.Tensor) -> torch.Tensor:
        """``(tensor - mean) / std``, any shape."""
        return (tensor - self.mean) / self.std

    def denorm(self, normed_tensor: torch.Tensor) -> torch.Tensor:
        """``normed_tensor * std + mean``, any shape."""
        return normed_tensor * self.std + self.mean

    def state_dict(self) -> dict:
        """``{"mean": tensor, "std": tensor}``, the checkpoint's ``normalizer``."""
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state_dict: dict) -> None:
        """Take ``mean`` and ``std`` (tensors, numpy or Python numbers) from a checkpoint's ``normalizer``."""
        self.mean = torch.as_tensor(state_dict["mean"], dtype=torch.float32)
        self.std = torch.as_tensor(state_dict["std"], dtype=torch.float32)


@dataclass
class ModelInfo:
    """What a project checkpoint records beyond upstream's dict (keys :data:`PROJECT_KEYS`).

    Attributes
    ----------
    atom_init : dict of int to ndarray of shape (orig_atom_fea_len,), or None
        The atom feature table the network was trained with (None: not recorded, as
        in upstream checkpoints).  Stored as ``{"Z": [floats]}`` in atomic-number order.
    graph : GraphParams
        Radius (Å), neighbours kept, Gaussian ``dmin`` and ``step`` (Å); upstream
        defaults when not recorded.
    target : dict
        ``name``, ``transform`` (e.g. ``log10``) and ``unit`` of the target ({} when
        not recorded).
    """

    atom_init: dict | None = None
    graph: GraphParams = field(default_factory=GraphParams)
    target: dict = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, source: str = "checkpoint") -> ModelInfo:
        """Read the project's keys of a loaded checkpoint; absent keys (upstream checkpoints)
        give the defaults.

        Raises
        ------
        InputError
            A stored atom feature table that :func:`cgcnn.data.atom_table_from_dict` refuses
            (naming ``source``, the checkpoint).
        """
        params = GraphParams.from_checkpoint(ckpt)
        atom_init = ckpt.get("atom_init")
        if atom_init is not None:
            atom_init = atom_table_from_dict(atom_init, f"{source}: the stored atom feature table")
        return cls(atom_init=atom_init, graph=params, target=dict(ckpt.get("target") or {}))

    def as_dict(self) -> dict:
        """The entries written into a checkpoint: ``atom_init``, ``graph``, ``target`` (plain data)."""
        table = None
        if self.atom_init is not None:
            table = {str(z): np.asarray(v).tolist() for z, v in sorted(self.atom_init.items())}
        return {"atom_init": table, "graph": self.graph.as_dict(), "target": dict(self.target)}


def make_checkpoint(net: torch.nn.Module, optimizer: torch.optim.Optimizer, normalizer: Normalizer, *,
                    epoch: int, best: float, args: dict, info: ModelInfo) -> dict:
    """The checkpoint dict of a training run (upstream's keys, then :data:`PROJECT_KEYS`).

    Parameters
    ----------
    net : CrystalGraphConvNet
    optimizer : torch.optim.Optimizer
    normalizer : Normalizer
    epoch : int
        Epochs completed (upstream stores ``epoch + 1`` after epoch ``epoch``).
    best : float
        Best validation metric so far (``best_mae_error``: MAE, or accuracy for classification).
    args : dict
        The training options (plain data; paths by name only).
    info : ModelInfo
        The atom table, graph parameters and target.

    Returns
    -------
    dict
        Ready for :func:`save_checkpoint` (tensors are the live ones, not copies).
    """
    return {
        "epoch": epoch, "state_dict": net.state_dict(), "best_mae_error": float(best),
        "optimizer": optimizer.state_dict(), "normalizer": normalizer.state_dict(), "args": args,
        **info.as_dict(),
    }


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> None:
    """Write a checkpoint dict with ``torch.save`` through :func:`cgcnn.outputs.files.save_atomic`.

    Raises
    ------
    InputError
        The cases of :func:`cgcnn.outputs.files.save_atomic`.
    """
    save_atomic(ckpt, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a CGCNN checkpoint safely on the CPU (``weights_only=True``).

    Parameters
    ----------
    path : path
        A checkpoint of upstream CGCNN (legacy or zip format) or of this project.

    Returns
    -------
    dict
        The checkpoint, tensors on the CPU.

    Raises
    ------
    InputError
        If the path is missing or a folder, the file is not a (complete) torch
        checkpoint, needs code that is not allowed, or is not a CGCNN checkpoint
        (no ``state_dict`` with ``embedding.weight``).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: model file {missing_reason(path)}")
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


def state_dict_mismatch(expected: dict, found: dict, limit: int = 3) -> str | None:
    """How a checkpoint's ``state_dict`` (``found``) differs from a network's (``expected``), in one
    line, or None when every key and shape agrees.

    Names up to ``limit`` differences of each kind, e.g. ``embedding.weight is 8x92 in the
    checkpoint, 64x92 here; convs.2.fc_full.weight missing from the checkpoint``.
    """
    shape = lambda t: "x".join(map(str, tuple(getattr(t, "shape", ())))) or "a scalar"
    parts = []
    differ = [k for k in expected if k in found and tuple(getattr(found[k], "shape", ())) !=
              tuple(getattr(expected[k], "shape", ()))]
    parts += [f"{k} is {shape(found[k])} in the checkpoint, {shape(expected[k])} here" for k in differ[:limit]]
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    for keys, where in ((missing, "missing from the checkpoint"), (extra, "in the checkpoint, not in this model")):
        if keys:
            more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
            parts.append(f"{', '.join(keys[:limit])}{more} {where}")
    if len(differ) > limit:
        parts.append(f"{len(differ) - limit} more shapes differ")
    return "; ".join(parts) or None


def normalizer_from_checkpoint(ckpt: dict, path: str | os.PathLike, required: bool = False) -> Normalizer:
    """The checkpoint's ``normalizer`` as a :class:`Normalizer`.

    Parameters
    ----------
    ckpt : dict
        A loaded checkpoint.
    path : path
        Its file, for messages.
    required : bool
        Refuse a checkpoint without ``normalizer`` (resuming a regression needs it);
        otherwise such a checkpoint gives the placeholder ``Normalizer()``, as
        classification checkpoints do not use it.

    Raises
    ------
    InputError
        If ``normalizer`` is required and absent, or is not ``{mean, std}`` numbers.
    """
    state = ckpt.get("normalizer")
    normalizer = Normalizer()
    if state is None:
        if required:
            raise InputError(f"{path}: checkpoint has no normalizer (mean and std of the targets); cannot resume")
        return normalizer
    try:
        normalizer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise InputError(f"{path}: normalizer is not {{mean, std}} numbers") from None
    return normalizer
