"""What a ``last_layer.sav`` may hold: the exact classes this tool writes, and the check of a loaded one.

A last-layer file names the classes of the objects it holds; a loader that admits a name
by its module (every ``sklearn.*``) admits functions too (``sklearn.preprocessing.FunctionTransformer``
with a stored ``func``, a NumPy or SciPy function, ``builtins.getattr`` in a pickle), and
through them a file can run code.  So only the classes listed here are admitted, by exact
module and name, and only the skops loaders that build plain data or an object of such a
class (never one that calls a stored function); after loading, :func:`check_loaded` walks
the object and refuses any function, method, class or object of another type found as a
value.

The lists were taken from the files this tool writes: last layers of every
``--last-layer-type`` (auto, mlp, ridge, rf, gp, ensemble), with and without ensemble
members, with and without intervals (:mod:`cgcnn.transfer.lastlayer`), and the joblib
files of version 1 (mlp, ridge, rf, gp).  ``tests/test_safety_layerfile.py`` checks that
each listed class is the class its public import path gives.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LAYER_CLASSES", "SKOPS_LOADERS", "PICKLE_GLOBALS", "check_loaded"]

#: The classes a last layer may hold, as (module, name) recorded in its file (``type(obj).__module__``).
LAYER_CLASSES = frozenset({
    # this tool's
    ("cgcnn.transfer.estimators", "ColumnKernel"),
    ("cgcnn.transfer.estimators", "MemberAverage"),
    # scikit-learn: the regressors of every --last-layer-type, their parts and CV splitter
    ("sklearn.pipeline", "Pipeline"),
    ("sklearn.preprocessing._data", "StandardScaler"),
    ("sklearn.linear_model._ridge", "RidgeCV"),
    ("sklearn.neural_network._multilayer_perceptron", "MLPRegressor"),
    ("sklearn.ensemble._forest", "RandomForestRegressor"),
    ("sklearn.ensemble._voting", "VotingRegressor"),
    ("sklearn.tree._classes", "DecisionTreeRegressor"),
    ("sklearn.tree._tree", "Tree"),
    ("sklearn.gaussian_process._gpr", "GaussianProcessRegressor"),
    ("sklearn.gaussian_process.kernels", "ConstantKernel"),
    ("sklearn.gaussian_process.kernels", "DotProduct"),
    ("sklearn.gaussian_process.kernels", "Product"),
    ("sklearn.gaussian_process.kernels", "RBF"),
    ("sklearn.gaussian_process.kernels", "Sum"),
    ("sklearn.gaussian_process.kernels", "WhiteKernel"),
    ("sklearn.model_selection._split", "KFold"),
    ("sklearn.utils._bunch", "Bunch"),
    # MAPIE: the cross-conformal interval model
    ("mapie.regression.regression", "CrossConformalRegressor"),
    ("mapie.regression.regression", "_MapieRegressor"),
    ("mapie.estimator.regressor", "EnsembleRegressor"),
    ("mapie.conformity_scores.bounds.absolute", "AbsoluteConformityScore"),
    # NumPy: arrays, their scalars, random states
    ("numpy", "ndarray"),
    ("numpy", "float64"),
    ("numpy", "float32"),
    ("numpy", "int64"),
    ("numpy", "int32"),
    ("numpy", "bool"),  # NumPy 2's name of bool_
    ("numpy", "bool_"),
    ("numpy.random.mtrand", "RandomState"),
    ("numpy.random._mt19937", "MT19937"),
    # plain data
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "str"),
})

#: skops loaders admitted, each with the classes it may build.  They build plain data, an array
#: (``.npy`` read without pickle) or an object of a listed class from its attributes; the loaders
#: that call a stored function (FunctionNode, MethodNode, PartialNode, OperatorFuncNode, the
#: constructor calls of ConstructorFromReduceNode, ...) are not among them.  TypeNode is admitted
#: only for ``builtins.str``: skops records a dict's key types with it.
SKOPS_LOADERS: dict[str, frozenset] = {
    "DictNode": frozenset({("builtins", "dict"), ("sklearn.utils._bunch", "Bunch")}),
    "ListNode": frozenset({("builtins", "list")}),
    "TupleNode": frozenset({("builtins", "tuple")}),
    "JsonNode": frozenset({("builtins", "str")}),
    "TypeNode": frozenset({("builtins", "str")}),
    "NdArrayNode": frozenset(c for c in LAYER_CLASSES if c[0] == "numpy"),
    "RandomStateNode": frozenset({("numpy.random.mtrand", "RandomState")}),
    "TreeNode": frozenset({("sklearn.tree._tree", "Tree")}),
    "ObjectNode": frozenset(c for c in LAYER_CLASSES if c[0].split(".")[0] in ("cgcnn", "sklearn", "mapie")
                            and c != ("sklearn.tree._tree", "Tree") and c != ("sklearn.utils._bunch", "Bunch")),
}

_NUMPY_CORE = ("numpy._core.multiarray", "numpy.core.multiarray")  # NumPy 2 and 1

#: What a version-1 joblib file may name: the listed classes, and exactly the functions NumPy's
#: and joblib's pickles call to rebuild arrays, scalars, dtypes and random states.
PICKLE_GLOBALS = frozenset(
    {c for c in LAYER_CLASSES if c[0] != "builtins"}
    | {(m, name) for m in _NUMPY_CORE for name in ("_reconstruct", "scalar")}
    | {
        ("numpy", "dtype"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),  # copyreg._reconstructor's base
        ("torch.torch_version", "TorchVersion"),  # a str: version 1's record of the torch version
    }
)

_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _qualname(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__qualname__


def _described(value: Any) -> str:
    import functools
    import types

    if isinstance(value, type):
        return f"the class {value.__module__}.{value.__qualname__}"
    if isinstance(value, functools.partial):
        return "a functools.partial"
    if isinstance(value, types.MethodType):
        return f"the method {getattr(value, '__qualname__', '?')}"
    if callable(value) and not hasattr(type(value), "fit"):
        name = getattr(value, "__qualname__", None) or type(value).__qualname__
        return f"the function {getattr(value, '__module__', None) or type(value).__module__}.{name}"
    return f"an object of type {type(value).__module__}.{type(value).__qualname__}"


def _tree_fault(tree) -> str | None:
    """Why a scikit-learn ``Tree`` could not be walked safely, or None.

    scikit-learn follows a tree's child and feature indices without bounds checks: a crafted
    one could read outside its arrays or loop for ever.  The trees it builds number children
    after their parent (depth first), so: every child index lies in (parent, node_count), leaves
    have both children -1, an inner node's feature lies in [0, n_features), one value row per node.
    """
    import numpy as np

    state = tree.__getstate__()
    nodes, values, count = state.get("nodes"), state.get("values"), int(state.get("node_count", -1))
    if not isinstance(nodes, np.ndarray) or nodes.dtype.names is None or len(nodes) != count or count < 1 \
            or not isinstance(values, np.ndarray) or len(values) != count:
        return "a decision tree of inconsistent size"
    left, right, feature = (nodes[k].astype(np.int64) for k in ("left_child", "right_child", "feature"))
    index = np.arange(count)
    leaf = (left == -1) & (right == -1)
    inner = ~leaf
    if not (((left > index) & (left < count) & (right > index) & (right < count)) | leaf).all() \
            or not ((feature[inner] >= 0) & (feature[inner] < tree.n_features)).all():
        return "a decision tree whose node indices are out of range"
    return None


def check_loaded(obj: Any, extra: frozenset = frozenset()) -> str | None:
    """Walk a loaded last layer; a description of the first value that is not plain data, an
    array of numbers or an object of a listed class (a function, method, ``partial``, class, or
    object of another type), or a decision tree whose indices could not be followed safely, else None.

    Dicts, lists, tuples, object arrays and the instance attributes (``__dict__``) of objects
    of :data:`LAYER_CLASSES` (and ``extra``) are followed; every object is visited once.
    """
    import numpy as np

    allowed = LAYER_CLASSES | extra
    seen: set[int] = set()
    todo = [obj]
    while todo:
        value = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        kind = type(value)
        if kind in _PLAIN or isinstance(value, np.dtype):
            continue
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                if _qualname(kind) not in allowed:
                    return _described(value)
                todo.extend(value.ravel().tolist())
            continue
        if isinstance(value, np.generic):
            if isinstance(value, np.void) and value.dtype.hasobject:
                return _described(value)
            continue
        if isinstance(value, type) or _qualname(kind) not in allowed:
            return _described(value)
        if _qualname(kind) == ("sklearn.tree._tree", "Tree"):
            fault = _tree_fault(value)
            if fault is not None:
                return fault
        if isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, (list, tuple)):
            todo.extend(value)
        attrs = getattr(value, "__dict__", None)
        if isinstance(attrs, dict):
            todo.extend(attrs.values())
    return None
