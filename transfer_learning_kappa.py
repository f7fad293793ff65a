"""Transfer learning of lattice thermal conductivity (κ_L) on crystal graphs.

    python transfer_learning_kappa.py --train 1 models/source.pth.tar data/sample   # fit last_layer.sav
    python transfer_learning_kappa.py --train 0 models/source.pth.tar path/to/new   # predict

The frozen source model (a CGCNN, Xie & Grossman, PRL 120, 145301 (2018)) turns
each crystal into its crystal feature vector ``crys_fea``; a small scikit-learn
regressor, the last layer, is fit on those vectors (Zhu et al., Energy Environ.
Sci. 14, 3559 (2021)).  By default the last layer also sees the inputs of Slack's
formula: structure descriptors and the ``crys_fea`` and predictions of three
lower-order-property models found beside the source model (Ju et al., Phys. Rev.
Materials (2021)), and its type is chosen by cross-validation (``auto``); every
prediction carries a cross-conformal interval and an applicability-domain flag.
``--original`` is the original tool's route: the linear MLP on ``crys_fea`` alone.
Targets and predictions are log10 κ_L with κ_L in W m⁻¹ K⁻¹.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.cli import (add_compat_options, add_graph_options, add_quiet_option, add_seed_option, check_counts,
                       run_main)

LAST_LAYER_TYPES = ("auto", "mlp", "ridge", "rf", "gp")
DESCRIPTOR_SETS = ("none", "structure", "slack")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="transfer_learning_kappa.py",
        description="Fit (--train 1) or apply (--train 0) a last layer on a frozen CGCNN source model's crys_fea "
                    "and physical descriptors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("modelpath", metavar="MODELPATH",
                   help="source model checkpoint (.pth.tar); several, comma-separated, concatenate their crys_fea")
    p.add_argument("cifpath", metavar="CIFPATH",
                   help="data folder: <cif_id>.cif files, id_prop.csv (cif_id,log10 κ_L) and atom_init.json")
    p.add_argument("--train", default=1, type=int, choices=[0, 1], help="1: fit the last layer; 0: predict with it")
    p.add_argument("-b", "--batch-size", default=500, type=int, help="crystals per batch of the source model")
    p.add_argument("-j", "--workers", default=None, type=int,
                   help="graph-building processes (default: all cores; 0: none)")
    add_compat_options(p)
    p.add_argument("--last-layer", default="last_layer.sav", help="file of the fitted last layer")
    p.add_argument("--last-layer-type", default=None, choices=LAST_LAYER_TYPES,
                   help="auto (default): chosen by cross-validation among ridge, gp, rf, mlp; mlp: the original "
                        "linear MLPRegressor; ridge; rf: random forest; gp: additive Gaussian process")
    p.add_argument("--descriptors", default=None, choices=DESCRIPTOR_SETS,
                   help="inputs beside crys_fea: none (the original), structure (5 Slack-formula inputs), slack "
                        "(also the property models' crys_fea and Slack's κ; default)")
    p.add_argument("--property-models", default=None, metavar="PATHS",
                   help="Debye-temperature, bulk- and shear-modulus models, comma-separated (default: "
                        "debye_temperature.pth.tar, bulk_modulus.pth.tar, shear_modulus.pth.tar beside MODELPATH)")
    p.add_argument("--original", action="store_true",
                   help="the original tool's route: --last-layer-type mlp --descriptors none")
    p.add_argument("--interval", default=None, type=float,
                   help="level of the prediction interval (default 0.9 for --train 1; --train 0: the level "
                        "stored at fitting)")
    p.add_argument("--results", default="results.csv", help="predictions of --train 0 (CSV)")
    p.add_argument("--test-results", default="test_results.csv",
                   help="the source model's own predictions (CSV), as the original tool wrote")
    add_seed_option(p, help="random_state of the last layer and the CV folds")
    p.add_argument("--cv-folds", default=5, type=int, help="folds of the cross-validation of --train 1")
    p.add_argument("--trust-pickle", action="store_true",
                   help="accept a bare pickled estimator (the original tool's last_layer.sav); a pickle can run code")
    add_graph_options(p)
    add_quiet_option(p)
    return p


def _settings(args) -> tuple[str, str]:
    """The last-layer type and descriptor level the options ask for."""
    if args.original:
        if args.last_layer_type not in (None, "mlp") or args.descriptors not in (None, "none"):
            raise InputError("--original means --last-layer-type mlp --descriptors none; give one or the other")
        return "mlp", "none"
    return args.last_layer_type or "auto", args.descriptors or "slack"


def _property_paths(args, first_source: str) -> list[Path]:
    from cgcnn.transfer import default_property_models

    if args.property_models:
        return [Path(p) for p in args.property_models.split(",") if p]
    return default_property_models(first_source)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from cgcnn.data import check_log10_kappa
    from cgcnn.files import OutputSet
    from cgcnn.lastlayer import LastLayer, check_level
    from cgcnn.source import SourceModel
    from cgcnn.transfer import compute_features, inputs_record, load_property_models

    args = build_parser().parse_args(argv)
    check_counts(args, non_negative=("workers",))
    if args.cv_folds < 0:
        raise InputError(f"--cv-folds must not be negative, not {args.cv_folds}")
    if args.cv_folds == 1:
        raise InputError("--cv-folds 1 cannot cross-validate; give 2 or more, or 0 for none")
    if args.interval is not None and not 0.5 <= args.interval < 1:
        raise InputError(f"--interval must lie in [0.5, 1), not {args.interval:g}")
    paths = [p for p in args.modelpath.split(",") if p]
    if not paths:
        raise InputError("MODELPATH names no model")
    device = "cpu" if args.disable_cuda else None
    layer = None
    if args.train == 0:
        layer = LastLayer.load(args.last_layer, trust_pickle=args.trust_pickle)
        kind, descriptors = layer.kind, layer.inputs.get("descriptors", "none")
        if args.descriptors and args.descriptors != descriptors:
            raise InputError(f"{args.last_layer}: fit with --descriptors {descriptors}, not {args.descriptors}")
    else:
        kind, descriptors = _settings(args)
    prop_paths = _property_paths(args, paths[0]) if descriptors == "slack" else []
    if args.train == 0 and layer.inputs.get("property_models") and not args.property_models:
        # the models it was fit with, by name, beside the first source model
        prop_paths = [Path(paths[0]).parent / s["name"] for s in layer.inputs["property_models"]]

    folder = Path(args.cifpath)
    inputs = {f"MODELPATH ({Path(p).name})": p for p in paths}
    inputs.update({f"--property-models ({p.name})": p for p in prop_paths})
    inputs["id_prop.csv"] = folder / "id_prop.csv"
    if args.train == 0:
        inputs["--last-layer"] = args.last_layer
        outputs = {"--results": args.results, "--test-results": args.test_results}
    else:
        outputs = {"--last-layer": args.last_layer, "--test-results": args.test_results}
    outs = OutputSet(outputs, inputs=inputs)  # checked before the long part

    t0 = time.time()
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    kwargs = {"device": device} if device else {}
    sources = [SourceModel.load(p, require_regression=True, **kwargs) for p in paths]
    props = load_property_models(prop_paths, device=device) if descriptors == "slack" else None
    feats = compute_features(sources, folder, batch_size=args.batch_size, workers=args.workers,
                             atom_init=args.atom_init, cache_dir=args.cache_dir, progress=not args.quiet,
                             descriptors=descriptors, property_models=props)
    record = inputs_record(sources, feats, descriptors, props)
    n = len(feats.ids)
    target = feats.targets if feats.targets is not None else np.full(n, np.nan)
    source_results = pd.DataFrame({"cif_id": feats.ids, "target": target,
                                   "prediction": feats.source_prediction[:, 0]})

    if args.train == 1:
        if feats.targets is None:
            raise InputError(f"{folder / 'id_prop.csv'}: --train 1 needs targets (cif_id,log10 κ_L rows)")
        check_log10_kappa(feats.targets, folder / "id_prop.csv", feats.ids)
        level = 0.9 if args.interval is None else args.interval
        if n >= 10:
            check_level(level, n, str(folder / "id_prop.csv"))
        log(f"fitting the last layer ({kind}) on {n} crystals x {feats.X.shape[1]} inputs "
            f"(crys_fea {feats.groups[0]}, descriptors {feats.groups[1]})")
        layer = LastLayer.fit(feats.X, feats.targets, kind, args.seed, args.cv_folds, level=level,
                              inputs=record, groups=feats.groups, log=log)
        with outs:
            outs.write_csv(args.test_results, source_results)
            layer.save_to(outs, args.last_layer)
        chosen = f"{layer.kind} (chosen by cross-validation)" if layer.requested == "auto" else layer.kind
        print(f"fit the {chosen} last layer on {n} crystals x {feats.X.shape[1]} inputs "
              f"(descriptors: {descriptors}) -> {args.last_layer}")
        print(f"training MAE {layer.train_mae:.3f} log10 κ_L")
        cv = layer.cv
        if cv.get("mae") is not None:
            print(f"{cv['folds']}-fold x {cv['repeats']} cross-validated MAE {cv['mae']:.3f} log10 κ_L "
                  f"(predicting the mean: {cv['mae_constant']:.3f}); a factor of {10 ** cv['mae']:.2f} in κ_L")
        iv = layer.interval
        if iv.get("cv_coverage") is not None:
            print(f"{iv['level']:.0%} interval (CV+): cross-validated coverage {iv['cv_coverage']:.0%}, "
                  f"mean width {iv['cv_width']:.2f} log10 (a factor of {10 ** (iv['cv_width'] / 2):.1f} either way)")
        elif layer.conformal is None:
            print(f"no prediction interval: {n} crystals are too few (at least 10 are needed)")
    else:
        layer.check_inputs(record)
        pred = layer.predict(feats.X, args.interval)
        df = pd.DataFrame({
            "cif_id": feats.ids, "target": target, "prediction": pred.prediction, "kappa": 10.0 ** pred.prediction,
            "prediction_low": pred.low, "prediction_high": pred.high,
            "kappa_low": 10.0 ** pred.low, "kappa_high": 10.0 ** pred.high,
            "in_domain": pred.in_domain, "domain_distance": pred.distance,
        })
        with outs:
            outs.write_csv(args.test_results, source_results)
            outs.write_csv(args.results, df)
        print(f"predicted log10 κ_L of {n} crystals -> {args.results} (kappa columns in W m-1 K-1)")
        if np.isfinite(pred.low).any():
            print(f"{pred.level:.0%} prediction intervals (CV+); {int((~pred.in_domain).sum())} of {n} crystals "
                  "outside the last layer's applicability domain (in_domain False)")
        if feats.targets is not None:
            from sklearn.metrics import mean_absolute_error, r2_score

            mae = mean_absolute_error(feats.targets, pred.prediction)
            r2 = r2_score(feats.targets, pred.prediction) if n > 1 else float("nan")
            print(f"MAE {mae:.3f} log10 κ_L (a factor of {10 ** mae:.2f} in κ_L), R² {r2:.3f}")
            if np.isfinite(pred.low).any():
                inside = (feats.targets >= pred.low) & (feats.targets <= pred.high)
                print(f"interval coverage {inside.mean():.0%} of {n}")
    log(f"source model predictions -> {args.test_results}; {time.time() - t0:.1f} s")
    return 0


def console() -> int:
    """Entry point of the ``cgcnn-kappa`` console script."""
    return run_main(main)


if __name__ == "__main__":
    sys.exit(run_main(main))
