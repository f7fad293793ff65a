"""The evaluation protocol of :mod:`cgcnn.evaluate`: its splits and its figures.

- random splits as ParAIsite's (L. Klochko, M. d'Aquin, A. Togo, L. Chaput,
  arXiv:2411.18259: 9 seeded 80/20 permutations) or a shuffled K-fold
  (:func:`make_splits`);
- grouped K-fold on a label per crystal (:func:`make_group_splits`), read from a
  table (:func:`read_groups`) or computed from the CIFs (:func:`structure_types`);
- the metrics of a test part and their mean and spread over splits, with the interval's
  coverage and width and the MAE in and out of the applicability domain (:func:`summarize`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn import InputError
from cgcnn.evaluation.report import METRICS

__all__ = ["Split", "make_splits", "make_group_splits", "protocol_text", "read_groups", "structure_types", "metrics",
           "split_metrics", "summarize"]


@dataclasses.dataclass
class Split:
    """One train/test split of the rows of a data folder.

    Attributes
    ----------
    index : int
        Number of the split (0, 1, ...); also the ``random_state`` of its last layers.
    seed : int
        Seed of the permutation (ParAIsite splits) or of the K-fold shuffle.
    train, test : ndarray of int
        Disjoint row indices.
    """

    index: int
    seed: int
    train: np.ndarray
    test: np.ndarray


def make_splits(n: int, splits: int = 9, train_fraction: float = 0.8, kfold: int | None = None) -> list[Split]:
    """The splits of the protocol.

    Parameters
    ----------
    n : int
        Number of crystals.
    splits : int
        ParAIsite protocol: seeds ``0 .. splits - 1``; split ``s`` permutes the rows
        with ``np.random.RandomState(s).permutation(n)`` and trains on the first
        ``int(train_fraction * n)`` of them, tests on the rest.
    train_fraction : float
        See ``splits``.
    kfold : int, optional
        Instead, ``sklearn.model_selection.KFold(kfold, shuffle=True, random_state=0)``:
        every crystal is tested exactly once.

    Raises
    ------
    InputError
        If a training part would have fewer than 2 crystals or a test part fewer than 2.
    """
    if kfold is not None:
        from sklearn.model_selection import KFold

        if kfold < 2 or n < 2 * kfold:
            raise InputError(f"--kfold {kfold} needs K >= 2 and at least 2 test crystals per fold ({n} crystals)")
        folds = KFold(kfold, shuffle=True, random_state=0).split(np.arange(n))
        return [Split(i, 0, train, test) for i, (train, test) in enumerate(folds)]
    if splits < 1:
        raise InputError(f"--splits must be at least 1, not {splits}")
    if not 0 < train_fraction < 1:
        raise InputError(f"--train-fraction must be between 0 and 1, not {train_fraction}")
    n_train = int(train_fraction * n)
    if n_train < 2 or n - n_train < 2:
        raise InputError(f"a {train_fraction:g} split of {n} crystals gives {n_train} train and {n - n_train} test; "
                         "at least 2 of each are needed")
    out = []
    for seed in range(splits):
        perm = np.random.RandomState(seed).permutation(n)
        out.append(Split(seed, seed, perm[:n_train], perm[n_train:]))
    return out


def metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """Metrics of one test part.

    Parameters
    ----------
    y, pred : ndarray of shape (n_samples,)
        Measured and predicted log10 κ_L.

    Returns
    -------
    dict
        ``mae``, ``rmse``, ``r2`` of log10 κ_L; ``spearman`` (NaN for a constant
        prediction); ``mape``, the mean absolute percentage error of κ_L = 10**y in %.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import (
        mean_absolute_error,
        mean_absolute_percentage_error,
        mean_squared_error,
        r2_score,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spearmanr of a constant input
        rho = spearmanr(y, pred).statistic if np.ptp(pred) > 0 and np.ptp(y) > 0 else np.nan
    return {
        "mae": mean_absolute_error(y, pred),
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
        "r2": r2_score(y, pred),
        "spearman": float(rho),
        "mape": 100.0 * mean_absolute_percentage_error(10.0 ** y, 10.0 ** pred),
    }


def split_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Metrics of each (method, split) of a predictions table (columns ``split, method, target, prediction``)."""
    rows = []
    for (method, split), part in predictions.groupby(["method", "split"], sort=False):
        rows.append({"method": method, "split": split,
                     **metrics(part["target"].to_numpy(), part["prediction"].to_numpy())})
    return pd.DataFrame(rows)


def make_group_splits(groups: Sequence, folds: int = 5) -> list[Split]:
    """Grouped K-fold splits: no group has crystals on both sides of a split.

    Parameters
    ----------
    groups : sequence of hashable, length n
        The group of every crystal (e.g. its structure prototype).
    folds : int
        ``sklearn.model_selection.GroupKFold(folds)``; fewer when there are fewer groups.

    Raises
    ------
    InputError
        Fewer than 2 groups, or a fold whose training or test part has fewer than 2 crystals.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups, dtype=object)
    n_groups = len(set(groups.tolist()))
    if n_groups < 2:
        raise InputError(f"--group-by: {n_groups} group; grouped cross-validation needs at least 2")
    folds = min(folds, n_groups)
    out = []
    for i, (train, test) in enumerate(GroupKFold(folds).split(np.zeros(len(groups)), groups=groups)):
        if len(train) < 2 or len(test) < 1:
            raise InputError(f"--group-by: fold {i} has {len(train)} training and {len(test)} test crystals")
        out.append(Split(i, 0, train, test))
    return out


