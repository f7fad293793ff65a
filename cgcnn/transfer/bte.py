"""The phonon-BTE value of a crystal as one more last-layer input (``--bte FILE``).

``python -m cgcnn.refine`` computes log10 κ_L from anharmonic lattice dynamics with a universal
interatomic potential (Póta et al., arXiv:2408.00755, 2024); such a potential is biased (SevenNet-l3i5
low by about 0.15 log10 on ``data/sample``).  Given to the last layer as one more descriptor, the
value lets the last layer learn that bias from the measured targets (the feature-based transfer of
T. Zhu et al., Energy Environ. Sci. 14, 3559 (2021), with the BTE value beside the other descriptors).

Not every crystal has a value: a crystal refused as dynamically unstable at 0 K, a failed one, one not
computed.  Nothing is imputed.  A last layer fit with BTE values holds two models (:func:`fit_bte`):
the plain one, fit on every training crystal as without values, and the BTE one, fit on the training
crystals with a value, in one of two modes (:data:`BTE_MODES`):

- ``stack`` (the default): a linear calibration ``a · plain + b · log10 κ_BTE + c`` of the plain model's
  prediction and the BTE value, fit on the plain model's out-of-fold predictions of the training crystals
  (stacked generalisation: D. H. Wolpert, Neural Networks 5, 241 (1992); L. Breiman, Machine Learning 24,
  49 (1996)).  Three numbers learnt from the measured targets: the potential's bias and how far to trust
  it against the transfer, which carries to structure types absent from the training crystals;
- ``descriptor``: the last layer of the same type with ``log10_kappa_bte`` appended to each ensemble
  member's descriptors (:func:`bte_columns`).

A crystal with a value is predicted by the BTE model, any other by the plain one; :func:`predict_routes`
says which for each crystal (:data:`ROUTE_COLUMNS` of ``results.csv``).

The values come from a ``refined.csv`` (:func:`read_bte`, columns ``cif_id``, ``log10_kappa_bte``
and, as ``cgcnn.refine`` writes them, ``reason`` and ``potential``) or from a ``log10_kappa_bte``
column of the data folder's ``compounds.csv`` (:func:`folder_bte`); both in :mod:`cgcnn.transfer.btevalues`.
"""

from __future__ import annotations

import numpy as np

from cgcnn import InputError
from cgcnn.options import BTE_MODES
from cgcnn.transfer.btevalues import (  # noqa: F401  (re-exported)
    BTE_COLUMN,
    BTEValues,
    folder_bte,
    read_bte,
    reason_counts,
)
from cgcnn.transfer.lastlayer import LastLayer, Prediction

__all__ = ["BTE_COLUMN", "BTE_MODES", "ROUTE_COLUMNS", "BTEValues", "read_bte", "folder_bte", "bte_columns",
           "bte_groups", "fit_bte", "plain_oof", "stack_coefficients", "predict_routes", "check_bte_use",
           "reason_counts"]

#: Columns ``results.csv`` gets from a last layer with a BTE model: the value used (empty on the plain
#: route), the route (``bte`` or ``plain``), why a crystal took the plain route, and the plain model's
#: prediction of every crystal (log10 κ_L: on the BTE route, the transfer's value beside the calibrated one).
ROUTE_COLUMNS = ("log10_kappa_bte", "route", "no_bte_reason", "prediction_plain")
#: The stacked model's inputs, in order.
STACK_COLUMNS = ("prediction_plain", BTE_COLUMN)


def bte_columns(X: np.ndarray, values: np.ndarray, groups) -> np.ndarray:
    """Last-layer inputs ``X`` (shape (n, members × (n_crys + n_desc)), :attr:`cgcnn.transfer.Features.X`)
    with ``values`` (shape (n,)) appended to each ensemble member's descriptors: float64, shape
    (n, members × (n_crys + n_desc + 1)).  ``groups`` is :attr:`~cgcnn.transfer.Features.groups`."""
    k = groups[2] if len(groups) > 2 else 1
    blocks = np.split(np.asarray(X, dtype=np.float64), k, axis=1)
    column = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return np.concatenate([c for b in blocks for c in (b, column)], axis=1)


def bte_groups(groups) -> tuple:
    """The :attr:`~cgcnn.transfer.Features.groups` of :func:`bte_columns`'s inputs: one more descriptor."""
    return (groups[0], groups[1] + 1, *groups[2:])


def _bte_record(inputs: dict, groups) -> dict:
    """The BTE model's :attr:`LastLayer.inputs`: the plain one's, with the BTE column among the names."""
    record = dict(inputs)
    k = groups[2] if len(groups) > 2 else 1
    names, width = list(inputs.get("names", [])), groups[0] + groups[1]
    if len(names) == width * k:
        record["names"] = [n for m in range(k) for n in
                           names[m * width:(m + 1) * width] + [BTE_COLUMN + ("" if m == 0 else f"@{m}")]]
    record["n_features"] = (width + 1) * k
    record["groups"] = list(bte_groups(groups))
    return record


