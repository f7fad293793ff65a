"""Reading a ``last_layer.sav`` without running code from it.

- skops files (this version's format): the schema is checked before anything is built:
  only the skops loaders of plain data and objects, and only the exact classes of
  :data:`cgcnn.transfer.layertypes.LAYER_CLASSES` (:func:`load_skops`); skops is imported
  without its costly start-up scan (:func:`skops_io`);
- joblib pickles of version 1: a restricted unpickler admitting exactly the classes and
  NumPy/joblib rebuilding functions of :data:`~cgcnn.transfer.layertypes.PICKLE_GLOBALS`;
  a bare pickled estimator (the original tool's file) only when trusted (:func:`load_pickle`).

Either way the loaded object is then walked (:func:`cgcnn.transfer.layertypes.check_loaded`):
a function, method, class or object of another type stored as a value is refused.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from cgcnn import InputError
from cgcnn.transfer.layertypes import LAYER_CLASSES, PICKLE_GLOBALS, SKOPS_LOADERS, check_loaded

__all__ = ["MOVED_MODULES", "check_fitted", "skops_io", "load_skops", "load_pickle", "v1_fields"]

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


def v1_fields(record: dict) -> dict:
    """The :class:`cgcnn.transfer.lastlayer.LastLayer` fields of a version-1 record (a joblib file of format
    ``cgcnn-kappa last layer 1``: the original route, ``crys_fea`` alone)."""
    import math

    return {"estimator": record["estimator"], "kind": record.get("kind", "mlp"), "requested": record.get("kind", "mlp"),
            "seed": int(record.get("seed", 0)),
            "inputs": {"sources": record.get("sources", []), "descriptors": "none", "property_models": []},
            "n_features": int(record.get("n_features", 0)), "n_train": int(record.get("n_train", 0)),
            "train_mae": float(record.get("train_mae") or math.nan), "cv": {"mae": record.get("cv_mae")},
            "versions": record.get("versions", {})}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def skops_io():
    """``skops.io``, imported here, where it is first needed, without its one avoidable cost.

    On import, skops lists the types it trusts by default; for scikit-learn's estimators it
    calls ``sklearn.utils.all_estimators()``, which imports every module of scikit-learn (and
    with them pytest and dask): most of a second, longer than the rest of a ``--train 0``
    start-up after torch.  :func:`load_skops` does not need that list: it checks every
    loader and class of a file against its own exact lists and passes skops the file's
    types explicitly, so the same files load, with the same types, either way.  skops is
    therefore imported with ``all_estimators`` answering an empty list; its default trust
    in this process is then narrower (scikit-learn estimators need an explicit
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
    """The object of skops bytes ``raw`` (read from ``path``), built only when its schema holds
    nothing but admitted loaders and classes (:data:`cgcnn.transfer.layertypes.SKOPS_LOADERS`).

    Raises
    ------
    InputError
        An unreadable file, or one holding another loader (a stored function, method,
        ``partial`` or constructor call) or class (refused before anything is imported or
        built), or a function, class or foreign object among the loaded values.
    """
    try:
        raw, schema = _with_moved_modules(raw)
    except Exception as exc:
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    _check_schema(schema, path)
    sio = skops_io()
    # every class of the schema is one of LAYER_CLASSES (checked above); skops audits the tree it builds
    # against the same list, a second look that refuses anything else (one audit, not two: a third of the load)
    trusted = sorted(f"{module}.{name}" for module, name in LAYER_CLASSES)
    try:
        obj = sio.loads(raw, trusted=trusted)
    except Exception as exc:
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    _refuse_callables(obj, path)
    return obj


def _check_schema(schema, path) -> None:
    """Refuse a skops schema with a loader outside :data:`SKOPS_LOADERS` or a class its loader
    may not build; every dict with a ``__loader__`` (anywhere in the schema) is a node."""
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        todo.extend(node.values())
        if "__loader__" not in node and "__class__" not in node:
            continue
        loader, name = node.get("__loader__"), (node.get("__module__"), node.get("__class__"))
        if loader not in SKOPS_LOADERS:
            raise InputError(f"{path}: holds a {loader} ({name[0]}.{name[1]}), which this tool does not write "
                             "(it would call a stored function or constructor); refused")
        if name not in SKOPS_LOADERS[loader]:
            raise InputError(f"{path}: holds types this tool does not write ({name[0]}.{name[1]} by {loader}); "
                             "refused")


def _refuse_callables(obj, path, extra: frozenset = frozenset()) -> None:
    found = check_loaded(obj, extra)
    if found is not None:
        what = found if found.startswith("a decision tree") else f"{found} as a value"
        raise InputError(f"{path}: holds {what}, which this tool does not write; refused")


def _with_moved_modules(raw: bytes) -> tuple[bytes, Any]:
    """skops bytes whose schema names the project's classes by the modules that hold them now
    (:data:`MOVED_MODULES`: a ``last_layer.sav`` of an earlier version; ``raw`` itself when nothing
    moved), and that schema (parsed JSON)."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        text = archive.read("schema.json")
        schema = json.loads(text)
        if not any(f'"{old}"'.encode() in text for old in MOVED_MODULES):
            return raw, schema

        def renamed(node):
            if isinstance(node, dict):
                node = {k: renamed(v) for k, v in node.items()}
                if node.get("__module__") in MOVED_MODULES:
                    node["__module__"] = MOVED_MODULES[node["__module__"]]
                return node
            if isinstance(node, list):
                return [renamed(v) for v in node]
            return node

        schema = renamed(schema)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as moved:
            for info in archive.infolist():
                data = archive.read(info.filename)
                if info.filename == "schema.json":
                    data = json.dumps(schema).encode()
                moved.writestr(info, data)
    return out.getvalue(), schema


def _safe_array_wrapper():
    """joblib's array record, refusing an object array: older joblib reads one with plain
    ``pickle.load``, outside the restricted unpickler (this tool never wrote one)."""
    import numpy as np
    from joblib.numpy_pickle import NumpyArrayWrapper

    class SafeArrayWrapper(NumpyArrayWrapper):
        def read_array(self, *args, **kwargs):
            if not isinstance(self.dtype, np.dtype) or self.dtype.hasobject:
                raise pickle.UnpicklingError("refused type joblib array of Python objects (a nested pickle)")
            return super().read_array(*args, **kwargs)

    return SafeArrayWrapper


def _restricted_unpickler(trust: bool):
    from joblib.numpy_pickle import NumpyUnpickler

    wrapper = None if trust else _safe_array_wrapper()

    class Restricted(NumpyUnpickler):
        """joblib's unpickler admitting only the exact globals of :data:`PICKLE_GLOBALS`."""

        def find_class(self, module, name):
            if trust:
                return super().find_class(module, name)
            if (module, name) not in PICKLE_GLOBALS:
                raise pickle.UnpicklingError(f"refused type {module}.{name}")
            if (module, name) == ("joblib.numpy_pickle", "NumpyArrayWrapper"):
                return wrapper
            return super().find_class(module, name)

    return Restricted


_PICKLE_EXTRA = frozenset({("torch.torch_version", "TorchVersion")})


def load_pickle(path: Path, raw: bytes, trust: bool) -> Any:
    """The object of joblib/pickle bytes ``raw``: the classes a version-1 last layer holds and plain
    data only (:data:`cgcnn.transfer.layertypes.PICKLE_GLOBALS`), unless ``trust`` (then anything:
    a pickle can run code).

    Raises
    ------
    InputError
        An unreadable file, a refused type or function, a function or foreign object among the
        loaded values, or (untrusted) a bare estimator instead of a record.
    """
    unpickler = _restricted_unpickler(trust)
    try:
        with io.BytesIO(raw) as f:
            record = unpickler(str(path), f, ensure_native_byte_order=True).load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if msg.startswith("refused type"):
            raise InputError(f"{path}: a pickle naming a type or function this tool does not write ({msg[13:]}); "
                             "refused (pass --trust-pickle only for a file you trust)") from None
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    except Exception as exc:  # pickle raises many types on bad files
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    if trust:
        return record
    if not isinstance(record, dict):
        raise InputError(f"{path}: a bare pickled estimator (the original tool's format); it cannot be checked "
                         "and a pickle can run code: pass --trust-pickle to use it anyway")
    _refuse_callables(record, path, _PICKLE_EXTRA)
    return record
