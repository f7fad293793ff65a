"""How good is a transfer? ``python -m cgcnn.evaluate MODELPATH CIFPATH [options]``.

Repeated cross-validation of the transfer of T. Zhu et al., Energy Environ. Sci.
14, 3559 (2021) against baselines, on one data folder of log10 κ_L targets (measured or computed).
The protocol by default is that of ParAIsite (L. Klochko, M. d'Aquin, A. Togo,
L. Chaput, arXiv:2411.18259): 9 random 80/20 splits with seeds 0-8
(``perm = np.random.RandomState(seed).permutation(n)``, the first ``int(0.8 n)``
rows train, the rest test); ``--kfold K`` gives a shuffled K-fold instead.

The crystal features (``crys_fea``, concatenated over the source models as in
S. Ju et al., arXiv:1909.11234) are computed once, with the transfer tool's
:func:`cgcnn.transfer.compute_features`; each split then refits every last layer
on its training part and predicts its test part.  Methods:

- ``constant``: the median of the training part's targets;
- ``source``: the first source model's own prediction (no transfer);
- ``mlp``, ``ridge``, ``rf``, ``gp``: last layers of :func:`cgcnn.transfer.make_last_layer`;
- ``finetune`` (``--finetune EPOCHS``): the first source network itself trained
  further on the training part (embedding frozen, Adam, early stopping on 10 %
  of the training part), ParAIsite's staged fine-tuning.

Writes ``metrics.md`` (MAE, RMSE, R² and Spearman ρ of log10 κ_L, MAPE of κ_L;
mean ± standard deviation over splits), ``predictions.csv`` and ``parity.png``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cgcnn import InputError
from cgcnn.checkpoint import SourceModel, check_output, save_atomic, save_csv
from cgcnn.cli import check_counts, run_main
from cgcnn.lastlayer import CANDIDATES as LAST_LAYER_TYPES
from cgcnn.lastlayer import make_estimator as make_last_layer
from cgcnn.transfer import compute_features

__all__ = ["BASELINES", "Split", "make_splits", "metrics", "split_metrics", "summarize", "evaluate",
           "best_method", "format_table", "parity_figure", "check_out_dir", "write_outputs", "main"]

BASELINES = ("constant", "source")
METRICS = {  # column: heading in metrics.md
    "mae": "MAE (log10)",
    "rmse": "RMSE (log10)",
    "r2": "R² (log10)",
    "spearman": "Spearman ρ",
    "mape": "MAPE %",
}


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


def summarize(predictions: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over splits of each method's metrics.

    Returns
    -------
    DataFrame
        Index ``method`` (in order of first appearance); columns ``mae``, ``mae_std``,
        ``rmse``, ``rmse_std``, ``r2``, ``r2_std``, ``spearman``, ``spearman_std``,
        ``mape``, ``mape_std``, ``n_splits``.
    """
    per_split = split_metrics(predictions)
    grouped = per_split.groupby("method", sort=False)
    table = pd.DataFrame(index=pd.Index(list(grouped.groups), name="method"))
    for key in METRICS:
        table[key] = grouped[key].mean()
        table[f"{key}_std"] = grouped[key].std(ddof=1)
    table["n_splits"] = grouped["split"].count()
    return table


def _finetune(source: SourceModel, folder, splits: Sequence[Split], epochs: int, patience: int, batch_size: int,
              lr: float, atom_init, cache_dir, workers: int, log) -> dict:
    """Test-part predictions of the first source network fine-tuned on each split's training part."""
    import torch

    from cgcnn.checkpoint import Normalizer
    from cgcnn.train import fit_network

    data = source.dataset(folder, atom_init=atom_init, cache_dir=cache_dir)
    out = {}
    for split in splits:
        t0 = time.time()
        rng = np.random.RandomState(split.seed)
        train = rng.permutation(split.train)
        n_val = max(1, round(0.1 * len(train)))
        val, fit = train[:n_val], train[n_val:]
        torch.manual_seed(split.seed)
        net = copy.deepcopy(source.net)
        # as `python -m cgcnn.train --pretrained`: a normalizer of the training targets
        normalizer = Normalizer(torch.tensor(data.targets[fit], dtype=torch.float32))
        fit_network(net, data, fit, val, normalizer, epochs, lr=lr, optim="Adam", batch_size=batch_size,
                    patience=patience, frozen=[net.embedding], seed=split.seed, workers=workers)
        tuned = dataclasses.replace(source, net=net, normalizer=normalizer)
        _, pred = tuned.run(torch.utils.data.Subset(data, np.sort(split.test)), batch_size=batch_size,
                            workers=workers, progress=False)
        out[split.index] = pred
        log(f"fine-tuned split {split.index + 1}/{len(splits)} in {time.time() - t0:.1f} s")
    return out