def read_groups(table, column: str, ids: Sequence[str]) -> np.ndarray:
    """The ``column`` value of every crystal of ``ids``, from a CSV with a ``cif_id`` column.

    Raises
    ------
    InputError
        A missing or unreadable table, no ``cif_id`` or ``column`` column, a crystal absent from it.
    """
    table = Path(table)
    if not table.is_file():
        raise InputError(f"{table}: not found (--group-by needs a table with cif_id and {column} columns; "
                         "give it with --groups-file)")
    try:
        frame = pd.read_csv(table, dtype=str)
    except Exception as exc:  # pandas raises many types on bad files
        raise InputError(f"{table}: not a readable CSV table ({type(exc).__name__})") from None
    for col in ("cif_id", column):
        if col not in frame.columns:
            raise InputError(f"{table}: no column {col!r} (columns: {', '.join(frame.columns[:8])})")
    lookup = dict(zip(frame["cif_id"], frame[column].fillna("")))
    missing = [i for i in ids if i not in lookup]
    if missing:
        raise InputError(f"{table}: no row for {len(missing)} crystal(s) of the folder, e.g. {missing[0]!r}")
    return np.asarray([lookup[i] for i in ids], dtype=object)


def structure_types(folder, ids: Sequence[str]) -> np.ndarray:
    """:func:`cgcnn.transfer.descriptors.structure_type` of every crystal of ``ids`` in the data folder
    ``folder`` (its file, or its extxyz frame: :func:`cgcnn.crystals.read_crystal`).

    Raises
    ------
    InputError
        For an unreadable crystal (as :func:`cgcnn.crystals.read_structure`).
    """
    from cgcnn.crystals import read_crystal
    from cgcnn.transfer import structure_type

    return np.asarray([structure_type(read_crystal(folder, i)) for i in ids], dtype=object)


def summarize(predictions: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over splits of each method's metrics, and its interval figures.

    Returns
    -------
    DataFrame
        Index ``method`` (in order of first appearance); columns ``mae``, ``mae_std``, ``rmse``,
        ``rmse_std``, ``r2``, ``r2_std``, ``spearman``, ``spearman_std``, ``mape``, ``mape_std``,
        ``n_splits``; and, pooled over splits, ``coverage`` (fraction of held-out targets inside
        the interval; NaN without intervals), ``width`` (mean width, log10), ``mae_in``, ``n_in``,
        ``mae_out``, ``n_out`` (MAE and number of held-out crystals in and out of domain).
    """
    per_split = split_metrics(predictions)
    grouped = per_split.groupby("method", sort=False)
    table = pd.DataFrame(index=pd.Index(list(grouped.groups), name="method"))
    for key in METRICS:
        table[key] = grouped[key].mean()
        table[f"{key}_std"] = grouped[key].std(ddof=1)
    table["n_splits"] = grouped["split"].count()
    for col in ("coverage", "width", "mae_in", "mae_out"):
        table[col] = np.nan
    table["n_in"] = 0
    table["n_out"] = 0
    if "low" not in predictions:
        return table
    for method, part in predictions.groupby("method", sort=False):
        err = (part["prediction"] - part["target"]).abs()
        inside = part["in_domain"].astype(bool) if "in_domain" in part else pd.Series(True, index=part.index)
        table.loc[method, ["n_in", "n_out"]] = [int(inside.sum()), int((~inside).sum())]
        table.loc[method, "mae_in"] = err[inside].mean() if inside.any() else np.nan
        table.loc[method, "mae_out"] = err[~inside].mean() if (~inside).any() else np.nan
        if part["low"].notna().all():
            covered = (part["target"] >= part["low"]) & (part["target"] <= part["high"])
            table.loc[method, "coverage"] = covered.mean()
            table.loc[method, "width"] = (part["high"] - part["low"]).mean()
    return table


def protocol_text(n: int, n_splits: int, *, groups=None, group_name: str = "group", kfold: int | None = None,
                  splits: int = 9, train_fraction: float = 0.8) -> str:
    """The protocol of an evaluation of ``n`` crystals in ``n_splits`` splits, in words (``metrics.md``'s header):
    grouped K-fold (``groups``: one label per crystal), K-fold (``kfold``) or the random splits."""
    if groups is not None:
        return (f"grouped {n_splits}-fold cross-validation by {group_name} "
                f"({len(set(np.asarray(groups).tolist()))} groups; GroupKFold)")
    if kfold is not None:
        return f"{kfold}-fold cross-validation (KFold shuffle, random_state 0)"
    n_train = int(train_fraction * n)
    return (f"{splits} random splits {n_train}/{n - n_train} (train fraction {train_fraction:g}, "
            f"seeds 0-{splits - 1}, ParAIsite)")
