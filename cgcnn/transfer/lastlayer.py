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
  ``k`` nearest training crystals in the standardised space of the descriptors (of
  all inputs when there are none), and a threshold (the 90th percentile of the same
  distance for the training crystals, each left out of its own neighbourhood), so
  that a crystal unlike anything the last layer was fit on is flagged
  ``in_domain = False`` (:func:`cgcnn.transfer.intervals.fit_domain`).

It is saved with skops (``skops.io``), whose loader builds scikit-learn objects
without running code from the file; only the exact classes this tool writes are
admitted, and no stored function (:mod:`cgcnn.transfer.layertypes`).  Files written by
version 1 of this tool (joblib pickles) load through a restricted unpickler that admits
the same classes only; a bare pickled estimator (the original tool's
``last_layer.sav``) loads only with ``trust_pickle=True``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cgcnn import InputError
from cgcnn.transfer.estimators import (  # noqa: F401
    CANDIDATES,
    LAST_LAYER_TYPES,
    ColumnKernel,
    cv_mae,
    make_estimator,
    quiet_fit,
    quiet_predict,
    quietly,
    repeated_folds,
)
from cgcnn.transfer.fits import FitData, candidate_maes, fit_chosen, fit_jobs, library_versions
from cgcnn.transfer.intervals import check_level, domain_distance, fit_domain, with_level
from cgcnn.transfer.layerfile import check_fitted, load_pickle, load_skops, v1_fields

__all__ = ["LAST_LAYER_TYPES", "CANDIDATES", "ColumnKernel", "make_estimator", "LastLayer", "Prediction", "check_level"]

