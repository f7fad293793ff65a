"""The last layer: a scikit-learn regressor on the last-layer inputs, with its record.

The method of T. Zhu et al., Energy Environ. Sci. 14, 3559 (2021): a small regressor
fit on a frozen source model's crystal features (``crys_fea``) with measured log10 κ_L.
:class:`LastLayer` adds what a user needs to trust one prediction:

- **a type chosen by validation** (``kind="auto"``): every candidate of
  :data:`CANDIDATES` is scored by repeated K-fold cross-validation *inside the
  training data*, the lowest MAE wins, and the table of CV figures is kept;
- **a prediction interval** at any level, by cross-conformal prediction (CV+,
  R. F. Barber, E. J. Candès, A. Ramdas, R. J. Tibshirani, Ann. Statist. 49, 486
  (2021); V. Vovk, A. Gammerman, G. Shafer, *Algorithmic Learning in a Random
  World*, Springer (2005)) through MAPIE's ``CrossConformalRegressor``, with its
  coverage and width measured by an outer cross-validation on the training data;
- **an applicability domain**: the mean Euclidean distance of a crystal to its
  ``k`` nearest training crystals in the standardised input space, and a threshold
  (the 95th percentile of the same distance for the training crystals, each left
  out of its own neighbourhood), so that a crystal unlike anything the last layer
  was fit on is flagged ``in_domain = False``.

It is saved with skops (``skops.io``), whose loader builds scikit-learn objects
without running code from the file; only types of scikit-learn, MAPIE and NumPy are
admitted.  Files written by version 1 of this tool (joblib pickles) load through a
restricted unpickler that admits the same types only; a bare pickled estimator (the
original tool's ``last_layer.sav``) loads only with ``trust_pickle=True``.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from cgcnn import InputError, __version__

__all__ = ["LAST_LAYER_TYPES", "CANDIDATES", "ColumnKernel", "make_estimator", "LastLayer", "Prediction", "check_level"]

TARGET = "log10 kappa_L"  # log10 of κ_L in W m⁻¹ K⁻¹
FORMAT = "cgcnn-kappa last layer 2"
FORMAT_V1 = "cgcnn-kappa last layer 1"
#: Kinds of :func:`make_estimator` and ``auto``.
LAST_LAYER_TYPES = ("auto", "mlp", "ridge", "rf", "gp")
#: Kinds ``auto`` chooses from.
CANDIDATES = ("ridge", "gp", "rf", "mlp")
#: Modules whose types a last-layer file may hold.
_TRUSTED_MODULES = ("sklearn.", "mapie.", "numpy.", "scipy.", "cgcnn.lastlayer.ColumnKernel")
_MIN_INTERVAL_SAMPLES = 10


class ColumnKernel(Kernel):
    """A scikit-learn kernel acting on some columns of the input only.

    ``ColumnKernel(RBF(3.0), (0, 1, 2))`` is an RBF kernel of the first three input
    columns; sums of such kernels give an additive Gaussian process whose groups of
    inputs are weighed by the marginal likelihood (Rasmussen & Williams 2006, ch. 4.2;
    D. K. Duvenaud et al., Additive Gaussian processes, NeurIPS 24 (2011)).

    Parameters
    ----------
    kernel : sklearn Kernel
    columns : tuple of int
    """

    def __init__(self, kernel=None, columns=()):
        self.kernel = kernel
        self.columns = columns

    def get_params(self, deep=True):
        params = {"kernel": self.kernel, "columns": self.columns}
        if deep and self.kernel is not None:
            params.update({f"kernel__{k}": v for k, v in self.kernel.get_params().items()})
        return params

    @property
    def hyperparameters(self):
        return [Hyperparameter(f"kernel__{h.name}", h.value_type, h.bounds, h.n_elements, h.fixed)
                for h in self.kernel.hyperparameters]

    @property
    def theta(self):
        return self.kernel.theta

    @theta.setter
    def theta(self, theta):
        self.kernel.theta = theta

    @property
    def bounds(self):
        return self.kernel.bounds

    def __call__(self, X, Y=None, eval_gradient=False):
        cols = list(self.columns)
        return self.kernel(X[:, cols], None if Y is None else Y[:, cols], eval_gradient=eval_gradient)

    def diag(self, X):
        return self.kernel.diag(X[:, list(self.columns)])

    def is_stationary(self):
        return self.kernel.is_stationary()

    def __repr__(self):
        return f"ColumnKernel({self.kernel!r}, columns {self.columns[0]}..{self.columns[-1]})"


def _kernel(groups: tuple[int, int] | None):
    """The ``gp`` kernel for inputs ``[crys_fea (groups[0] columns), descriptors (groups[1])]``."""
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

    n_crys, n_desc = groups if groups else (0, 0)
    if not n_desc or not n_crys:
        return (ConstantKernel(1.0) * RBF(length_scale=10.0, length_scale_bounds=(1e-2, 1e4))
                + ConstantKernel(0.1) * DotProduct(1.0) + WhiteKernel(0.1))
    crys = tuple(range(n_crys))
    desc = tuple(range(n_crys, n_crys + n_desc))
    return (ConstantKernel(1.0) * ColumnKernel(RBF(10.0, (1e-2, 1e4)), crys)
            + ConstantKernel(1.0) * ColumnKernel(RBF(3.0, (1e-2, 1e4)), desc)
            + ConstantKernel(0.1) * ColumnKernel(DotProduct(1.0), desc)
            + WhiteKernel(0.1))


def make_estimator(kind: str = "mlp", seed: int = 0, groups: tuple[int, int] | None = None):
    """A fresh, unfitted scikit-learn regressor.

    Parameters
    ----------
    kind : {"mlp", "ridge", "rf", "gp"}
        ``mlp``: the original tool's ``MLPRegressor(hidden_layer_sizes=(64,),
        activation='identity', solver='lbfgs', alpha=0.1, tol=1e-4, max_iter=200)``
        (Zhu et al. 2021), a linear model in effect, on the raw inputs as the original.
        ``ridge``: standardised inputs, ``RidgeCV`` with alpha chosen by efficient
        leave-one-out over 1e-3..1e3.
        ``rf``: ``RandomForestRegressor(n_estimators=300)``.
        ``gp``: standardised inputs, ``GaussianProcessRegressor``, targets normalised,
        hyper-parameters by maximum marginal likelihood (C. E. Rasmussen, C. K. I.
        Williams, *Gaussian Processes for Machine Learning*, MIT Press (2006)).  Its
        kernel is additive when the input has descriptors: constant × RBF on the
        ``crys_fea`` columns + constant × RBF on the descriptor columns + constant ×
        linear (dot product) on the descriptor columns + white noise, so that the
        likelihood weighs the learnt features against the physical ones and Slack's
        power law (linear in the log descriptors) is in the model; on ``crys_fea``
        alone, constant × RBF + constant × linear + white noise.
    seed : int
        ``random_state`` of the estimator.
    groups : (int, int), optional
        Columns of ``crys_fea`` and of descriptors, in that order, for ``gp``.

    Raises
    ------
    InputError
        For an unknown ``kind``.
    """
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
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
        return make_pipeline(StandardScaler(),
                             GaussianProcessRegressor(_kernel(groups), normalize_y=True, random_state=seed))
    raise InputError(f"unknown last layer type {kind!r}; choose one of {', '.join(LAST_LAYER_TYPES)}")


def _quiet_fit(estimator, X, y):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # lbfgs and GP optimiser convergence notes
        return estimator.fit(X, y)


def _quiet_predict(estimator, X):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return np.asarray(estimator.predict(X), dtype=np.float64)


def _repeated_folds(n: int, folds: int, repeats: int, seed: int):
    from sklearn.model_selection import RepeatedKFold

    return list(RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed).split(np.zeros(n)))


def cv_mae(kind: str, X: np.ndarray, y: np.ndarray, splits, seed: int = 0, groups=None) -> float:
    """Mean absolute error of ``kind`` over ``splits`` (a list of (train, test) index pairs),
    the errors of all test rows pooled (log10 κ_L)."""
    from sklearn.metrics import mean_absolute_error

    errs_true, errs_pred = [], []
    for train, test in splits:
        est = _quiet_fit(make_estimator(kind, seed, groups), X[train], y[train])
        errs_true.append(y[test])
        errs_pred.append(_quiet_predict(est, X[test]))
    return float(mean_absolute_error(np.concatenate(errs_true), np.concatenate(errs_pred)))


@dataclass
class Prediction:
    """What :meth:`LastLayer.predict` returns; arrays of shape (n,).

    ``prediction``, ``low``, ``high`` in log10 κ_L (W m⁻¹ K⁻¹); ``low``/``high`` are NaN
    when the last layer has no interval calibration; ``distance`` is the mean distance
    to the ``k`` nearest training crystals in the standardised input space, and
    ``in_domain`` is ``distance <= threshold`` (all True when no domain was recorded).
    """

    prediction: np.ndarray
    low: np.ndarray
    high: np.ndarray
    distance: np.ndarray
    in_domain: np.ndarray
    level: float


@dataclass
class LastLayer:
    """A fitted last layer and its record.

    Attributes
    ----------
    estimator : scikit-learn regressor
        Fitted on all training crystals; input of shape (n, n_features).
    kind : str
        The type fitted (``auto`` resolves to one of :data:`CANDIDATES`).
    requested : str
        The type asked for (``auto`` or the same as ``kind``).
    seed : int
    inputs : dict
        What the input columns are: ``sources`` (file name, SHA-256, ``crys_fea`` length and
        target of each source model), ``descriptors`` (``none``, ``structure`` or ``slack``),
        ``property_models`` (records of the lower-order-property models), ``atom_init``
        (SHA-256 digest of each source's atom table), ``names`` (column names).
    n_features, n_train : int
    train_mae : float
    cv : dict
        ``folds``, ``repeats``, ``mae`` (of the chosen type), ``mae_constant`` (predicting the
        training mean), ``table`` (MAE of every candidate, for ``auto``).
    conformal : MAPIE ``CrossConformalRegressor`` or None
        The interval model (None below 10 crystals, or when 1/(1 − level) ≥ n: CV+ cannot
        give that level).
    interval : dict
        ``level`` (default), ``cv_coverage`` and ``cv_width`` (log10) of the calibrated interval.
    domain : dict or None
        ``mean``, ``scale`` (standardisation), ``X`` (standardised training inputs), ``k``,
        ``threshold``.
    versions : dict
        Library versions at fit time.
    """

    estimator: Any
    kind: str
    requested: str = "mlp"
    seed: int = 0
    inputs: dict = field(default_factory=dict)
    n_features: int = 0
    n_train: int = 0
    train_mae: float = float("nan")
    cv: dict = field(default_factory=dict)
    conformal: Any = None
    interval: dict = field(default_factory=dict)
    domain: dict | None = None
    versions: dict = field(default_factory=dict)
    groups: list | None = None
    path: Path | None = None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, kind: str = "auto", seed: int = 0, cv_folds: int = 5,
            cv_repeats: int = 3, level: float = 0.9, inputs: dict | None = None, groups=None,
            interval_cv: bool = True, log=None) -> LastLayer:
        """Fit a last layer, choosing its type by cross-validation when ``kind='auto'``,
        and calibrate its interval and applicability domain on the same data.

        Parameters
        ----------
        X : ndarray of shape (n, n_features)
            Last-layer inputs (``crys_fea``, then descriptors).
        y : ndarray of shape (n,)
            log10 κ_L (W m⁻¹ K⁻¹).
        kind : str
            One of :data:`LAST_LAYER_TYPES`.
        seed : int
            ``random_state`` of estimators and folds.
        cv_folds, cv_repeats : int
            Repeated K-fold of the type choice and of the reported CV figures; CV is
            skipped (with ``auto`` meaning ``ridge``) when ``cv_folds < 2`` or ``n < cv_folds``.
        level : float
            Default interval level (0.5 ≤ level < 1).
        inputs : dict
            Recorded as :attr:`inputs`.
        groups : (int, int), optional
            Columns of ``crys_fea`` and of descriptors in ``X`` (for the ``gp`` kernel).
        interval_cv : bool
            Measure the interval's coverage and width by an outer cross-validation
            (``folds`` more CV+ fits; off inside :func:`cgcnn.evaluate.evaluate`, which measures them itself).
        log : callable, optional
            Called with one progress line per stage.

        Raises
        ------
        InputError
            Fewer than 2 crystals, an unknown ``kind``, inputs that are not finite.
        """
        from sklearn.dummy import DummyRegressor
        from sklearn.metrics import mean_absolute_error

        log = log or (lambda msg: None)
        X = np.asarray(X)  # float32 crys_fea stay float32, as the original tool fit them
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        if n < 2:
            raise InputError(f"the last layer needs at least 2 crystals with targets, got {n}")
        if kind not in LAST_LAYER_TYPES:
            raise InputError(f"unknown last layer type {kind!r}; choose one of {', '.join(LAST_LAYER_TYPES)}")
        if not np.all(np.isfinite(X)):
            raise InputError("the last-layer inputs hold NaN or infinite values (a broken source model?)")
        do_cv = cv_folds >= 2 and n >= cv_folds
        splits = _repeated_folds(n, cv_folds, cv_repeats, seed) if do_cv else []
        table = {}
        if kind == "auto":
            if do_cv:
                for cand in CANDIDATES:
                    table[cand] = cv_mae(cand, X, y, splits, seed, groups)
                    log(f"  {cand:6s} {cv_folds}-fold x {cv_repeats} cross-validated MAE {table[cand]:.3f}")
                chosen = min(table, key=table.get)
            else:
                chosen = "ridge"
        else:
            chosen = kind
        estimator = _quiet_fit(make_estimator(chosen, seed, groups), X, y)
        train_mae = float(mean_absolute_error(y, _quiet_predict(estimator, X)))
        cv = {"folds": cv_folds if do_cv else 0, "repeats": cv_repeats if do_cv else 0, "table": table,
              "mae": None, "mae_constant": None}
        if do_cv:
            cv["mae"] = table[chosen] if chosen in table else cv_mae(chosen, X, y, splits, seed, groups)
            const = [mean_absolute_error(y[te], _quiet_fit(DummyRegressor(), X[tr], y[tr]).predict(X[te]))
                     * len(te) for tr, te in splits]
            cv["mae_constant"] = float(sum(const) / sum(len(te) for _, te in splits))
        layer = cls(estimator=estimator, kind=chosen, requested=kind, seed=seed, inputs=dict(inputs or {}),
                    n_features=X.shape[1], n_train=n, train_mae=train_mae, cv=cv, versions=_versions(),
                    groups=list(groups) if groups else None)
        layer.domain = _fit_domain(X)
        layer.interval = {"level": float(level), "cv_coverage": None, "cv_width": None}
        if n >= _MIN_INTERVAL_SAMPLES and 1.0 / (1.0 - level) < n:
            layer.conformal = _fit_conformal(chosen, X, y, level, seed, cv_folds, groups)
            if do_cv and interval_cv:
                cov, width = _interval_cv(chosen, X, y, level, seed, cv_folds, groups)
                layer.interval.update(cv_coverage=cov, cv_width=width)
        return layer

    # ------------------------------------------------------------------ prediction
    def predict(self, X: np.ndarray, level: float | None = None) -> Prediction:
        """Predictions, intervals and domain flags for inputs ``X`` of shape (n, n_features).

        Raises
        ------
        InputError
            Inputs of another width, or a level outside [0.5, 1) or too high for the
            number of training crystals (CV+ needs 1/(1 − level) < n).
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise InputError(f"{self._name}: fit on {self.n_features} inputs per crystal; got {X.shape[-1]}")
        level = float(self.interval.get("level", 0.9) if level is None else level)
        pred = _quiet_predict(self.estimator, X)
        low = high = np.full(len(X), np.nan)
        if self.conformal is not None:
            check_level(level, self.n_train, self._name)
            conformal = _with_level(self.conformal, level)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                _, bounds = conformal.predict_interval(X)
            low, high = bounds[:, 0, 0].astype(np.float64), bounds[:, 1, 0].astype(np.float64)
        distance = np.full(len(X), np.nan)
        in_domain = np.ones(len(X), dtype=bool)
        if self.domain is not None:
            distance = _domain_distance(self.domain, X)
            in_domain = distance <= self.domain["threshold"]
        return Prediction(pred, low, high, distance, in_domain, level)

    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else "last layer"

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """The record as a dict of plain values, arrays and scikit-learn/MAPIE objects."""
        return {"format": FORMAT, "estimator": self.estimator, "kind": self.kind, "requested": self.requested,
                "seed": self.seed, "target": TARGET, "inputs": self.inputs, "n_features": self.n_features,
                "n_train": self.n_train, "train_mae": self.train_mae, "cv": self.cv, "conformal": self.conformal,
                "interval": self.interval, "domain": self.domain, "versions": self.versions,
                "groups": self.groups}

    def dumps(self) -> bytes:
        """The last layer as skops bytes (see :meth:`load`)."""
        import skops.io as sio

        return sio.dumps(self.to_dict())

    def save(self, path) -> None:
        """Write the last layer to ``path`` with skops, atomically (temporary file, then rename).

        Raises
        ------
        InputError
            If ``path`` cannot be written.
        """
        from cgcnn.files import save_atomic

        data = self.dumps()
        save_atomic(data, path, saver=lambda obj, f: f.write(obj))

    def save_to(self, outputs, path) -> None:
        """Stage the last layer as ``path`` of a :class:`cgcnn.files.OutputSet` (renamed with the run's
        other outputs)."""
        outputs.write_bytes(path, self.dumps())

    @classmethod
    def load(cls, path, trust_pickle: bool = False) -> LastLayer:
        """Read a last layer without running code from the file.

        skops files (this version) load with only scikit-learn, MAPIE, NumPy and SciPy
        types admitted; joblib files of version 1 through a restricted unpickler
        admitting the same; a bare pickled estimator (the original tool's) only with
        ``trust_pickle`` (then with a warning, since a pickle can run any code).

        Raises
        ------
        InputError
            Missing, unreadable or foreign file; a type outside the admitted ones; an
            estimator that is not fitted.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: last layer not found (fit one with --train 1)")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        if raw[:2] == b"PK":
            record = _load_skops(path, raw)
        else:
            record = _load_pickle(path, raw, trust_pickle)
        if not isinstance(record, dict):
            if not hasattr(record, "predict"):
                raise InputError(f"{path}: not a last layer (no predict method)")
            warnings.warn(f"{path}: a bare pickled estimator (the original tool's format) loaded with "
                          "--trust-pickle; its source model cannot be checked", stacklevel=2)
            layer = cls(estimator=record, kind=type(record).__name__, requested=type(record).__name__,
                        n_features=int(getattr(record, "n_features_in_", 0)), path=path)
            _check_fitted(layer.estimator, path)
            return layer
        fmt = record.get("format")
        if fmt == FORMAT_V1 and "estimator" in record:
            layer = cls(estimator=record["estimator"], kind=record.get("kind", "mlp"),
                        requested=record.get("kind", "mlp"), seed=int(record.get("seed", 0)),
                        inputs={"sources": record.get("sources", []), "descriptors": "none",
                                "property_models": []},
                        n_features=int(record.get("n_features", 0)), n_train=int(record.get("n_train", 0)),
                        train_mae=float(record.get("train_mae") or np.nan),
                        cv={"mae": record.get("cv_mae")}, versions=record.get("versions", {}), path=path)
        elif fmt == FORMAT and "estimator" in record:
            fields = {k: record[k] for k in ("estimator", "kind", "requested", "seed", "inputs", "n_features",
                                              "n_train", "train_mae", "cv", "conformal", "interval", "domain",
                                              "versions", "groups") if k in record}
            layer = cls(**fields, path=path)
        else:
            raise InputError(f"{path}: not a last layer written by this tool")
        _check_fitted(layer.estimator, path)
        return layer

    def check_inputs(self, inputs: dict) -> None:
        """Refuse to run on other source models, atom tables, descriptors or property models.

        ``inputs`` is the record the current run would write (see :attr:`inputs`).
        Source models must be the same files in the same order.

        Raises
        ------
        InputError
            Naming what differs.
        """
        import sklearn

        saved = self.inputs
        if saved.get("sources"):
            have = [s["sha256"] for s in inputs.get("sources", [])]
            want = [s["sha256"] for s in saved["sources"]]
            if have != want:
                names = ", ".join(s["name"] for s in saved["sources"])
                if sorted(have) == sorted(want):
                    raise InputError(f"{self._name}: fit on the same source models in another order ({names}); "
                                     "give them in that order")
                raise InputError(f"{self._name}: fit on other source model(s) ({names}); refit with --train 1 "
                                 "or give the source model(s) it was fit with")
        if saved.get("atom_init") and inputs.get("atom_init") and saved["atom_init"] != inputs["atom_init"]:
            raise InputError(f"{self._name}: fit with another atom_init.json than the one given now; "
                             "use the atom feature table it was fit with, or refit with --train 1")
        want_desc = saved.get("descriptors", "none")
        if want_desc != inputs.get("descriptors", "none"):
            raise InputError(f"{self._name}: fit with --descriptors {want_desc}; give the same option")
        want_prop = [s["sha256"] for s in saved.get("property_models", [])]
        have_prop = [s["sha256"] for s in inputs.get("property_models", [])]
        if want_prop != have_prop:
            raise InputError(f"{self._name}: fit with other property models "
                             f"({', '.join(s['name'] for s in saved.get('property_models', [])) or 'none'})")
        if self.n_features and inputs.get("n_features") and self.n_features != inputs["n_features"]:
            raise InputError(f"{self._name}: fit on {self.n_features} inputs per crystal; the source model(s) "
                             f"and descriptors give {inputs['n_features']}")
        saved_sklearn = self.versions.get("scikit-learn")
        if saved_sklearn and saved_sklearn != sklearn.__version__:
            warnings.warn(f"{self._name}: written with scikit-learn {saved_sklearn}, running {sklearn.__version__}; "
                          "predictions may differ (refit with --train 1 to be sure)", stacklevel=2)


# ---------------------------------------------------------------------- helpers
def _versions() -> dict:
    import sklearn

    out = {"cgcnn": __version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}
    try:
        import mapie

        out["mapie"] = mapie.__version__
    except Exception:  # pragma: no cover - MAPIE is a requirement
        pass
    return out


def check_level(level: float, n_train: int, name: str = "last layer") -> None:
    """Refuse an interval level CV+ cannot give with ``n_train`` crystals.

    Raises
    ------
    InputError
        Unless 0.5 ≤ level < 1 and 1/(1 − level) < n_train (Barber et al. 2021).
    """
    if not (0.5 <= level < 1.0):
        raise InputError(f"--interval must lie in [0.5, 1), not {level:g}")
    if 1.0 / (1.0 - level) >= n_train:
        top = 1.0 - 1.0 / n_train
        raise InputError(f"{name}: a {level:g} interval needs more than {1 / (1 - level):.0f} training crystals "
                         f"(it has {n_train}); choose --interval below {top:.3f}")


def _fit_conformal(kind: str, X, y, level: float, seed: int, folds: int, groups=None):
    """CV+ (Barber et al. 2021) with MAPIE: ``folds`` fold models and the absolute residuals."""
    from mapie.regression import CrossConformalRegressor

    check_level(level, len(y))
    folds = max(2, min(folds, len(y)))
    conformal = CrossConformalRegressor(make_estimator(kind, seed, groups), confidence_level=level, method="plus",
                                        cv=folds, random_state=seed)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        conformal.fit_conformalize(X, y)
    return conformal


def _with_level(conformal, level: float):
    """The fitted CV+ model giving intervals at ``level`` (a shallow copy; MAPIE 1.x keeps the
    levels in ``_alphas``, set at construction)."""
    from mapie.utils import _transform_confidence_level_to_alpha_list

    out = copy.copy(conformal)
    out._alphas = _transform_confidence_level_to_alpha_list(level)
    return out


def _interval_cv(kind: str, X, y, level: float, seed: int, folds: int,
                 groups=None) -> tuple[float | None, float | None]:
    """Coverage and mean width (log10) of the CV+ interval on held-out folds of the training data."""
    from sklearn.model_selection import KFold

    covered, widths = [], []
    for train, test in KFold(folds, shuffle=True, random_state=seed + 1).split(X):
        if 1.0 / (1.0 - level) >= len(train):
            return None, None
        conf = _fit_conformal(kind, X[train], y[train], level, seed, folds, groups)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            _, b = conf.predict_interval(X[test])
        lo, hi = b[:, 0, 0], b[:, 1, 0]
        covered.append((y[test] >= lo) & (y[test] <= hi))
        widths.append(hi - lo)
    return float(np.mean(np.concatenate(covered))), float(np.mean(np.concatenate(widths)))


_DOMAIN_K = 5
_DOMAIN_QUANTILE = 0.95


def _fit_domain(X: np.ndarray) -> dict:
    """Standardisation, training rows and the distance threshold of the applicability domain.

    The distance of a crystal is its mean Euclidean distance to the ``k`` nearest training
    crystals in the standardised input space (k = min(5, n − 1)); the threshold is the 95th
    percentile of that distance over the training crystals, each excluded from its own
    neighbours (a k-nearest-neighbour applicability domain; I. Sushko et al., J. Chem. Inf.
    Model. 50, 2094 (2010)).
    """
    from sklearn.neighbors import NearestNeighbors

    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = (X - mean) / scale
    k = max(1, min(_DOMAIN_K, len(Z) - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
    own = dist[:, 1:].mean(axis=1)  # the first neighbour is the crystal itself
    return {"mean": mean, "scale": scale, "X": Z, "k": k,
            "threshold": float(np.quantile(own, _DOMAIN_QUANTILE)), "quantile": _DOMAIN_QUANTILE}


def _domain_distance(domain: dict, X: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    Z = (X - domain["mean"]) / domain["scale"]
    dist, _ = NearestNeighbors(n_neighbors=int(domain["k"])).fit(domain["X"]).kneighbors(Z)
    return dist.mean(axis=1)


def _check_fitted(estimator, path) -> None:
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


def _load_skops(path: Path, raw: bytes) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=raw)
    except Exception as exc:
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_MODULES)]
    if foreign:
        raise InputError(f"{path}: holds types this tool does not write ({', '.join(foreign[:3])}); refused")
    try:
        return sio.loads(raw, trusted=untrusted)
    except Exception as exc:
        raise InputError(f"{path}: not a readable last layer ({_first_line(exc)})") from None


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


def _load_pickle(path: Path, raw: bytes, trust: bool) -> Any:
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
