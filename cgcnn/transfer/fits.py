"""The fits of a last layer (:meth:`cgcnn.transfer.lastlayer.LastLayer.fit`) as tasks on all cores,
each fit once.

``auto`` scores every candidate by repeated K-fold cross-validation, then fits the chosen type on all
crystals, its CV+ interval (K fold models) and the outer cross-validation of that interval (K more CV+
fits): some hundred independent fits.  They run here as tasks of a pool of processes
(:func:`cgcnn.data.start_pool`: forked, one BLAS and torch thread each, the training data inherited,
not pickled), longest first; a fit's numbers do not depend on where it runs, so the table, the choice
and the last layer are those of one process, bit for bit.

Fits shared between candidates are made once: an ``ensemble`` is the mean of the additive ``gp``, a
Gaussian process on all inputs and ``ridge`` (per ensemble member), each fit on the same fold as the
``gp`` and ``ridge`` candidates (the same clone of the same estimator on the same rows); its fold
predictions are formed from theirs with the arithmetic of scikit-learn's ``VotingRegressor`` and of
:class:`cgcnn.transfer.estimators.MemberAverage`, so its cross-validated MAE is the same bit for bit.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np

from cgcnn import __version__, available_cores
from cgcnn.transfer.estimators import MemberAverage, make_estimator, quiet_fit, quietly
from cgcnn.transfer.intervals import fit_conformal, interval_fold, interval_folds

__all__ = ["FitData", "candidate_maes", "fit_chosen", "fit_jobs", "library_versions"]

#: Longest first, so that the pool's processes finish together (measured on data/sample).
_COST = {"rf": 5, "mlp": 3, "whole": 2, "gp": 2, "ridge": 1}


@dataclass
class FitData:
    """What every fit of a last layer reads (held by each pool process).

    X : ndarray (n, n_features); y : ndarray (n,); seed; groups as :func:`make_estimator`;
    splits : list of (train, test) index pairs of the repeated K-fold; level, folds: the interval's.
    """

    X: np.ndarray
    y: np.ndarray
    seed: int
    groups: tuple | None
    splits: list
    level: float = 0.9
    folds: int = 5


def fit_jobs(jobs: int | None) -> int:
    """Processes for the fits: ``jobs``, or all cores when None; 1 (this process) inside a pool's process."""
    if multiprocessing.current_process().daemon:
        return 1
    return max(1, available_cores() if jobs is None else int(jobs))


def _members(groups) -> int:
    return int(groups[2]) if groups is not None and len(groups) > 2 and groups[2] > 1 else 1


def _components(kind: str, seed: int, groups) -> dict:
    """The estimators whose per-member predictions make up ``kind``'s (one for every kind but a
    three-part ``ensemble``), by component name."""
    inner = tuple(groups[:2]) if groups is not None else None
    if kind == "ensemble":
        est = make_estimator("ensemble", seed, inner)
        if hasattr(est, "estimators"):  # a VotingRegressor: its parts, in its order
            names = {"additive_gp": "gp", "gp": "whole", "ridge": "ridge"}
            return {names[name]: part for name, part in est.estimators}
        return {"gp": est}  # without descriptors ensemble is gp
    return {kind: make_estimator(kind, seed, inner)}


def _fold_predictions(data: FitData, item) -> list:
    """Pool task: one component fit on one fold, per member (as :class:`MemberAverage` fits them on the
    fold's rows); each member's raw predictions of the fold's test rows."""
    kind, name, fold = item
    estimator = _components(kind, data.seed, data.groups)[name]
    train, test = data.splits[fold]
    fitted = MemberAverage(estimator, _members(data.groups))
    with quietly():
        fitted.fit(data.X[train], data.y[train])
        return [est.predict(block) for est, block in zip(fitted.estimators_, fitted._blocks(data.X[test]))]


def _candidate_prediction(kind: str, parts: dict, members: int) -> np.ndarray:
    """A fold's predictions of ``kind`` from its components' per-member predictions, with the arithmetic
    of ``VotingRegressor.predict`` (equal weights) and ``MemberAverage.predict``."""
    if kind == "ensemble" and len(parts) > 1:
        per_member = [np.average(np.asarray([parts[n][k] for n in ("gp", "whole", "ridge")]).T, axis=1)
                      for k in range(members)]
    else:
        per_member = [next(iter(parts.values()))[k] for k in range(members)]
    pred = per_member[0] if members == 1 else np.mean(per_member, axis=0)
    return np.asarray(pred, dtype=np.float64)


