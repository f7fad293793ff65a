"""The BTE route in an evaluation (``python -m cgcnn.evaluate --bte FILE``): each last layer with its BTE
model (:mod:`cgcnn.transfer.bte`), and the figures of the crystals that have a value.

In each split, the method ``K+bte`` fits the BTE model of the plain last layer of type ``K`` on the
training crystals that have a value, as ``--train 1 --bte`` does (``--bte-mode``: the stacked calibration
or the value as one more descriptor), and predicts the test crystals that have one with it; a test crystal
without a value (refused as dynamically unstable, failed, not computed) gets the plain ``K``'s prediction of
the same split, as ``--train 0`` routes it.  Nothing is imputed.  :func:`bte_subset` gives every method's
held-out MAE on the crystals with a value alone, beside the MAE of the raw BTE values themselves.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["bte_rows", "bte_subset"]


def bte_rows(X: np.ndarray, y: np.ndarray, ids: Sequence[str], bte, groups, split, layers: dict,
             mode: str = "stack", level: float = 0.9) -> dict:
    """The ``K+bte`` predictions of one split's test crystals (in sorted order, as ``layers``' rows): the
    BTE model fit on the split's training crystals as ``--train 1 --bte`` fits it
    (:func:`cgcnn.transfer.fit_bte`, without its interval's outer cross-validation), the test crystals
    routed as ``--train 0`` routes them (:func:`cgcnn.transfer.predict_routes`).

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
        Last-layer inputs of every crystal (:attr:`cgcnn.transfer.Features.X`).
    y : ndarray of shape (n,)
        log10 κ_L targets.
    ids : sequence of str
        The crystals of ``X``.
    bte : cgcnn.transfer.BTEValues
    groups : tuple
        :attr:`cgcnn.transfer.Features.groups` of ``X``.
    split : cgcnn.evaluation.Split
    layers : dict
        Last-layer type ``K`` → the plain :class:`~cgcnn.transfer.LastLayer` of type ``K`` fit on the split's
        training crystals.
    mode : str
        :data:`cgcnn.transfer.BTE_MODES`.
    level : float
        CV+ interval level.

    Returns
    -------
    dict
        ``K+bte`` → (prediction, low, high, in_domain), arrays of shape (number of test crystals,).
    """
    from cgcnn.transfer import fit_bte, predict_routes, quietly

    train, test = np.asarray(split.train), np.sort(split.test)
    ids = np.asarray(ids, dtype=object)
    values, _ = bte.lookup(ids[train])
    out = {}
    for kind, plain in layers.items():
        layer = copy.copy(plain)  # the plain layer of the split stays without a BTE model
        if np.isfinite(values).sum() >= 2:
            with quietly():
                fit_bte(layer, X[train], y[train], ids[train], bte, groups, kind=kind, mode=mode, seed=split.index,
                        level=level, interval_cv=False)
                p, _ = predict_routes(layer, X[test], ids[test], bte, groups)
        else:
            p = layer.predict(X[test])
        out[f"{kind}+bte"] = (p.prediction, p.low, p.high, p.in_domain)
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