def evaluate(sources: Sequence[SourceModel | str], folder, *, splits: int = 9, train_fraction: float = 0.8,
             kfold: int | None = None, last_layers: Sequence[str] = LAST_LAYER_TYPES, finetune: int = 0,
             finetune_patience: int = 10, finetune_batch_size: int = 64, finetune_lr: float = 0.003,
             batch_size: int = 500, workers: int = 0, atom_init=None, cache_dir=None,
             progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cross-validate the transfer from ``sources`` to the crystals of ``folder``.

    Parameters
    ----------
    sources : sequence of SourceModel or path
        Source models (paths are loaded as regression models); their ``crys_fea``
        are concatenated, and the first one's prediction is the ``source`` row.
    folder : path
        CGCNN data folder with targets (log10 κ_L, κ_L in W m⁻¹ K⁻¹).
    splits, train_fraction, kfold
        The protocol, as :func:`make_splits`.
    last_layers : sequence of str
        Kinds of :func:`cgcnn.transfer.make_last_layer` to evaluate; split ``i``
        fits them with ``random_state=i``.
    finetune : int
        Epochs of the ``finetune`` row (0: no such row).
    finetune_patience, finetune_batch_size, finetune_lr
        Its early-stopping patience, batch size and Adam learning rate.
    batch_size, workers, atom_init, cache_dir, progress
        As :func:`cgcnn.transfer.compute_features`; ``progress`` also prints a line
        per stage on stderr.

    Returns
    -------
    table : DataFrame
        :func:`summarize` of the predictions: one row per method (``constant``,
        ``source``, the last layers, ``finetune``), mean and std over splits.
        ``table.attrs`` holds ``folder`` (its name), ``n``, ``protocol`` and ``sources``
        (file names).
    predictions : DataFrame
        Columns ``split, seed, cif_id, method, target, prediction`` (log10 κ_L): every
        method's prediction of every test crystal of every split, test crystals in
        ``id_prop.csv`` order.

    Raises
    ------
    InputError
        No source, an unknown last layer, a folder without targets, a protocol that
        does not fit the number of crystals, and the faults of
        :func:`cgcnn.transfer.compute_features`.
    """
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    sources = [s if isinstance(s, SourceModel) else SourceModel.load(s, require_regression=True) for s in sources]
    if not sources:
        raise InputError("no source model given")
    for kind in last_layers:
        if kind not in LAST_LAYER_TYPES:
            raise InputError(f"unknown last layer type {kind!r}; choose from {', '.join(LAST_LAYER_TYPES)}")
    if finetune < 0:
        raise InputError(f"--finetune must be a number of epochs >= 0, not {finetune}")
    t0 = time.time()
    feats = compute_features(sources, folder, batch_size=batch_size, workers=workers, atom_init=atom_init,
                             cache_dir=cache_dir, progress=progress)
    if feats.targets is None:
        raise InputError(f"{Path(folder) / 'id_prop.csv'}: evaluation needs targets (cif_id,log10 κ_L rows)")
    n = len(feats.ids)
    parts = make_splits(n, splits, train_fraction, kfold)
    log(f"{n} crystals x {feats.crys_fea.shape[1]} crys_fea values in {time.time() - t0:.1f} s; "
        f"{len(parts)} splits")
    X, y = feats.crys_fea, feats.targets
    ids = np.asarray(feats.ids, dtype=object)

    tuned = {}
    if finetune:
        tuned = _finetune(sources[0], folder, parts, finetune, finetune_patience, finetune_batch_size,
                          finetune_lr, atom_init, cache_dir, workers, log)

    frames = []
    for split in parts:
        test = np.sort(split.test)
        preds = {
            "constant": np.full(len(test), np.median(y[split.train])),
            "source": feats.source_prediction[test, 0],
        }
        for kind in last_layers:
            estimator = make_last_layer(kind, split.index)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # lbfgs and GP optimiser convergence notes
                estimator.fit(X[split.train], y[split.train])
                preds[kind] = estimator.predict(X[test])
        if finetune:
            preds["finetune"] = tuned[split.index]
        for method, pred in preds.items():
            frames.append(pd.DataFrame({"split": split.index, "seed": split.seed, "cif_id": ids[test],
                                        "method": method, "target": y[test], "prediction": np.asarray(pred, float)}))
        log(f"split {split.index + 1}/{len(parts)} done, {time.time() - t0:.1f} s")
    predictions = pd.concat(frames, ignore_index=True)
    table = summarize(predictions)
    if kfold is not None:
        protocol = f"{kfold}-fold cross-validation (KFold shuffle, random_state 0)"
    else:
        n_train = int(train_fraction * n)
        protocol = (f"{splits} random splits {n_train}/{n - n_train} (train fraction {train_fraction:g}, "
                    f"seeds 0-{splits - 1}, ParAIsite)")
    table.attrs.update(folder=Path(folder).resolve().name, n=n, protocol=protocol,
                       sources=[s.path.name for s in sources])
    return table, predictions


def best_method(table: pd.DataFrame) -> str | None:
    """The method other than the baselines with the lowest mean MAE (None if there is none)."""
    rest = table.drop(index=[m for m in BASELINES if m in table.index])
    return None if rest.empty else str(rest["mae"].idxmin())


def format_table(table: pd.DataFrame) -> str:
    """``table`` as Markdown: a header line (folder, n, protocol, sources), then one row per method."""
    a = table.attrs
    header = (f"Transfer evaluation of `{a.get('folder', '?')}` ({a.get('n', '?')} crystals): "
              f"{a.get('protocol', '')}; source model(s): {', '.join(a.get('sources', []))}. "
              "Held-out metrics, mean ± std over splits; κ_L in W m⁻¹ K⁻¹.")
    lines = [
        header,
        "",
        "| method | " + " | ".join(METRICS.values()) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for method, row in table.iterrows():
        cells = []
        for key in METRICS:
            digits = 1 if key == "mape" else 3
            mean, std = row[key], row[f"{key}_std"]
            cells.append("n/a" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label(method: str) -> str:
    return {"source": "source model (no transfer)", "constant": "constant (train median)",
            "finetune": "fine-tuned source network"}.get(method, f"{method} last layer")


def parity_figure(table: pd.DataFrame, predictions: pd.DataFrame):
    """A log-log parity plot of κ_L: held-out points of the best last layer and of the source model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 6.0), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    best = best_method(table)
    shown = [m for m in ("source", best) if m is not None and m in table.index]
    styles = {"source": {"marker": "x", "color": "tab:gray", "alpha": 0.6, "s": 18},
              best: {"marker": "o", "color": "tab:blue", "alpha": 0.55, "s": 16, "edgecolors": "none"}}
    lo, hi = np.inf, -np.inf
    for method in shown:
        part = predictions[predictions["method"] == method]
        kt, kp = 10.0 ** part["target"].to_numpy(), 10.0 ** part["prediction"].to_numpy()
        lo, hi = min(lo, kt.min(), kp.min()), max(hi, kt.max(), kp.max())
        row = table.loc[method]
        ax.scatter(kt, kp, label=f"{_label(method)}: MAE {row['mae']:.3f}, R² {row['r2']:.2f}", **styles[method])
    lo, hi = lo / 1.3, hi * 1.3
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="y = x")
    ax.plot([lo, hi], [2 * lo, 2 * hi], color="black", lw=0.6, ls=":", label="factor of 2")
    ax.plot([lo, hi], [lo / 2, hi / 2], color="black", lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_box_aspect(1)
    ax.set_xlabel(r"target $\kappa_\mathrm{L}$ (W m$^{-1}$ K$^{-1}$)")
    ax.set_ylabel(r"predicted $\kappa_\mathrm{L}$ (W m$^{-1}$ K$^{-1}$)")
    a = table.attrs
    n_splits = int(table["n_splits"].max())
    if best is not None:
        row = table.loc[best]
        title = f"{_label(best)}: MAE {row['mae']:.3f} log10, R² {row['r2']:.2f}"
    else:
        row = table.loc["source"]
        title = f"{_label('source')}: MAE {row['mae']:.3f} log10, R² {row['r2']:.2f}"
    ax.set_title(f"{a.get('folder', '')}, held-out over {n_splits} splits\n{title} (mean over splits)", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    return fig


def check_out_dir(out_dir) -> Path:
    """Check, without creating anything, that ``out_dir`` is or can be made a writable folder.

    Raises :class:`InputError` naming the folder otherwise.
    """
    out = Path(out_dir)
    if out.exists():
        return check_output(out / "metrics.md").parent
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{out}: cannot create the output folder ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot create the output folder ({parent} is not writable)")
    return out


def write_outputs(table: pd.DataFrame, predictions: pd.DataFrame, out_dir) -> dict:
    """Write ``metrics.md``, ``predictions.csv`` and ``parity.png`` into ``out_dir`` (created), atomically.

    Returns a dict of the three paths.  Raises :class:`InputError` if the folder cannot be made.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    paths = {"metrics": out / "metrics.md", "predictions": out / "predictions.csv", "parity": out / "parity.png"}
    save_atomic(format_table(table), paths["metrics"], saver=lambda text, f: f.write(text.encode()))
    save_csv(predictions, paths["predictions"], float_format="%.6g")
    save_atomic(parity_figure(table, predictions), paths["parity"],
                saver=lambda fig, f: fig.savefig(f, format="png", bbox_inches="tight", pad_inches=0.1))
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cgcnn.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("modelpath", metavar="MODELPATH",
                   help="source model checkpoint (.pth.tar); several, comma-separated, concatenate their crys_fea")
    p.add_argument("cifpath", metavar="CIFPATH",
                   help="data folder: <cif_id>.cif files, id_prop.csv (cif_id,log10 κ_L) and atom_init.json")
    p.add_argument("--out-dir", default="evaluation", help="folder for metrics.md, predictions.csv, parity.png")
    p.add_argument("--splits", default=9, type=int, help="random splits, seeds 0..N-1 (ParAIsite protocol)")
    p.add_argument("--train-fraction", default=0.8, type=float, help="training part of each random split")
    p.add_argument("--kfold", default=None, type=int, metavar="K", help="K-fold cross-validation instead")
    p.add_argument("--last-layers", default=",".join(LAST_LAYER_TYPES),
                   help="comma-separated last layers to evaluate (of mlp, ridge, rf, gp)")
    p.add_argument("--finetune", default=0, type=int, metavar="EPOCHS",
                   help="also fine-tune the first source network for at most EPOCHS epochs per split (0: no)")
    p.add_argument("--finetune-patience", default=10, type=int, help="early-stopping patience of --finetune")
    p.add_argument("--finetune-batch-size", default=64, type=int, help="batch size of --finetune")
    p.add_argument("--finetune-lr", default=0.003, type=float, help="Adam learning rate of --finetune")
    p.add_argument("-b", "--batch-size", default=500, type=int, help="crystals per batch of the source model")
    p.add_argument("-j", "--workers", default=0, type=int, help="data loading worker processes")
    p.add_argument("--atom-init", default=None, help="atom_init.json (default CIFPATH/atom_init.json)")
    p.add_argument("--cache-dir", default=None, help="folder to keep crystal graphs across runs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_counts(args, at_least_one=("batch_size", "finetune_batch_size"))
    paths = [p for p in args.modelpath.split(",") if p]
    if not paths:
        raise InputError("MODELPATH names no model")
    last_layers = [k.strip() for k in args.last_layers.split(",") if k.strip()]
    sources = [SourceModel.load(p, require_regression=True) for p in paths]
    check_out_dir(args.out_dir)  # fail before the long part, creating nothing
    table, predictions = evaluate(
        sources, args.cifpath, splits=args.splits, train_fraction=args.train_fraction, kfold=args.kfold,
        last_layers=last_layers, finetune=args.finetune, finetune_patience=args.finetune_patience,
        finetune_batch_size=args.finetune_batch_size, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
        workers=args.workers, atom_init=args.atom_init, cache_dir=args.cache_dir, progress=not args.quiet)
    written = write_outputs(table, predictions, args.out_dir)
    print(format_table(table), end="")
    print(f"wrote {written['metrics']}, {written['predictions']}, {written['parity']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