def _run(pool, function, items: list) -> list:
    """``[function(state, item) for item in items]``, in the pool (one task per item) or here."""
    if pool is None:
        return [function(*args) for args in items]
    from cgcnn.data import run_tasks

    futures = [pool.submit(run_tasks, function, [item]) for _, item in items]
    return [f.result()[0] for f in futures]


def candidate_maes(pool, data: FitData, kinds) -> dict:
    """Cross-validated MAE (log10 κ_L, the test rows of all ``data.splits`` pooled) of each of ``kinds``,
    as :func:`cgcnn.transfer.estimators.cv_mae` gives it, every component fit once, longest first.

    Parameters
    ----------
    pool : concurrent.futures.Executor or None
        A pool started with ``data`` as its state (:func:`cgcnn.data.start_pool`), or None for this process.
    """
    from sklearn.metrics import mean_absolute_error

    needed: dict = {}
    for kind in kinds:
        for name in _components(kind, data.seed, data.groups):
            needed.setdefault(name, kind)
    tasks = [(kind, name, fold) for name, kind in needed.items() for fold in range(len(data.splits))]
    tasks.sort(key=lambda t: -_COST.get(t[1], 1))
    got = dict(zip(tasks, _run(pool, _fold_predictions, [(data, t) for t in tasks])))
    members = _members(data.groups)
    table = {}
    for kind in kinds:
        names = list(_components(kind, data.seed, data.groups))
        preds = [_candidate_prediction(kind, {n: got[(needed[n], n, f)] for n in names}, members)
                 for f in range(len(data.splits))]
        truth = np.concatenate([data.y[test] for _, test in data.splits])
        table[kind] = float(mean_absolute_error(truth, np.concatenate(preds)))
    return table


def _final(data: FitData, item):
    """Pool task: the chosen type fit on all rows (``item[1] == -2``), its CV+ interval (``-1``), or one
    outer fold of the interval's cross-validation (``k >= 0``)."""
    kind, k = item
    if k == -2:
        return quiet_fit(make_estimator(kind, data.seed, data.groups), data.X, data.y)
    if k == -1:
        return fit_conformal(kind, data.X, data.y, data.level, data.seed, data.folds, data.groups)
    return interval_fold(kind, data.X, data.y, data.level, data.seed, data.folds, data.groups, k)


def fit_chosen(pool, data: FitData, kind: str, conformal: bool, interval_cv: bool):
    """The chosen type fit on all rows, its CV+ interval model (None unless ``conformal``) and the
    interval's cross-validated coverage and mean width ((None, None) unless ``interval_cv``), as
    :func:`cgcnn.transfer.intervals.fit_conformal` and :func:`cgcnn.transfer.intervals.interval_cv`
    give them, as tasks of ``pool`` (or here when None)."""
    outer = interval_folds(data.X, data.seed, data.folds) if conformal and interval_cv else []
    items = [(kind, k) for k in range(len(outer))] + ([(kind, -1)] if conformal else []) + [(kind, -2)]
    got = dict(zip(items, _run(pool, _final, [(data, item) for item in items])))
    covered, widths = [], []
    for k in range(len(outer)):
        fold = got[(kind, k)]
        if fold is None:  # too few rows in a fold for the level
            covered = None
            break
        covered.append(fold[0])
        widths.append(fold[1])
    measured = (None, None)
    if outer and covered is not None:
        measured = float(np.mean(np.concatenate(covered))), float(np.mean(np.concatenate(widths)))
    return got[(kind, -2)], got.get((kind, -1)), measured


def library_versions() -> dict:
    """The versions of cgcnn, scikit-learn, NumPy and MAPIE a last layer is fit with (its record)."""
    import sklearn

    out = {"cgcnn": __version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}
    try:
        import mapie

        out["mapie"] = mapie.__version__
    except Exception:  # pragma: no cover - MAPIE is a requirement
        pass
    return out
