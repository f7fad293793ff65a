"""Transfer learning of lattice thermal conductivity (κ_L) on crystal graphs.

    python transfer_learning_kappa.py --train 1 models/source.pth.tar data/sample   # fit last_layer.sav
    python transfer_learning_kappa.py --train 0 models/source.pth.tar path/to/new   # predict

The frozen source model (a CGCNN, Xie & Grossman, PRL 120, 145301 (2018)) turns
each crystal into its crystal feature vector ``crys_fea``; a small scikit-learn
regressor, the last layer, is fit on those vectors (Zhu et al., Energy Environ.
Sci. 14, 3559 (2021)).  Targets and predictions are log10 κ_L with κ_L in
W m⁻¹ K⁻¹.  Several source models, comma-separated, have their ``crys_fea``
concatenated (Ju et al., Phys. Rev. Materials (2021)).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from cgcnn import InputError
from cgcnn.checkpoint import SourceModel, check_output, save_csv
from cgcnn.cli import check_counts, run_main
from cgcnn.transfer import (LAST_LAYER_TYPES, compute_features, fit_last_layer, load_last_layer,
                            save_last_layer)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="transfer_learning_kappa.py",
        description="Fit (--train 1) or apply (--train 0) a last layer on a frozen CGCNN source model's crys_fea.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("modelpath", metavar="MODELPATH",
                   help="source model checkpoint (.pth.tar); several, comma-separated, concatenate their crys_fea")
    p.add_argument("cifpath", metavar="CIFPATH",
                   help="data folder: <cif_id>.cif files, id_prop.csv (cif_id,log10 κ_L) and atom_init.json")
    p.add_argument("--train", default=1, type=int, choices=[0, 1], help="1: fit the last layer; 0: predict with it")
    p.add_argument("-b", "--batch-size", default=500, type=int, help="crystals per batch of the source model")
    p.add_argument("-j", "--workers", default=0, type=int, help="data loading worker processes")
    p.add_argument("--disable-cuda", action="store_true", help="accepted for compatibility; runs on the CPU")
    p.add_argument("-p", "--print-freq", default=10, type=int, help="accepted for compatibility (progress is a bar)")
    p.add_argument("--last-layer", default="last_layer.sav", help="file of the fitted last layer (joblib)")
    p.add_argument("--last-layer-type", default="mlp", choices=LAST_LAYER_TYPES,
                   help="mlp: the original linear MLPRegressor; ridge; rf: random forest; gp: Gaussian process")
    p.add_argument("--results", default="results.csv", help="predictions of --train 0 (CSV)")
    p.add_argument("--test-results", default="test_results.csv",
                   help="the source model's own predictions (CSV), as the original tool wrote")
    p.add_argument("--seed", default=0, type=int, help="random_state of the last layer and the CV folds")
    p.add_argument("--cv-folds", default=5, type=int, help="folds of the cross-validated MAE printed by --train 1")
    p.add_argument("--atom-init", default=None, help="atom_init.json (default CIFPATH/atom_init.json)")
    p.add_argument("--cache-dir", default=None, help="folder to keep crystal graphs across runs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_counts(args)
    # Fail before the long part, and write nothing until everything has succeeded,
    # so that a mistake never costs an earlier result.
    check_output(args.test_results)
    check_output(args.last_layer if args.train == 1 else args.results)
    t0 = time.time()
    paths = [p for p in args.modelpath.split(",") if p]
    if not paths:
        raise InputError("MODELPATH names no model")
    sources = [SourceModel.load(p, require_regression=True) for p in paths]
    record = load_last_layer(args.last_layer, sources) if args.train == 0 else None

    feats = compute_features(sources, args.cifpath, batch_size=args.batch_size, workers=args.workers,
                             atom_init=args.atom_init, cache_dir=args.cache_dir, progress=not args.quiet)
    n = len(feats.ids)
    target = feats.targets if feats.targets is not None else np.full(n, np.nan)
    source_results = pd.DataFrame({"cif_id": feats.ids, "target": target,
                                   "prediction": feats.source_prediction[:, 0]})

    if args.train == 1:
        if feats.targets is None:
            raise InputError(f"{args.cifpath}: --train 1 needs targets in id_prop.csv (cif_id,log10 κ_L)")
        fit = fit_last_layer(feats.crys_fea, feats.targets, args.last_layer_type, args.seed, args.cv_folds)
        save_csv(source_results, args.test_results)
        save_last_layer(args.last_layer, fit, sources, args.last_layer_type, args.seed, n)
        print(f"fit the {args.last_layer_type} last layer on {n} crystals x {feats.crys_fea.shape[1]} crys_fea "
              f"values -> {args.last_layer}")
        print(f"training MAE {fit['train_mae']:.3f} log10 κ_L")
        if fit["cv_mae"] is not None:
            print(f"{args.cv_folds}-fold cross-validated MAE {fit['cv_mae']:.3f} log10 κ_L "
                  f"(predicting the mean: {fit['cv_mae_constant']:.3f}); a factor of "
                  f"{10 ** fit['cv_mae']:.2f} in κ_L")
    else:
        with np.errstate(all="ignore"):
            pred = record["estimator"].predict(feats.crys_fea)
        df = pd.DataFrame({"cif_id": feats.ids, "target": target, "prediction": pred, "kappa": 10.0 ** pred})
        save_csv(source_results, args.test_results)
        save_csv(df, args.results)
        print(f"predicted log10 κ_L of {n} crystals -> {args.results} (kappa column in W m-1 K-1)")
        if feats.targets is not None:
            from sklearn.metrics import mean_absolute_error, r2_score

            mae = mean_absolute_error(feats.targets, pred)
            r2 = r2_score(feats.targets, pred) if n > 1 else float("nan")
            print(f"MAE {mae:.3f} log10 κ_L (a factor of {10 ** mae:.2f} in κ_L), R² {r2:.3f}")
    print(f"source model predictions -> {args.test_results}; {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
