"""A ``last_layer.sav`` that would run code is refused before any of it runs (issue 24).

Every route the loaders accept is tried: skops files holding a stored function, method,
``partial``, operator function, constructor call, a FunctionTransformer, a type or object
node naming a function of an otherwise admitted module, an array node naming a function;
joblib pickles calling ``os.system``, ``eval``, a NumPy or scikit-learn function, a
``getattr`` chain, or holding an admitted function or class as a value.  Each payload
would create a marker file; each must give one ``InputError`` line naming the file, and
the marker must not exist.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest

from cgcnn import InputError
from cgcnn.transfer import LastLayer, make_estimator
from cgcnn.transfer.layertypes import LAYER_CLASSES, PICKLE_GLOBALS, SKOPS_LOADERS, check_loaded

REPO = Path(__file__).resolve().parents[1]
FORMAT = "cgcnn-kappa last layer 2"


def fitted(kind="ridge"):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4))
    return make_estimator(kind).fit(X, X @ [1.0, -0.5, 0.2, 0.0]), X


def refused(path: Path, marker: Path, *match: str) -> str:
    """Load ``path``: one line of InputError naming it (and ``match``), nothing run."""
    with pytest.raises(InputError) as info:
        LastLayer.load(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg, msg
    for m in match:
        assert m in msg, msg
    assert not marker.exists(), "the payload ran"
    return msg


# ---------------------------------------------------------------------- skops files

def skops_bytes(obj) -> bytes:
    import skops.io as sio

    return sio.dumps(obj)


def with_node(tmp_path: Path, node: dict, name="last_layer.sav") -> Path:
    """A skops last-layer record whose ``estimator`` entry is the schema node ``node``."""
    raw = skops_bytes({"format": FORMAT, "estimator": 0})
    src = zipfile.ZipFile(io.BytesIO(raw))
    schema = json.loads(src.read("schema.json"))
    schema["content"]["estimator"] = node
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info, json.dumps(schema) if info.filename == "schema.json" else src.read(info.filename))
    path = tmp_path / name
    path.write_bytes(out.getvalue())
    return path


def json_node(value) -> dict:
    return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(value),
            "is_json": True}


def seq_node(kind: str, items: list) -> dict:
    return {"__class__": kind, "__module__": "builtins", "__loader__": f"{kind.title()}Node", "content": items}


def savetxt_module() -> str:
    return next(m for m in ("numpy.lib._npyio_impl", "numpy.lib.npyio") if hasattr(_try_import(m), "savetxt"))


def _try_import(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@pytest.mark.parametrize("func, node", [(subprocess.call, "FunctionNode"), (np.savetxt, "FunctionNode"),
                                        (os.system, "TypeNode")], ids=["subprocess.call", "numpy.savetxt", "os.system"])
def test_skops_function_at_top_level(tmp_path, func, node):
    """A Python function is a FunctionNode, a builtin one a TypeNode: neither is admitted."""
    marker = tmp_path / "ran"
    path = tmp_path / "last_layer.sav"
    path.write_bytes(skops_bytes({"format": FORMAT, "estimator": func}))
    assert node in zipfile.ZipFile(path).read("schema.json").decode()
    refused(path, marker, node, "refused")


@pytest.mark.parametrize("func", [os.system, eval, np.savetxt], ids=["os.system", "eval", "numpy.savetxt"])
def test_skops_function_transformer_in_a_pipeline(tmp_path, func):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    marker = tmp_path / "ran"
    est, _ = fitted()
    pipe = make_pipeline(FunctionTransformer(func, kw_args={}), *[s for _, s in est.steps])
    path = tmp_path / "last_layer.sav"
    path.write_bytes(skops_bytes({"format": FORMAT, "estimator": pipe}))
    refused(path, marker, "refused")


def test_skops_constructor_call_of_a_numpy_function(tmp_path):
    """ConstructorFromReduceNode calls its class with stored arguments: here numpy's savetxt,
    which the former module-prefix check admitted, writing the marker at load time."""
    marker = tmp_path / "ran"
    node = {"__class__": "savetxt", "__module__": savetxt_module(), "__loader__": "ConstructorFromReduceNode",
            "content": seq_node("tuple", [json_node(str(marker)), seq_node("list", [json_node(1)])])}
    refused(with_node(tmp_path, node), marker, "ConstructorFromReduceNode", "refused")


@pytest.mark.parametrize("loader", ["ObjectNode", "TypeNode", "NdArrayNode", "DictNode"])
def test_skops_node_naming_a_function_of_an_admitted_module(tmp_path, loader):
    marker = tmp_path / "ran"
    node = {"__class__": "savetxt", "__module__": savetxt_module(), "__loader__": loader, "content": {}}
    if loader == "NdArrayNode":
        node.update(type="json", content=[json_node(str(marker))], shape=seq_node("tuple", [json_node(1)]))
    if loader == "DictNode":
        node["key_types"] = seq_node("list", [])
    refused(with_node(tmp_path, node), marker, "does not write", "savetxt")


def test_skops_dict_key_type_naming_a_function(tmp_path):
    """A dict's key types are called on its keys: one naming os.system would run the key."""
    marker = tmp_path / "ran"
    raw = skops_bytes({"format": FORMAT, "estimator": 0})
    src = zipfile.ZipFile(io.BytesIO(raw))
    schema = json.loads(src.read("schema.json"))
    schema["content"][f"touch {marker}"] = json_node(0)
    schema["key_types"]["content"].append({"__class__": "system", "__module__": "os", "__loader__": "TypeNode"})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            z.writestr(info, json.dumps(schema) if info.filename == "schema.json" else src.read(info.filename))
    path = tmp_path / "last_layer.sav"
    path.write_bytes(out.getvalue())
    refused(path, marker, "os.system", "refused")


