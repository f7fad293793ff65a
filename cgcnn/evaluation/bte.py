"""The BTE route in an evaluation (``python -m cgcnn.evaluate --bte FILE``): each last layer once more with
``log10_kappa_bte`` as one more descriptor (:mod:`cgcnn.transfer.bte`), and its figures on the crystals
that have a value.

In each split, the method ``K+bte`` fits the last layer of type ``K`` with the BTE value on the training
crystals that have one, and predicts the test crystals that have one with it; a test crystal without a
value (refused as dynamically unstable, failed, not computed) gets the plain ``K``'s prediction of the
same split, as ``--train 0`` routes it.  Nothing is imputed.  :func:`bte_subset` gives every method's
held-out MAE on the crystals with a value alone, beside the MAE of the raw BTE values themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["bte_rows", "bte_subset"]


def bte_rows(X: np.ndarray, y: np.ndarray, values: np.ndarray, groups, split, kinds: Sequence[str], rows: dict,
             level: float = 0.9) -> dict:
    """The ``K+bte`` predictions of one split's test crystals (in sorted order, as ``rows``).

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        Last-layer inputs of every crystal (:attr:`cgcnn.transfer.Features.X`).
    y : ndarray of shape (n,)
        log10 κ_L targets.
    values : ndarray of shape (n,)
        log10 κ_L of the BTE (NaN without a value).
    groups : tuple
        :attr:`cgcnn.transfer.Features.groups` of ``X``.
    split : cgcnn.evaluation.Split
    kinds : sequence of str
        The last-layer types: each must be a key of ``rows``.
    rows : dict
        Method → (prediction, low, high, in_domain) of the split's test crystals: the plain routes.
    level : float
        CV+ interval level.

    Returns
    -------
    dict
        ``K+bte`` → (prediction, low, high, in_domain), arrays of shape (number of test crystals,).
    """
    from cgcnn.transfer import LastLayer, bte_columns, bte_groups, quietly

    test = np.sort(split.test)
    train = np.asarray(split.train)[np.isfinite(values[split.train])]
    has = np.isfinite(values[test])
    out = {}
    for kind in kinds:
        pred, low, high, inside = (np.array(a, copy=True) for a in rows[kind])
        if len(train) >= 2 and has.any():
            with quietly():
                layer = LastLayer.fit(bte_columns(X[train], values[train], groups), y[train], kind, seed=split.index,
                                      level=level, groups=bte_groups(groups), interval_cv=False)
                p = layer.predict(bte_columns(X[test[has]], values[test[has]], groups))
            pred, low, high = pred.astype(float), low.astype(float), high.astype(float)
            pred[has], low[has], high[has], inside[has] = p.prediction, p.low, p.high, p.in_domain
        out[f"{kind}+bte"] = (pred, low, high, inside)
    return out


def bte_subset(predictions: pd.DataFrame) -> pd.DataFrame:
    """Every method's held-out MAE (log10) on the test crystals that have a BTE value, and the raw BTE
    values' (``raw BTE``) on the same crystals: mean and standard deviation (ddof 1) over the splits
    with such a crystal.

    ``predictions`` is :func:`cgcnn.evaluate.evaluate`'s table with its ``log10_kappa_bte`` column.

    Returns
    -------
    DataFrame
        Index ``method`` (``raw BTE`` first); columns ``mae``, ``mae_std``, ``n`` (held-out
        predictions pooled over splits), ``n_splits``.
    """
    part = predictions[predictions["log10_kappa_bte"].notna()]
    if part.empty:
        return pd.DataFrame(columns=["mae", "mae_std", "n", "n_splits"])
    first = part[part["method"] == part["method"].iloc[0]]
    raw = first.assign(method="raw BTE", prediction=first["log10_kappa_bte"])
    both = pd.concat([raw, part], ignore_index=True)
    err = both.assign(err=(both["prediction"] - both["target"]).abs())
    per_split = err.groupby(["method", "split"], sort=False)["err"].mean().reset_index()
    grouped = per_split.groupby("method", sort=False)["err"]
    table = pd.DataFrame({"mae": grouped.mean(), "mae_std": grouped.std(ddof=1), "n_splits": grouped.count()})
    table["n"] = err.groupby("method", sort=False)["err"].count()
    table.index.name = "method"
    return table[["mae", "mae_std", "n", "n_splits"]]
