"""cgcnn.transfer.fits: the fits of --train 1 as tasks on all cores, shared between candidates, with the
numbers of one process bit for bit."""

from __future__ import annotations

import numpy as np

from cgcnn.data import start_pool
from cgcnn.transfer import LastLayer, cv_mae, repeated_folds
from cgcnn.transfer.fits import FitData, candidate_maes, fit_chosen

KINDS = ("ridge", "gp", "ensemble", "mlp")


def member_data(n: int = 36, seed: int = 0):
    """Two ensemble members side by side, each 6 feature columns and 3 descriptor columns (groups (6, 3, 2)),
    a target that depends on both."""
    rng = np.random.RandomState(seed)
    base = rng.randn(n, 9)
    X = np.concatenate([base + 0.05 * rng.randn(n, 9), base + 0.05 * rng.randn(n, 9)], axis=1)
    y = 1.0 + 0.5 * base[:, 0] - 0.3 * base[:, 6] + 0.2 * np.sin(base[:, 7]) + 0.1 * rng.randn(n)
    return X, y, (6, 3, 2)


def test_candidate_maes_are_cv_mae():
    """The candidates' cross-validated MAEs, their shared fits made once (ensemble from gp and ridge), equal
    cv_mae's own fits, in a pool of two processes as in this one (rf, one fit per fold like mlp, left out
    for time)."""
    X, y, groups = member_data(24)
    splits = repeated_folds(len(y), 3, 1, 0)
    data = FitData(X, y, 0, groups, splits)
    pool = start_pool(2, data)
    try:
        there = candidate_maes(pool, data, KINDS)
    finally:
        pool.shutdown()
    here = candidate_maes(None, data, ("gp", "ensemble"))
    for kind in KINDS:
        assert there[kind] == cv_mae(kind, X, y, splits, 0, groups), kind
    assert here == {k: there[k] for k in here}


def test_fit_chosen_in_a_pool_as_here():
    X, y, groups = member_data(24)
    data = FitData(X, y, 0, groups, repeated_folds(len(y), 3, 1, 0), level=0.8, folds=3)
    here = fit_chosen(None, data, "ridge", True, True)
    pool = start_pool(2, data)
    try:
        there = fit_chosen(pool, data, "ridge", True, True)
    finally:
        pool.shutdown()
    np.testing.assert_array_equal(here[0].predict(X), there[0].predict(X))
    np.testing.assert_array_equal(here[1].predict_interval(X)[1], there[1].predict_interval(X)[1])
    assert here[2] == there[2] and 0 < here[2][0] <= 1 and here[2][1] > 0


def test_last_layer_does_not_depend_on_jobs():
    X, y, groups = member_data(30)
    one = LastLayer.fit(X, y, "ridge", seed=3, cv_folds=3, cv_repeats=1, level=0.8, groups=groups, jobs=1)
    two = LastLayer.fit(X, y, "ridge", seed=3, cv_folds=3, cv_repeats=1, level=0.8, groups=groups, jobs=2)
    assert one.cv == two.cv and one.interval == two.interval and one.kind == two.kind == "ridge"
    assert one.cv["mae"] > 0 and one.interval["cv_coverage"] is not None
    p1, p2 = one.predict(X), two.predict(X)
    np.testing.assert_array_equal(p1.prediction, p2.prediction)
    np.testing.assert_array_equal(p1.low, p2.low)
    np.testing.assert_array_equal(p1.high, p2.high)
