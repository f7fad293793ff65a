"""Prediction intervals and the applicability domain of a last layer.

- CV+ intervals (cross-conformal / jackknife+ after K-fold: R. F. Barber, E. J. Candès,
  A. Ramdas, R. J. Tibshirani, Ann. Statist. 49, 486 (2021); V. Vovk, A. Gammerman,
  G. Shafer, *Algorithmic Learning in a Random World*, Springer (2005)) through MAPIE's
  ``CrossConformalRegressor``;
- a k-nearest-neighbour applicability domain in the standardised input space
  (I. Sushko et al., J. Chem. Inf. Model. 50, 2094 (2010)).
"""

from __future__ import annotations

import copy

import numpy as np

from cgcnn import InputError
from cgcnn.transfer.estimators import make_estimator, quietly

__all__ = ["check_level", "conformal_folds", "fit_conformal", "with_level", "interval_cv", "interval_fold",
           "interval_folds", "fit_domain", "domain_distance"]

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


def conformal_folds(folds: int, n: int) -> int:
    """The folds of the CV+ interval of ``n`` crystals asked to use ``folds``: at least 2 (CV+ needs
    a held-out part; ``--cv-folds 0`` too) and at most ``n`` (one crystal per fold)."""
    return max(2, min(folds, n))


def fit_conformal(kind: str, X, y, level: float, seed: int, folds: int, groups=None):
    """CV+ (Barber et al. 2021) with MAPIE: ``folds`` fold models and the absolute residuals."""
    from mapie.regression import CrossConformalRegressor

    check_level(level, len(y))
    folds = conformal_folds(folds, len(y))
    conformal = CrossConformalRegressor(make_estimator(kind, seed, groups), confidence_level=level, method="plus",
                                        cv=folds, random_state=seed)
    with quietly():
        conformal.fit_conformalize(X, y)
    return conformal


def with_level(conformal, level: float):
    """The fitted CV+ model giving intervals at ``level`` (a shallow copy; MAPIE 1.x keeps the
    levels in ``_alphas``, set at construction)."""
    from mapie.utils import _transform_confidence_level_to_alpha_list

    out = copy.copy(conformal)
    out._alphas = _transform_confidence_level_to_alpha_list(level)
    return out


def interval_folds(X, seed: int, folds: int) -> list:
    """The (train, test) index pairs of :func:`interval_cv`'s outer cross-validation (``KFold``,
    shuffled with ``seed + 1``)."""
    from sklearn.model_selection import KFold

    return list(KFold(folds, shuffle=True, random_state=seed + 1).split(X))


def interval_fold(kind: str, X, y, level: float, seed: int, folds: int, groups, k: int):
    """Fold ``k`` of :func:`interval_cv`: whether each held-out crystal's CV+ interval (fit on the other
    folds) holds its target, and the intervals' widths (log10); None when the fold's training part is
    too small for ``level``."""
    train, test = interval_folds(X, seed, folds)[k]
    if 1.0 / (1.0 - level) >= len(train):
        return None
    conf = fit_conformal(kind, X[train], y[train], level, seed, folds, groups)
    with quietly():
        _, b = conf.predict_interval(X[test])
    lo, hi = b[:, 0, 0], b[:, 1, 0]
    return (y[test] >= lo) & (y[test] <= hi), hi - lo


def interval_cv(kind: str, X, y, level: float, seed: int, folds: int,
                 groups=None) -> tuple[float | None, float | None]:
    """Coverage and mean width (log10) of the CV+ interval on held-out folds of the training data
    (:func:`interval_fold` of each outer fold)."""
    covered, widths = [], []
    for k in range(len(interval_folds(X, seed, folds))):
        fold = interval_fold(kind, X, y, level, seed, folds, groups, k)
        if fold is None:
            return None, None
        covered.append(fold[0])
        widths.append(fold[1])
    return float(np.mean(np.concatenate(covered))), float(np.mean(np.concatenate(widths)))


_DOMAIN_K = 5
_DOMAIN_QUANTILE = 0.9


def fit_domain(X: np.ndarray, columns: tuple[int, int] | None = None) -> dict:
    """Standardisation, training rows and the distance threshold of the applicability domain.

    The distance of a crystal is its mean Euclidean distance to the ``k`` nearest training
    crystals (k = min(5, n − 1)) in the standardised space of the input columns
    ``columns[0]:columns[1]`` (all columns when None); the threshold is the 90th percentile
    of that distance over the training crystals, each excluded from its own neighbours
    (a k-nearest-neighbour applicability domain; I. Sushko et al., J. Chem. Inf. Model.
    50, 2094 (2010)).  :class:`cgcnn.transfer.lastlayer.LastLayer` passes the descriptor columns
    when the input has them: the physical quantities of Slack's formula (mass, volume,
    density, cell size, θ_D, moduli, κ_S), where distance follows the error of held-out
    crystals (Spearman ρ 0.33 on ``data/sample``, 0.62 on the half-Heuslers, 9 × 80/20)
    better than in the whole input, whose 64 ``crys_fea`` columns are mostly directions
    the last layer ignores (ρ −0.07 and 0.64).

    Parameters
    ----------
    X : ndarray of shape (n, n_features)
    columns : (int, int), optional
        First and one-past-last column of the domain's space.

    Returns
    -------
    dict
        ``mean``, ``scale``, ``X`` (standardised training rows of the columns), ``k``,
        ``threshold``, ``quantile``, ``columns`` (or None).
    """
    from sklearn.neighbors import NearestNeighbors

    if columns is not None:
        X = X[:, columns[0]:columns[1]]
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    Z = (X - mean) / scale
    k = max(1, min(_DOMAIN_K, len(Z) - 1))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(Z).kneighbors(Z)
    own = dist[:, 1:].mean(axis=1)  # the first neighbour is the crystal itself
    return {"mean": mean, "scale": scale, "X": Z, "k": k,
            "threshold": float(np.quantile(own, _DOMAIN_QUANTILE)), "quantile": _DOMAIN_QUANTILE,
            "columns": None if columns is None else [int(columns[0]), int(columns[1])]}


def domain_distance(domain: dict, X: np.ndarray) -> np.ndarray:
    """Mean distance, shape (n,), of each row of ``X`` (n, n_features) to its ``k`` nearest
    training crystals in the space recorded by :func:`fit_domain` (files without ``columns``
    use every column)."""
    from sklearn.neighbors import NearestNeighbors

    columns = domain.get("columns")
    if columns is not None:
        X = X[:, columns[0]:columns[1]]
    Z = (np.asarray(X, dtype=np.float64) - domain["mean"]) / domain["scale"]
    dist, _ = NearestNeighbors(n_neighbors=int(domain["k"])).fit(domain["X"]).kneighbors(Z)
    return dist.mean(axis=1)