def test_skops_method_partial_and_operator(tmp_path):
    import operator

    from sklearn.preprocessing import StandardScaler

    marker = tmp_path / "ran"
    for i, value in enumerate([StandardScaler().fit, functools.partial(os.system, f"touch {marker}"),
                               operator.methodcaller("system", f"touch {marker}")]):
        path = tmp_path / f"last_layer{i}.sav"
        path.write_bytes(skops_bytes({"format": FORMAT, "estimator": value}))
        refused(path, marker, "refused")


def test_skops_numpy_function_as_an_attribute_of_an_admitted_estimator(tmp_path):
    marker = tmp_path / "ran"
    est, _ = fitted()
    est.steps[1][1].callback_ = np.savetxt  # a RidgeCV carrying a function
    path = tmp_path / "last_layer.sav"
    path.write_bytes(skops_bytes({"format": FORMAT, "estimator": est}))
    refused(path, marker, "FunctionNode", "refused")


def test_skops_refusal_from_the_command_line(tmp_path):
    """Exit status 2 and one line naming the file, before any model is read."""
    marker = tmp_path / "ran"
    node = {"__class__": "savetxt", "__module__": savetxt_module(), "__loader__": "ConstructorFromReduceNode",
            "content": seq_node("tuple", [json_node(str(marker)), seq_node("list", [json_node(1)])])}
    path = with_node(tmp_path, node)
    proc = subprocess.run([sys.executable, str(REPO / "transfer_learning_kappa.py"), "--train", "0",
                           str(REPO / "models" / "source.pth.tar"), str(REPO / "data" / "sample"), "-q",
                           "--last-layer", str(path), "--results", str(tmp_path / "results.csv"),
                           "--test-results", str(tmp_path / "test_results.csv")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()
    assert not (tmp_path / "results.csv").exists()


# ---------------------------------------------------------------------- joblib pickles (version 1)

class Call:
    """Pickles as a call of ``func(*args)`` (what a hostile pickle holds)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def v1_record(estimator, **extra) -> dict:
    return {"format": "cgcnn-kappa last layer 1", "estimator": estimator, "n_features": 4, **extra}


def write_pickle(tmp_path: Path, obj, name="last_layer.sav") -> Path:
    path = tmp_path / name
    joblib.dump(obj, path)
    return path


@pytest.mark.parametrize("payload", ["os.system", "eval", "numpy.savetxt", "sklearn.dump_svmlight_file"])
def test_pickle_calling_a_function(tmp_path, payload):
    from sklearn.datasets import dump_svmlight_file

    marker = tmp_path / "ran"
    call = {"os.system": Call(os.system, f"touch {marker}"),
            "eval": Call(eval, f"open({str(marker)!r}, 'w').close()"),
            "numpy.savetxt": Call(np.savetxt, str(marker), [1.0]),
            "sklearn.dump_svmlight_file": Call(dump_svmlight_file, np.ones((1, 1)), [1.0], str(marker))}[payload]
    path = write_pickle(tmp_path, v1_record(call))
    msg = refused(path, marker, "refused", "--trust-pickle")
    assert payload.split(".")[-1] in msg


def test_pickle_getattr_chain(tmp_path):
    """getattr(__import__('os'), 'system')('touch ...'), written opcode by opcode."""
    marker = tmp_path / "ran"
    raw = (b"\x80\x02cbuiltins\ngetattr\ncbuiltins\n__import__\nX\x02\x00\x00\x00os\x85R"
           + b"X\x06\x00\x00\x00system\x86R" + pickle.dumps((f"touch {marker}",), protocol=2)[2:-1] + b"R.")
    path = tmp_path / "last_layer.sav"
    path.write_bytes(raw)
    refused(path, marker, "builtins.getattr", "refused")
    # the same chain through an admitted module's attribute
    raw = (b"\x80\x02cbuiltins\ngetattr\ncnumpy\nndarray\nX\x06\x00\x00\x00tofile\x86R.")
    path.write_bytes(raw)
    refused(path, marker, "builtins.getattr")


def test_pickle_admitted_function_or_class_as_a_value(tmp_path):
    """A reconstruction function or an admitted class is found by name, but may not be kept as a value."""
    from sklearn.pipeline import Pipeline

    marker = tmp_path / "ran"
    est, _ = fitted()
    reconstruct = np.ndarray.__reduce__(np.zeros(1, dtype=object))[0]  # numpy's _reconstruct
    for i, value in enumerate([reconstruct, Pipeline, np.dtype]):
        path = write_pickle(tmp_path, v1_record(est, extra=value), f"last_layer{i}.sav")
        refused(path, marker, "as a value", "refused")


def test_pickle_object_of_a_foreign_type_built_by_an_admitted_rebuilder(tmp_path):
    """copyreg._reconstructor(object, object, None) is admitted by name; the bare object it builds is not."""
    marker = tmp_path / "ran"
    raw = b"\x80\x02}(X\x06\x00\x00\x00formatX\x18\x00\x00\x00cgcnn-kappa last layer 1X\t\x00\x00\x00estimator" \
          b"ccopyreg\n_reconstructor\ncbuiltins\nobject\ncbuiltins\nobject\nN\x87Ru."
    path = tmp_path / "last_layer.sav"
    path.write_bytes(raw)
    refused(path, marker, "builtins.object", "refused")


def test_pickle_refusal_from_the_command_line(tmp_path):
    marker = tmp_path / "ran"
    path = write_pickle(tmp_path, v1_record(Call(np.savetxt, str(marker), [1.0])))
    proc = subprocess.run([sys.executable, str(REPO / "transfer_learning_kappa.py"), "--train", "0",
                           str(REPO / "models" / "source.pth.tar"), str(REPO / "data" / "sample"), "-q",
                           "--last-layer", str(path), "--results", str(tmp_path / "results.csv")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(path) in proc.stderr
    assert not marker.exists()


def test_trust_pickle_keeps_its_meaning(tmp_path):
    """With --trust-pickle a pickle is loaded as it is (a bare estimator of the original tool)."""
    est, X = fitted("mlp")
    path = write_pickle(tmp_path, est)
    with pytest.warns(UserWarning, match="trust-pickle"):
        layer = LastLayer.load(path, trust_pickle=True)
    np.testing.assert_array_equal(layer.predict(X).prediction, est.predict(X))


@pytest.mark.parametrize("kind", ["mlp", "ridge", "rf", "gp"])
def test_version_1_records_of_every_type_load(tmp_path, kind):
    """Version 1 wrote mlp, ridge, rf and gp last layers as joblib records: each loads and predicts the same."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gp":  # version 1's kernel
        rng = np.random.default_rng(0)
        X = rng.normal(size=(12, 4))
        est = make_pipeline(StandardScaler(), GaussianProcessRegressor(
            ConstantKernel(1.0) * RBF(10.0, (1e-2, 1e4)) + WhiteKernel(0.1), normalize_y=True, random_state=0))
        est.fit(X, X[:, 0])
    else:
        est, X = fitted(kind)
    path = write_pickle(tmp_path, v1_record(est, kind=kind, seed=0, n_train=12, train_mae=np.float64(0.1),
                                            versions={"numpy": np.__version__}))
    layer = LastLayer.load(path)
    np.testing.assert_array_equal(layer.predict(X).prediction, est.predict(X))


# ---------------------------------------------------------------------- the lists themselves

def test_listed_classes_are_the_public_ones():
    """Each listed (module, name) is where the class its public import path gives lives now, so that
    a library that moved a class shows here, not as a refused last layer."""
    public = {
        "ColumnKernel": "cgcnn.transfer.estimators", "MemberAverage": "cgcnn.transfer.estimators",
        "Pipeline": "sklearn.pipeline", "StandardScaler": "sklearn.preprocessing", "RidgeCV": "sklearn.linear_model",
        "MLPRegressor": "sklearn.neural_network", "RandomForestRegressor": "sklearn.ensemble",
        "VotingRegressor": "sklearn.ensemble", "DecisionTreeRegressor": "sklearn.tree",
        "GaussianProcessRegressor": "sklearn.gaussian_process", "KFold": "sklearn.model_selection",
        "Bunch": "sklearn.utils", "CrossConformalRegressor": "mapie.regression",
        "RandomState": "numpy.random", "MT19937": "numpy.random",
    }
    for module, name in LAYER_CLASSES:
        if module == "numpy" and name != "ndarray":  # scalar types: numpy 2 names bool_ bool
            assert issubclass(getattr(np, name), np.generic)
            continue
        where = public.get(name, module)
        cls = getattr(importlib.import_module(where), name)
        assert isinstance(cls, type), (module, name)
        assert (cls.__module__, cls.__qualname__) == (module, name), (module, name, cls.__module__)
    for module, name in PICKLE_GLOBALS:
        assert getattr(importlib.import_module(module), name, None) is not None or module.startswith("numpy.core")


def test_no_loader_that_calls_a_stored_function_is_admitted():
    assert not {"FunctionNode", "MethodNode", "PartialNode", "OperatorFuncNode", "ConstructorFromReduceNode",
                "ReduceNode", "RandomGeneratorNode", "DTypeNode", "SetNode"} & set(SKOPS_LOADERS)
    assert SKOPS_LOADERS["TypeNode"] == {("builtins", "str")}
    assert not {("builtins", n) for n in ("getattr", "eval", "exec", "__import__", "open")} & PICKLE_GLOBALS


def test_check_loaded_finds_callables_anywhere():
    est, _ = fitted()
    assert check_loaded({"estimator": est, "x": [1, (2.0, "a")], "a": np.zeros(3)}) is None
    for bad, what in [(os.system, "function"), (functools.partial(print), "partial"), (est.predict, "method"),
                      (np.savetxt, "function"), (dict, "class"), (object(), "builtins.object")]:
        est.steps[0][1].hidden_ = [{"deep": bad}]
        assert what in (check_loaded({"estimator": est}) or ""), bad


@pytest.mark.parametrize("route", ["skops", "pickle"])
def test_decision_tree_with_crafted_indices_is_refused(tmp_path, route):
    """scikit-learn follows tree indices unchecked: a cycle would hang predict, an index past the
    end read outside the arrays.  Such a forest is refused when loaded."""
    from sklearn.tree._tree import Tree

    est, X = fitted("rf")
    est.estimators_ = est.estimators_[:2]
    tree = est.estimators_[1].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes["left_child"][1] = 0  # back to the root: a cycle
    state["nodes"] = nodes
    bad = Tree(tree.n_features, np.array([1], dtype=np.intp), tree.n_outputs)
    bad.__setstate__(state)
    est.estimators_[1].tree_ = bad
    path = tmp_path / "last_layer.sav"
    if route == "skops":
        path.write_bytes(skops_bytes({"format": FORMAT, "estimator": est}))
    else:
        write_pickle(tmp_path, v1_record(est))
    refused(path, tmp_path / "ran", "decision tree", "refused")