TARGET = "log10 kappa_L"  # log10 of κ_L in W m⁻¹ K⁻¹
FORMAT = "cgcnn-kappa last layer 2"
FORMAT_BTE = "cgcnn-kappa last layer 3"  # format 2 with a BTE model (``bte``): earlier versions refuse it
FORMAT_V1 = "cgcnn-kappa last layer 1"
_MIN_INTERVAL_SAMPLES = 10


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
        ``threshold``, ``quantile``, ``columns`` (:func:`cgcnn.transfer.intervals.fit_domain`).
    versions : dict
        Library versions at fit time.
    bte : dict or None
        The BTE model and its record (:func:`cgcnn.transfer.bte.fit_bte`), or None.
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
    bte: dict | None = None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, kind: str = "auto", seed: int = 0, cv_folds: int = 5,
            cv_repeats: int = 3, level: float = 0.9, inputs: dict | None = None, groups=None,
            interval_cv: bool = True, log=None, jobs: int | None = None) -> LastLayer:
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
            The CV+ interval uses :func:`cgcnn.transfer.intervals.conformal_folds` folds (2 ... n).
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
        jobs : int, optional
            Processes for the fits (:mod:`cgcnn.transfer.fits`): None for all cores, 1 for this one;
            the result does not depend on it.

        Raises
        ------
        InputError
            Fewer than 2 crystals, an unknown ``kind``, inputs that are not finite.
        """
        from sklearn.dummy import DummyRegressor
        from sklearn.metrics import mean_absolute_error

        from cgcnn.data import single_threaded, start_pool

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
        data = FitData(X, y, seed, tuple(groups) if groups else None,
                       repeated_folds(n, cv_folds, cv_repeats, seed) if do_cv else [], level, cv_folds)
        with_interval = n >= _MIN_INTERVAL_SAMPLES and 1.0 / (1.0 - level) < n
        jobs = fit_jobs(jobs)
        with single_threaded():  # one BLAS thread here and in each pool process: the same numbers anywhere
            pool = start_pool(jobs, data) if jobs > 1 else None
            try:
                maes = candidate_maes(pool, data, CANDIDATES if kind == "auto" else (kind,)) if do_cv else {}
                table = maes if kind == "auto" else {}
                for cand, mae in table.items():
                    log(f"  {cand:8s} {cv_folds}-fold x {cv_repeats} cross-validated MAE {mae:.3f}")
                chosen = kind if kind != "auto" else (min(table, key=table.get) if table else "ridge")
                estimator, conformal, (cov, width) = fit_chosen(pool, data, chosen, with_interval,
                                                                do_cv and interval_cv)
            finally:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            train_mae = float(mean_absolute_error(y, quiet_predict(estimator, X)))
            cv = {"folds": cv_folds if do_cv else 0, "repeats": cv_repeats if do_cv else 0, "table": table,
                  "mae": maes.get(chosen), "mae_constant": None}
            if do_cv:
                const = [mean_absolute_error(y[te], quiet_fit(DummyRegressor(), X[tr], y[tr]).predict(X[te]))
                         * len(te) for tr, te in data.splits]
                cv["mae_constant"] = float(sum(const) / sum(len(te) for _, te in data.splits))
            layer = cls(estimator=estimator, kind=chosen, requested=kind, seed=seed, inputs=dict(inputs or {}),
                        n_features=X.shape[1], n_train=n, train_mae=train_mae, cv=cv, versions=library_versions(),
                        groups=list(groups) if groups else None)
            n_crys, n_desc = groups[:2] if groups else (X.shape[1], 0)
            layer.domain = fit_domain(X, (n_crys, n_crys + n_desc) if n_desc else None)
        layer.interval = {"level": float(level), "cv_coverage": cov, "cv_width": width}
        layer.conformal = conformal
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
        pred = quiet_predict(self.estimator, X)
        low = high = np.full(len(X), np.nan)
        if self.conformal is not None:
            check_level(level, self.n_train, self._name)
            conformal = with_level(self.conformal, level)
            with quietly():
                _, bounds = conformal.predict_interval(X)
            low, high = bounds[:, 0, 0].astype(np.float64), bounds[:, 1, 0].astype(np.float64)
        distance = np.full(len(X), np.nan)
        in_domain = np.ones(len(X), dtype=bool)
        if self.domain is not None:
            distance = domain_distance(self.domain, X)
            in_domain = distance <= self.domain["threshold"]
        return Prediction(pred, low, high, distance, in_domain, level)

    @property
    def _name(self) -> str:
        return str(self.path) if self.path is not None else "last layer"

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """The record as a dict of plain values, arrays and scikit-learn/MAPIE objects (with a BTE model,
        format 3: its record under ``bte``, the model's own record under ``bte["layer"]``)."""
        record = {"format": FORMAT, "estimator": self.estimator, "kind": self.kind, "requested": self.requested,
                  "seed": self.seed, "target": TARGET, "inputs": self.inputs, "n_features": self.n_features,
                  "n_train": self.n_train, "train_mae": self.train_mae, "cv": self.cv, "conformal": self.conformal,
                  "interval": self.interval, "domain": self.domain, "versions": self.versions,
                  "groups": self.groups}
        if self.bte is not None:
            record.update(format=FORMAT_BTE, bte={**self.bte, "layer": self.bte["layer"].to_dict()})
        return record

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
        from cgcnn.outputs import save_atomic

        data = self.dumps()
        save_atomic(data, path, saver=lambda obj, f: f.write(obj))

    def save_to(self, outputs, path) -> None:
        """Stage the last layer as ``path`` of a :class:`cgcnn.outputs.files.OutputSet` (renamed with the run's
        other outputs)."""
        outputs.write_bytes(path, self.dumps())

    @classmethod
    def load(cls, path, trust_pickle: bool = False) -> LastLayer:
        """Read a last layer without running code from the file.

        skops files (this version) load with only the exact classes of
        :data:`cgcnn.transfer.layertypes.LAYER_CLASSES` and no stored function admitted;
        joblib files of version 1 through a restricted unpickler admitting the same; a
        bare pickled estimator (the original tool's) only with ``trust_pickle`` (then
        with a warning, since a pickle can run any code).

        Raises
        ------
        InputError
            Missing, unreadable or foreign file; a class, loader or stored function
            outside the admitted ones; an estimator that is not fitted.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: last layer not found (fit one with --train 1)")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        if raw[:2] == b"PK":
            record = load_skops(path, raw)
        else:
            record = load_pickle(path, raw, trust_pickle)
        if not isinstance(record, dict):
            if not hasattr(record, "predict"):
                raise InputError(f"{path}: not a last layer (no predict method)")
            warnings.warn(f"{path}: a bare pickled estimator (the original tool's format) loaded with "
                          "--trust-pickle; its source model cannot be checked", stacklevel=2)
            layer = cls(estimator=record, kind=type(record).__name__, requested=type(record).__name__,
                        n_features=int(getattr(record, "n_features_in_", 0)), path=path)
            check_fitted(layer.estimator, path)
            return layer
        fmt = record.get("format")
        if fmt == FORMAT_V1 and "estimator" in record:
            layer = cls(**v1_fields(record), path=path)
        elif fmt in (FORMAT, FORMAT_BTE) and "estimator" in record:
            layer = cls._from_record(record, path)
        else:
            raise InputError(f"{path}: not a last layer written by this tool")
        check_fitted(layer.estimator, path)
        return layer

    @classmethod
    def _from_record(cls, record: dict, path: Path) -> LastLayer:
        """The layer of a format-2 or -3 record (with its BTE model, checked as fitted)."""
        fields = {k: record[k] for k in ("estimator", "kind", "requested", "seed", "inputs", "n_features",
                                          "n_train", "train_mae", "cv", "conformal", "interval", "domain",
                                          "versions", "groups") if k in record}
        layer = cls(**fields, path=path)
        if record.get("format") == FORMAT_BTE:
            bte = record.get("bte")
            if not isinstance(bte, dict) or not isinstance(bte.get("layer"), dict) or "estimator" not in bte["layer"]:
                raise InputError(f"{path}: not a last layer written by this tool (format 3 without its BTE model)")
            layer.bte = {**bte, "layer": cls._from_record(bte["layer"], path)}
            check_fitted(layer.bte["layer"].estimator, path)
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
                    from cgcnn.transfer.features import source_order_problem

                    raise InputError(f"{self._name}: {source_order_problem(saved, inputs)}")
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