def plain_oof(layer: LastLayer, X: np.ndarray, y: np.ndarray, groups, *, seed: int = 0,
              folds: int = 5) -> np.ndarray:
    """Out-of-fold predictions (log10 κ_L, shape (n,)) of the plain last layer's type on its training
    inputs ``X`` (n, n_features) and targets ``y``: each crystal predicted by the type ``layer.kind`` fit on
    the other folds (scikit-learn ``cross_val_predict``, ``KFold(folds, shuffle=True, random_state=seed)``,
    ``folds`` clipped to 2 ... n).  What the stacked BTE model is fit on (:func:`fit_bte`): predictions of
    crystals the model has not seen, as the crystals it will be used on."""
    from sklearn.model_selection import KFold, cross_val_predict

    from cgcnn.transfer.estimators import make_estimator, quietly

    folds = max(2, min(int(folds), len(y)))
    with quietly():
        pred = cross_val_predict(make_estimator(layer.kind, seed, tuple(groups) if groups else None), X, y,
                                 cv=KFold(folds, shuffle=True, random_state=seed))
    return np.asarray(pred, dtype=np.float64)


def stack_coefficients(sub: LastLayer) -> tuple[float, float, float]:
    """``(a, b, c)`` of a stacked BTE model's ``a · plain + b · log10 κ_BTE + c`` (log10 κ_L), from its
    standardised ridge regression (``make_pipeline(StandardScaler(), RidgeCV(...))``)."""
    scaler, ridge = sub.estimator[0], sub.estimator[-1]
    coef = np.asarray(ridge.coef_, dtype=np.float64) / scaler.scale_
    c = float(ridge.intercept_ - coef @ scaler.mean_)
    return float(coef[0]), float(coef[1]), c


def fit_bte(layer: LastLayer, X: np.ndarray, y: np.ndarray, ids, bte: BTEValues, groups, *, kind: str,
            mode: str = "stack", seed: int = 0, cv_folds: int = 5, level: float = 0.9, log=None,
            jobs: int | None = None, interval_cv: bool = True) -> LastLayer:
    """Fit the BTE model of ``layer`` (the plain last layer, fit on all of ``X``) and keep it in
    ``layer.bte``; returns the BTE model.

    Parameters
    ----------
    layer : LastLayer
        The plain last layer; gets :attr:`LastLayer.bte`: ``layer`` (the BTE model), ``mode``,
        ``source`` (:attr:`BTEValues.source`), ``potentials`` (those of the values used), ``n_with``,
        ``n_without`` and ``without`` (reason kind → count, :func:`reason_counts`), and for ``stack``
        ``coefficients`` (:func:`stack_coefficients`).
    X, y : ndarray of shape (n, n_features), (n,)
        The plain layer's inputs and targets (log10 κ_L).
    ids : sequence of str
        The crystals of ``X``.
    bte : BTEValues
    groups : tuple
        :attr:`~cgcnn.transfer.Features.groups` of ``X``.
    kind : str
        The type the plain layer was asked for (``descriptor``: the BTE model's type too).
    mode : {"stack", "descriptor"}
        ``stack``: a ``ridge`` last layer on (the plain type's out-of-fold prediction, :func:`plain_oof`;
        log10 κ_BTE) of the crystals with a value; ``descriptor``: a last layer of type ``kind`` on ``X``
        with log10 κ_BTE appended (:func:`bte_columns`).
    seed, cv_folds, level, log, jobs, interval_cv
        As :meth:`LastLayer.fit`.

    Raises
    ------
    InputError
        Fewer than 2 training crystals with a value (naming the file); an unknown ``mode``.
    """
    if mode not in BTE_MODES:
        raise InputError(f"--bte-mode {mode!r}: choose one of {', '.join(BTE_MODES)}")
    values, reasons = bte.lookup(ids)
    has = np.isfinite(values)
    if has.sum() < 2:
        raise InputError(f"{bte.name}: {int(has.sum())} of the {len(ids)} training crystals have a {BTE_COLUMN} "
                         "value; the BTE model needs at least 2")
    record = {}
    if mode == "stack":
        plain = plain_oof(layer, X, y, groups, seed=seed, folds=cv_folds)
        sub = LastLayer.fit(np.c_[plain[has], values[has]], y[has], "ridge", seed, cv_folds, level=level,
                            inputs={"names": list(STACK_COLUMNS), "stack": f"out-of-fold {layer.kind}"},
                            log=log, jobs=jobs, interval_cv=interval_cv)
        record["coefficients"] = list(stack_coefficients(sub))
    else:
        sub = LastLayer.fit(bte_columns(X[has], values[has], groups), y[has], kind, seed, cv_folds, level=level,
                            inputs=_bte_record(layer.inputs, groups), groups=bte_groups(groups), log=log,
                            jobs=jobs, interval_cv=interval_cv)
    used = sorted({bte.potentials[i] for i, ok in zip(ids, has) if ok and i in bte.potentials})
    layer.bte = {"layer": sub, "mode": mode, **record, "source": dict(bte.source), "potentials": used,
                 "n_with": int(has.sum()), "n_without": int((~has).sum()), "without": reason_counts(reasons)}
    return sub


