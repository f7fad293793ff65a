"""Last-layer regressors: the estimator of each ``--last-layer-type`` and its cross-validation.

The original tool's last layer (T. Zhu et al., Energy Environ. Sci. 14, 3559 (2021)) is
a scikit-learn ``MLPRegressor`` on ``crys_fea``; :func:`make_estimator` gives it and the
types this tool adds (ridge, random forest, an additive Gaussian process), and
:func:`cv_mae` scores a type by cross-validation inside the training data, as
``--last-layer-type auto`` does.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.gaussian_process.kernels import Hyperparameter, Kernel

from cgcnn import InputError

__all__ = ["LAST_LAYER_TYPES", "CANDIDATES", "ColumnKernel", "MemberAverage", "make_estimator", "quietly", "quiet_fit",
           "quiet_predict", "repeated_folds", "cv_mae"]

#: Kinds of :func:`make_estimator` and ``auto``.
LAST_LAYER_TYPES = ("auto", "mlp", "ridge", "rf", "gp", "ensemble")
#: Kinds ``auto`` chooses from.
CANDIDATES = ("ridge", "gp", "ensemble", "rf", "mlp")


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


class MemberAverage(RegressorMixin, BaseEstimator):
    """The mean prediction of one regressor per ensemble member, each fit on its member's columns.

    The input ``X`` of shape (n, members × width) is ``members`` blocks of ``width``
    columns side by side, block k the last-layer input of member k (its own source and
    property models: the same networks trained from other random seeds); a clone of
    ``estimator`` is fit on each block and the predictions are averaged.  Averaging over
    independently trained networks (a deep ensemble: B. Lakshminarayanan, A. Pritzel,
    C. Blundell, NeurIPS 30 (2017)) lowers the variance a single network's random
    initialisation puts into its features, without a free parameter.

    Parameters
    ----------
    estimator : scikit-learn regressor
        Unfitted; cloned for each member.
    members : int
        Number of blocks (at least 1).

    Attributes
    ----------
    estimators_ : list
        The fitted clones, in member order.

    Raises
    ------
    ValueError
        From ``fit`` and ``predict``, if the number of columns is not a multiple of
        ``members``.
    """

    def __init__(self, estimator=None, members: int = 1):
        self.estimator = estimator
        self.members = members

    def _blocks(self, X) -> list:
        X = np.asarray(X)
        if X.ndim != 2 or self.members < 1 or X.shape[1] % self.members:
            raise ValueError(f"{X.shape[1] if X.ndim == 2 else X.shape} columns are not {self.members} equal blocks")
        width = X.shape[1] // self.members
        return [X[:, k * width:(k + 1) * width] for k in range(self.members)]

    def fit(self, X, y):
        from sklearn.base import clone

        self.estimators_ = [clone(self.estimator).fit(block, y) for block in self._blocks(X)]
        return self

    def predict(self, X) -> np.ndarray:
        """Mean over members of their predictions, shape (n,)."""
        return np.mean([est.predict(block) for est, block in zip(self.estimators_, self._blocks(X))], axis=0)


def _kernel(groups: tuple[int, int] | None):
    """The ``gp`` kernel for inputs ``[crys_fea (groups[0] columns), descriptors (groups[1])]``."""
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

    n_crys, n_desc = groups[:2] if groups else (0, 0)
    if not n_desc or not n_crys:
        return (ConstantKernel(1.0) * RBF(length_scale=10.0, length_scale_bounds=(1e-2, 1e4))
                + ConstantKernel(0.1) * DotProduct(1.0) + WhiteKernel(0.1))
    crys = tuple(range(n_crys))
    desc = tuple(range(n_crys, n_crys + n_desc))
    return (ConstantKernel(1.0) * ColumnKernel(RBF(10.0, (1e-2, 1e4)), crys)
            + ConstantKernel(1.0) * ColumnKernel(RBF(3.0, (1e-2, 1e4)), desc)
            + ConstantKernel(0.1) * ColumnKernel(DotProduct(1.0), desc)
            + WhiteKernel(0.1))


def make_estimator(kind: str = "mlp", seed: int = 0, groups: tuple | None = None):
    """A fresh, unfitted scikit-learn regressor.

    Parameters
    ----------
    kind : {"mlp", "ridge", "rf", "gp", "ensemble"}
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
        ``ensemble``: the mean (``VotingRegressor``, equal weights) of three regressors
        that fail differently: that additive ``gp``, a Gaussian process with one
        constant × RBF + constant × linear kernel on all the standardised inputs (+ white
        noise), and ``ridge``.  The additive one interpolates best among crystals like
        the training ones; far from them its RBF terms fall back to the training mean,
        while the other two fall back to a linear trend in the inputs (Slack's power law
        is linear in the log descriptors), which carries further to structure types absent
        from the training data.  An equal-weight model average lowers variance without a
        free parameter (T. Hastie, R. Tibshirani, J. Friedman, *The Elements of
        Statistical Learning*, 2nd ed., Springer (2009), §8.8).  Without descriptors the
        two Gaussian processes are the same model: ``ensemble`` is ``gp``.
    seed : int
        ``random_state`` of the estimator.
    groups : (int, int) or (int, int, int), optional
        Columns of ``crys_fea`` and of descriptors, in that order, for ``gp``; a third
        number above 1 is a count of ensemble members whose inputs (each ``crys_fea``
        then descriptors, as the first two numbers say) lie side by side: the estimator
        of ``kind`` is then fit on each member's columns and the predictions averaged
        (:class:`MemberAverage`).

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

    if groups is not None and len(groups) > 2 and groups[2] > 1:
        return MemberAverage(make_estimator(kind, seed, tuple(groups[:2])), int(groups[2]))
    if kind == "mlp":
        return MLPRegressor(hidden_layer_sizes=(64,), activation="identity", solver="lbfgs", alpha=0.1,
                            tol=1e-4, max_iter=200, random_state=seed)
    if kind == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 25)))
    if kind == "rf":
        return RandomForestRegressor(n_estimators=300, random_state=seed, n_jobs=1)
    if kind in ("gp", "ensemble"):
        additive = make_pipeline(StandardScaler(),
                                 GaussianProcessRegressor(_kernel(groups), normalize_y=True, random_state=seed))
        if kind == "gp" or not groups or not all(groups[:2]):
            return additive
        from sklearn.ensemble import VotingRegressor

        whole = make_pipeline(StandardScaler(),
                              GaussianProcessRegressor(_kernel(None), normalize_y=True, random_state=seed))
        return VotingRegressor([("additive_gp", additive), ("gp", whole), ("ridge", make_estimator("ridge", seed))])
    raise InputError(f"unknown last layer type {kind!r}; choose one of {', '.join(LAST_LAYER_TYPES)}")


