"""A checkpoint's graph parameters, read without importing torch.

``--train 0`` forks its graph-building processes before torch (and scikit-learn) are
imported, so that graphs build during the rest of the start-up; it needs only the radius,
neighbour count and Gaussian step each model was trained with.  :func:`read_graph_params`
reads them from the pickle inside a checkpoint written by ``torch.save`` (zip or legacy
format) with an unpickler that admits no class but ``collections.OrderedDict`` and reads tensors as
None: nothing in the file runs.  Best effort: None for anything else (an
unexpected class, a damaged file); the caller then loads the model with
torch as usual, which reports what is wrong.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

from cgcnn.graph import GraphParams

__all__ = ["read_graph_params"]


class _Storage:
    """Stands for a ``torch.*Storage`` class named by the pickle (never instantiated)."""


def _no_tensor(*args, **kwargs) -> None:
    return None


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_TENSOR_REBUILDERS = ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_tensor")


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in _TENSOR_REBUILDERS:
            return _no_tensor
        if module == "torch" and name.endswith("Storage"):
            return _Storage
        raise pickle.UnpicklingError(f"{module}.{name} is not read here")

    def persistent_load(self, pid) -> None:  # a tensor's storage, kept outside the pickle
        return None


def read_graph_params(path: str | Path) -> GraphParams | None:
    """The :class:`~cgcnn.graph.GraphParams` a checkpoint was trained with, without torch.

    Parameters
    ----------
    path : str or Path
        A ``.pth.tar`` written by ``torch.save`` (the zip format of torch ≥ 1.6, or the
        legacy format of upstream CGCNN's checkpoints).

    Returns
    -------
    GraphParams or None
        What :meth:`cgcnn.checkpoint.ModelInfo.from_checkpoint` would give (upstream's
        defaults where the checkpoint records none); None where the file cannot be read
        this way (never raises).
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("/data.pkl")]
                if len(names) != 1:
                    return None
                ckpt = _Reader(io.BytesIO(archive.read(names[0]))).load()
        else:  # the legacy format (upstream's checkpoints): magic number, protocol, system info, object
            with open(path, "rb") as f:
                reader = _Reader(f)
                if reader.load() != _LEGACY_MAGIC:
                    return None
                reader.load(), reader.load()
                ckpt = reader.load()
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("graph") or {}, dict):
            return None
        return GraphParams.from_checkpoint(ckpt)
    except Exception:  # noqa: BLE001 (best effort: the caller loads the model with torch)
        return None