def check_bte_use(layer: LastLayer, bte: BTEValues | None, explicit: bool, ids=None) -> str | None:
    """Whether BTE values may be used with ``layer``; a note for the user, or None.

    A layer without a BTE model refuses values given explicitly (``--bte``) and notes values of a
    ``compounds.csv`` column as unused; a layer with one notes that without values every crystal takes
    the plain route.  Values of another potential than the one the BTE model was fit on are refused.

    Raises
    ------
    InputError
        ``--bte`` with a layer fit without values; a value of another potential (naming the crystal).
    """
    fit = getattr(layer, "bte", None)
    if fit is None:
        if bte is None:
            return None
        if explicit:
            raise InputError(f"{layer._name}: fit without BTE values, so --bte {bte.name} cannot be used; refit "
                             "with --train 1 --bte FILE, or leave --bte out")
        return f"{bte.name}: its {BTE_COLUMN} column is not used (the last layer was fit without BTE values)"
    if bte is None:
        return (f"{layer._name} has a BTE model (fit with {fit['source'].get('name')}) but no BTE values were "
                f"given (--bte FILE, or a {BTE_COLUMN} column of CIFPATH/compounds.csv): every crystal is "
                "predicted by the plain model (route column)")
    want = set(fit.get("potentials") or [])
    for cif_id in (ids if ids is not None else bte.values):
        have = bte.potentials.get(cif_id)
        if want and cif_id in bte.values and have is not None and have not in want:
            raise InputError(f"{bte.name}: the value of {cif_id} was computed with {have}; the last layer's BTE "
                             f"model was fit on values of {', '.join(sorted(want))}")
    return None


def predict_routes(layer: LastLayer, X: np.ndarray, ids, bte: BTEValues | None, groups,
                   level: float | None = None) -> tuple[Prediction, dict]:
    """Predictions of a last layer with a BTE model: crystals with a value by the BTE model, the others
    by the plain one.  A stacked BTE model (``mode`` ``stack``) takes the plain prediction and the value;
    its crystals keep the plain model's ``distance`` and ``in_domain`` (whether the transfer has seen
    such crystals: the phonons vouch for the value, not the flag).

    Parameters
    ----------
    layer : LastLayer
        With :attr:`LastLayer.bte` (:func:`fit_bte`).
    X : ndarray of shape (n, n_features)
        The plain layer's inputs.
    ids : sequence of str
    bte : BTEValues or None
        None: every crystal by the plain model.
    groups : tuple
        :attr:`~cgcnn.transfer.Features.groups` of ``X``.
    level : float, optional
        As :meth:`LastLayer.predict`.

    Returns
    -------
    prediction : Prediction
        Each crystal's by its route.
    columns : dict
        :data:`ROUTE_COLUMNS` → arrays of shape (n,): the value used (NaN on the plain route),
        ``bte``/``plain``, the reason for ``plain`` (``""`` on the BTE route), and the plain model's
        prediction (log10 κ_L) of every crystal.
    """
    n = len(ids)
    if bte is not None:
        values, reasons = bte.lookup(ids)
    else:
        values, reasons = np.full(n, np.nan), ["no BTE values given"] * n
    has = np.isfinite(values)
    pred = layer.predict(X, level)
    plain = np.array(pred.prediction, dtype=np.float64, copy=True)
    if has.any():
        stack = layer.bte.get("mode", "descriptor") == "stack"  # files written before the modes: descriptor
        inputs = np.c_[plain[has], values[has]] if stack else bte_columns(X[has], values[has], groups)
        sub = layer.bte["layer"].predict(inputs, level)
        # the stacked model's domain is the plain one's (where the transfer has seen such crystals)
        for name in ("prediction", "low", "high") + (() if stack else ("distance", "in_domain")):
            merged = np.array(getattr(pred, name), copy=True)  # low and high may be one array
            merged[has] = getattr(sub, name)
            setattr(pred, name, merged)
    columns = {"log10_kappa_bte": values, "route": np.where(has, "bte", "plain").tolist(),
               "no_bte_reason": reasons, "prediction_plain": plain}
    return pred, columns
