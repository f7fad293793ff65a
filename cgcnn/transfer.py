"""Transfer learning of κ_L: frozen source model(s) → ``crys_fea`` → a scikit-learn last layer.

The method of T. Zhu, R. He, S. Gong, T. Xie, P. Gorai, K. Nielsch, J. C. Grossman,
Energy Environ. Sci. 14, 3559 (2021): a CGCNN trained on thousands of computed
log10 κ values is frozen; its crystal feature vector (the input of its output
layer) is the descriptor on which a small regressor is fit to measured values.
Several source models may be given; their ``crys_fea`` are concatenated, as in
the feature-based transfer of S. Ju et al., Phys. Rev. Materials (2021),
arXiv:1909.11234, from models of lower-order properties.

The last layer is saved with joblib as a dict: ``estimator`` (the fitted
scikit-learn estimator) and what is needed to refuse misuse later: each source
model's file name and SHA-256, the ``crys_fea`` lengths, the target, the library
versions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cgcnn import InputError, __version__
from cgcnn.checkpoint import SourceModel, save_atomic
from cgcnn.data import atom_init_digest

__all__ = [
    "LAST_LAYER_TYPES",
    "make_last_layer",
    "Features",
    "compute_features",
    "fit_last_layer",
    "save_last_layer",
    "load_last_layer",
]

TARGET = "log10 kappa_L"  # log10 of κ_L in W m⁻¹ K⁻¹
FORMAT = "cgcnn-kappa last layer 1"


def make_last_layer(kind: str = "mlp", seed: int = 0):
    """A fresh, unfitted last layer.

    Parameters
    ----------
    kind : {"mlp", "ridge", "rf", "gp"}
        ``mlp``: the original tool's ``MLPRegressor(hidden_layer_sizes=(64,),
        activation='identity', solver='lbfgs', alpha=0.1, tol=1e-4, max_iter=200)``
        (Zhu et al. 2021), a linear model in effect.
        ``ridge``: standardised features, ``RidgeCV`` with alpha chosen by
        leave-one-out over 1e-3..1e3.
        ``rf``: ``RandomForestRegressor(n_estimators=300, min_samples_leaf=1)``.
        ``gp``: standardised features, ``GaussianProcessRegressor`` with a
        constant × RBF + white-noise kernel, targets normalised.
    seed : int
        ``random_state`` of the estimator.

    Raises
    ------
    InputError
        For an unknown ``kind``.
    """
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "mlp":
        return MLPRegressor(hidden_layer_sizes=(64,), activation="identity", solver="lbfgs", alpha=0.1,
                            tol=1e-4, max_iter=200, random_state=seed)
    if kind == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 25)))
    if kind == "rf":
        return RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=1)
    if kind == "gp":
        kernel = ConstantKernel(1.0) * RBF(length_scale=10.0, length_scale_bounds=(1e-2, 1e4)) + WhiteKernel(0.1)
        return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed))
    raise InputError(f"unknown last layer type {kind!r}; choose one of {', '.join(LAST_LAYER_TYPES)}")


LAST_LAYER_TYPES = ("mlp", "ridge", "rf", "gp")


@dataclass
class Features:
    """Descriptors of one data folder.

    Attributes
    ----------
    ids : list of str
        ``cif_id`` in ``id_prop.csv`` order.
    targets : ndarray of shape (n,) or None
        Targets (log10 κ_L) when the folder has them.
    crys_fea : ndarray of shape (n, sum of h_fea_len over sources)
        Concatenated crystal feature vectors.
    source_prediction : ndarray of shape (n, n_sources)
        Each source model's own de-normalized prediction.
    """

    ids: list
    targets: np.ndarray | None
    crys_fea: np.ndarray
    source_prediction: np.ndarray


def compute_features(sources: Sequence[SourceModel], folder, batch_size: int = 500, workers: int = 0,
                     atom_init=None, cache_dir=None, progress: bool = True) -> Features:
    """``crys_fea`` of every crystal of ``folder`` under each source, concatenated.

    Each source reads the folder with its own graph parameters and atom features
    (the table stored in the checkpoint when there is one, else ``atom_init`` or
    the folder's ``atom_init.json``); sources that share both share one set of graphs.

    Raises
    ------
    InputError
        For the folder, CIF and checkpoint faults of :class:`cgcnn.data.CIFData` and
        :meth:`SourceModel.check_data`.
    """
    datasets: dict = {}
    feas, preds = [], []
    base = None
    for source in sources:
        data = source.dataset(folder, atom_init=atom_init, cache_dir=cache_dir)
        key = (data.params, atom_init_digest(data.atom_init))
        data = datasets.setdefault(key, data)
        if base is None:
            base = data
        fea, pred = source.run(data, batch_size=batch_size, workers=workers, progress=progress)
        feas.append(fea)
        preds.append(pred)
    return Features(base.ids, base.targets, np.concatenate(feas, axis=1), np.stack(preds, axis=1))


def _versions() -> dict:
    import sklearn
    import torch

    return {"cgcnn": __version__, "scikit-learn": sklearn.__version__, "torch": torch.__version__,
            "numpy": np.__version__}


def _source_record(source: SourceModel) -> dict:
    return {"name": source.path.name, "sha256": source.sha256, "crys_fea_len": source.crys_fea_len,
            "target": source.target.get("name", "")}


def fit_last_layer(X: np.ndarray, y: np.ndarray, kind: str = "mlp", seed: int = 0, cv_folds: int = 5) -> dict:
    """Fit a last layer on ``crys_fea`` and measure it.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        ``crys_fea``.
    y : ndarray of shape (n_samples,)
        log10 κ_L (W m⁻¹ K⁻¹).
    kind, seed
        As :func:`make_last_layer`.
    cv_folds : int
        Folds of the shuffled k-fold cross-validation (seeded); skipped when
        there are fewer samples than folds or ``cv_folds < 2``.

    Returns
    -------
    dict
        ``estimator`` (fitted on all samples), ``train_mae``, ``cv_mae`` and
        ``cv_mae_constant`` (cross-validated MAE of predicting the training mean),
        the last two None when cross-validation is skipped.
    """
    from sklearn.dummy import DummyRegressor
    from sklearn.metrics import mean_absolute_error
    from sklearn.model_selection import KFold, cross_val_predict

    if len(y) < 2:
        raise InputError(f"the last layer needs at least 2 crystals with targets, got {len(y)}")
    estimator = make_last_layer(kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence notes of the original MLP
        estimator.fit(X, y)
        train_mae = mean_absolute_error(y, estimator.predict(X))
        cv_mae = cv_const = None
        if cv_folds >= 2 and len(y) >= cv_folds:
            folds = KFold(cv_folds, shuffle=True, random_state=seed)
            cv_mae = mean_absolute_error(y, cross_val_predict(make_last_layer(kind, seed), X, y, cv=folds))
            cv_const = mean_absolute_error(y, cross_val_predict(DummyRegressor(), X, y, cv=folds))
    return {"estimator": estimator, "train_mae": float(train_mae), "cv_mae": cv_mae, "cv_mae_constant": cv_const}


def save_last_layer(path, fit: dict, sources: Sequence[SourceModel], kind: str, seed: int, n_train: int) -> dict:
    """Save a fitted last layer with its metadata, atomically, with joblib.

    Returns the saved dict.  Raises :class:`InputError` if ``path`` cannot be written.
    """
    import joblib

    record = {
        "format": FORMAT,
        "estimator": fit["estimator"],
        "kind": kind,
        "seed": seed,
        "target": TARGET,
        "sources": [_source_record(s) for s in sources],
        "n_features": int(sum(s.crys_fea_len for s in sources)),
        "n_train": int(n_train),
        "train_mae": fit["train_mae"],
        "cv_mae": fit["cv_mae"],
        "versions": _versions(),
    }
    save_atomic(record, path, saver=lambda obj, f: joblib.dump(obj, f))
    return record


def load_last_layer(path, sources: Sequence[SourceModel]) -> dict:
    """Load ``last_layer.sav`` and check it against the source models.

    ``last_layer.sav`` is a pickle: load only files you trust.  A bare estimator
    saved by the original tool is accepted with a warning (nothing to check).

    Raises
    ------
    InputError
        Missing or unreadable file; fit on other source models (checksums) or
        another ``crys_fea`` length.

    Warns
    -----
    UserWarning
        Written by another scikit-learn version.
    """
    import joblib
    import sklearn

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: last layer not found (fit one with --train 1)")
    try:
        record = joblib.load(path)
    except Exception as exc:  # joblib/pickle raise many types on bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        cause = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise InputError(f"{path}: not a readable last layer ({cause})") from None
    n_features = int(sum(s.crys_fea_len for s in sources))
    if not isinstance(record, dict):
        if not hasattr(record, "predict"):
            raise InputError(f"{path}: not a last layer (no predict method)")
        warnings.warn(f"{path}: a bare estimator without metadata (the original tool's format); "
                      "its source model cannot be checked")
        n_in = getattr(record, "n_features_in_", n_features)
        if n_in != n_features:
            raise InputError(f"{path}: fit on {n_in} features; the source model gives {n_features}")
        return {"estimator": record, "kind": type(record).__name__, "sources": [], "n_features": n_in}
    if record.get("format") != FORMAT or "estimator" not in record:
        raise InputError(f"{path}: not a last layer written by this tool")
    saved = record["sources"]
    given = [_source_record(s) for s in sources]
    if [s["sha256"] for s in saved] != [s["sha256"] for s in given]:
        names = ", ".join(s["name"] for s in saved)
        raise InputError(f"{path}: fit on other source model(s) ({names}); refit with --train 1 "
                         f"or give the source model(s) it was fit with")
    if record["n_features"] != n_features:
        raise InputError(f"{path}: fit on {record['n_features']} crys_fea values; the source model gives {n_features}")
    saved_sklearn = record.get("versions", {}).get("scikit-learn")
    if saved_sklearn and saved_sklearn != sklearn.__version__:
        warnings.warn(f"{path}: written with scikit-learn {saved_sklearn}, running {sklearn.__version__}; "
                      "predictions may differ (refit with --train 1 to be sure)")
    return record
