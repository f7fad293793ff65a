"""Reading a ``last_layer.sav`` without running code from it.

- skops files (this version's format): only types of :data:`TRUSTED_MODULES` are
  admitted (:func:`load_skops`), and skops is imported without its costly start-up
  scan (:func:`skops_io`);
- joblib pickles of version 1: a restricted unpickler admitting the same types;
  a bare pickled estimator (the original tool's file) only when trusted
  (:func:`load_pickle`).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from cgcnn import InputError

__all__ = ["TRUSTED_MODULES", "MOVED_MODULES", "check_fitted", "skops_io", "load_skops", "load_pickle"]

#: Modules (and classes) whose types a last-layer file may hold.
TRUSTED_MODULES = ("sklearn.", "mapie.", "numpy.", "scipy.", "cgcnn.transfer.estimators.ColumnKernel",
                   "cgcnn.transfer.estimators.MemberAverage")

#: Where the project's own classes were recorded by earlier versions (skops stores each object's module):
#: read as the module that holds them now.
MOVED_MODULES = {"cgcnn.lastlayer": "cgcnn.transfer.estimators", "cgcnn.estimators": "cgcnn.transfer.estimators"}


def check_fitted(estimator, path) -> None:
    """Refuse an object without ``predict`` or not fitted.

    Raises
    ------
    InputError
        Naming ``path``.
    """
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not hasattr(estimator, "predict"):
        raise InputError(f"{path}: the stored estimator has no predict method")
    try:
        check_is_fitted(estimator)
    except (NotFittedError, TypeError):
        raise InputError(f"{path}: the stored estimator is not fitted (refit with --train 1)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def skops_io():
    """``skops.io``, imported here, where it is first needed, without its one avoidable cost.

    On import, skops lists the types it trusts by default; for scikit-learn's estimators it
    calls ``sklearn.utils.all_estimators()``, which imports every module of scikit-learn (and
    with them pytest and dask): most of a second, longer than the rest of a ``--train 0``
    start-up after torch.  :func:`load_skops` does not need that list: it admits every type
    of :data:`TRUSTED_MODULES` (all of ``sklearn.*`` among them) whether skops trusts it by
    default or lists it as untrusted, so the same files load, with the same types, either
    way.  skops is therefore imported with ``all_estimators`` answering an empty list; its
    default trust in this process is then narrower (scikit-learn estimators need an explicit
    ``trusted=``), never wider.  Nothing is changed when skops is already imported.
    """
    import sys

    if "skops.io" in sys.modules:
        return sys.modules["skops.io"]
    import sklearn.utils
    import sklearn.utils.discovery

    holders = [m for m in (sklearn.utils, sklearn.utils.discovery) if hasattr(m, "all_estimators")]
    real = [m.all_estimators for m in holders]
    try:
        for m in holders:
            m.all_estimators = lambda *args, **kwargs: []
        import skops.io
    finally:
        for m, f in zip(holders, real):
            m.all_estimators = f
    return skops.io


def load_skops(path: Path, raw: bytes) -> Any:
    """The object of skops bytes ``raw`` (read from ``path``), admitting only :data:`TRUSTED_MODULES` types.

    Raises
    ------
    InputError
        An unreadable file, or one holding another type (refused before anything is built).
    """
    sio = skops_io()

    try:
        raw = _with_moved_modules(raw)
        untrusted = sio.get_untrusted_types(data=raw)
    except Exception as exc:
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    foreign = [t for t in untrusted if not t.startswith(TRUSTED_MODULES)]
    if foreign:
        raise InputError(f"{path}: holds types this tool does not write ({', '.join(foreign[:3])}); refused")
    try:
        return sio.loads(raw, trusted=untrusted)
    except Exception as exc:
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None


def _with_moved_modules(raw: bytes) -> bytes:
    """skops bytes whose schema names the project's classes by the modules that hold them now
    (:data:`MOVED_MODULES`: a ``last_layer.sav`` of an earlier version); ``raw`` itself when nothing moved."""
    import json
    import zipfile

    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        schema = archive.read("schema.json")
        if not any(f'"{old}"'.encode() in schema for old in MOVED_MODULES):
            return raw

        def renamed(node):
            if isinstance(node, dict):
                node = {k: renamed(v) for k, v in node.items()}
                if node.get("__module__") in MOVED_MODULES:
                    node["__module__"] = MOVED_MODULES[node["__module__"]]
                return node
            if isinstance(node, list):
                return [renamed(v) for v in node]
            return node

        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as moved:
            for info in archive.infolist():
                data = archive.read(info.filename)
                if info.filename == "schema.json":
                    data = json.dumps(renamed(json.loads(data))).encode()
                moved.writestr(info, data)
    return out.getvalue()


_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "slice", "complex", "float", "int", "bool",
                  "str", "bytes", "bytearray", "getattr"}


def _restricted_unpickler(trust: bool):
    from joblib.numpy_pickle import NumpyUnpickler

    class Restricted(NumpyUnpickler):
        """joblib's unpickler admitting only scikit-learn, NumPy and SciPy classes (and plain builtins)."""

        def find_class(self, module, name):
            if trust:
                return super().find_class(module, name)
            ok = (module.startswith(("sklearn.", "numpy", "scipy.", "joblib.numpy_pickle"))
                  or (module == "builtins" and name in _SAFE_BUILTINS and name != "getattr")
                  or (module == "copyreg" and name == "_reconstructor")
                  or (module == "collections" and name == "OrderedDict")
                  or (module == "torch.torch_version" and name == "TorchVersion"))  # a str: version 1's record
            if not ok:
                raise pickle.UnpicklingError(f"refused type {module}.{name}")
            return super().find_class(module, name)

    return Restricted


def load_pickle(path: Path, raw: bytes, trust: bool) -> Any:
    """The object of joblib/pickle bytes ``raw``: scikit-learn, NumPy, SciPy and plain builtin types only,
    unless ``trust`` (then anything: a pickle can run code).

    Raises
    ------
    InputError
        An unreadable file, a refused type, or (untrusted) a bare estimator instead of a record.
    """
    unpickler = _restricted_unpickler(trust)
    try:
        with io.BytesIO(raw) as f:
            record = unpickler(str(path), f, ensure_native_byte_order=True).load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if msg.startswith("refused type"):
            raise InputError(f"{path}: a pickle holding a type this tool does not write ({msg[13:]}); "
                             "refused (pass --trust-pickle only for a file you trust)") from None
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    except Exception as exc:  # pickle raises many types on bad files
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    if not isinstance(record, dict) and not trust:
        raise InputError(f"{path}: a bare pickled estimator (the original tool's format); it cannot be checked "
                         "and a pickle can run code: pass --trust-pickle to use it anyway")
    return record