@contextlib.contextmanager
def quietly():
    """Within the block, no warnings and no NumPy floating-point reports: the lbfgs and Gaussian-process
    optimisers' convergence notes and the conformal wrapper's, which say nothing to a user of the fitted
    last layer (its cross-validated figures do)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def quiet_fit(estimator, X, y):
    """``estimator.fit(X, y)`` (X of shape (n, n_features), y of shape (n,)) without the lbfgs and GP
    optimiser's convergence warnings; returns the estimator."""
    with quietly():
        return estimator.fit(X, y)


def quiet_predict(estimator, X):
    """``estimator.predict(X)`` as float64, shape (n,), without numerical warnings."""
    with quietly():
        return np.asarray(estimator.predict(X), dtype=np.float64)


def repeated_folds(n: int, folds: int, repeats: int, seed: int):
    """``folds`` x ``repeats`` (train, test) index pairs of ``n`` rows (scikit-learn ``RepeatedKFold``)."""
    from sklearn.model_selection import RepeatedKFold

    return list(RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed).split(np.zeros(n)))


def cv_mae(kind: str, X: np.ndarray, y: np.ndarray, splits, seed: int = 0, groups=None) -> float:
    """Mean absolute error of ``kind`` over ``splits`` (a list of (train, test) index pairs),
    the errors of all test rows pooled (log10 κ_L)."""
    from sklearn.metrics import mean_absolute_error

    errs_true, errs_pred = [], []
    for train, test in splits:
        est = quiet_fit(make_estimator(kind, seed, groups), X[train], y[train])
        errs_true.append(y[test])
        errs_pred.append(quiet_predict(est, X[test]))
    return float(mean_absolute_error(np.concatenate(errs_true), np.concatenate(errs_pred)))

