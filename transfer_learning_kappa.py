"""Transfer learning of lattice thermal conductivity (κ_L) on crystal graphs.

    python transfer_learning_kappa.py --train 1 models/source.pth.tar data/sample   # fit last_layer.sav
    python transfer_learning_kappa.py --train 0 models/source.pth.tar path/to/new   # predict
    python transfer_learning_kappa.py --train 0 models/source.pth.tar db.tar.gz --on-error skip --resume

``--train 0`` screens its input chunk by chunk (:mod:`cgcnn.screening.run`): a folder or a
``.tar``/``.tar.gz``/``.zip`` archive of structure files (CIF, POSCAR, pymatgen JSON, extxyz frames),
in bounded memory, its rows written to shards as they are done and gathered in input order at the
end; ``--on-error skip``
leaves unreadable crystals to ``skipped.csv``; ``--resume`` continues an interrupted
run; ``--dask local|ADDRESS`` spreads the chunks over a Dask cluster.

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
from cgcnn.cli import (
    add_compat_options,
    add_graph_options,
    add_quiet_option,
    add_screen_options,
    add_seed_option,
    check_counts,
    check_options,
    document_ranges,
    run_main,
)
from cgcnn.options import BTE_MODES

LAST_LAYER_TYPES = ("auto", "mlp", "ridge", "rf", "gp", "ensemble")  # as cgcnn.transfer.estimators
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
                   help="data folder: <cif_id>.cif files (or .vasp, POSCAR*, .json, frames of .extxyz), id_prop.csv "
                        "(cif_id,log10 κ_L) and atom_init.json; --train 0 also takes a .tar, .tar.gz or .zip archive "
                        "of such files")
    p.add_argument("--train", default=1, type=int, choices=[0, 1], help="1: fit the last layer; 0: predict with it")
    p.add_argument("-b", "--batch-size", default=500, type=int, help="crystals per batch of the source model")
    p.add_argument("-j", "--workers", default=None, type=int,
                   help="worker processes: graphs and descriptors and, with --train 0 on a CPU, the networks "
                        "(default: all cores; 0: none). The last layer's fits of --train 1 use all cores")
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
    p.add_argument("--members", default="auto", choices=("auto", "none"),
                   help="--train 1 with the default property models: auto fits an ensemble of the source model and "
                        "the members found beside it (seed*/ folders holding the same model and property models: "
                        "the bundled models/seed1, models/seed2), one last layer each, predictions averaged; "
                        "none: the source model alone. --train 0 uses the members the last layer was fit with")
    p.add_argument("--original", action="store_true",
                   help="the original tool's route: --last-layer-type mlp --descriptors none")
    p.add_argument("--interval", default=None, type=float,
                   help="level of the prediction interval (default 0.9 for --train 1; --train 0: the level "
                        "stored at fitting)")
    p.add_argument("--bte", default=None, metavar="FILE",
                   help="log10_kappa_bte of the crystals (a refined.csv of python -m cgcnn.refine; default: the "
                        "log10_kappa_bte column of CIFPATH/compounds.csv if it has one): --train 1 also fits a "
                        "BTE model (--bte-mode) on the crystals that have a value; --train 0 predicts those with "
                        "it, the others with the plain last layer (route column)")
    p.add_argument("--bte-mode", default=BTE_MODES[0], choices=BTE_MODES,
                   help="--train 1 --bte: stack, a linear calibration a*plain + b*log10_kappa_bte + c fit on the "
                        "plain last layer's out-of-fold predictions; descriptor, the last layer with the value as "
                        "one more descriptor")
    p.add_argument("--refine", action="store_true",
                   help="--train 0, then κ_L from phonons (python -m cgcnn.refine, its default settings, the refine "
                        "extra) for the crystals flagged out of domain and those of --refine-ids, into --refined; "
                        "with a last layer fit with --bte, the input is screened again with those values: their "
                        "calibrated value and interval (route bte) beside the transfer's (prediction_plain)")
    p.add_argument("--refine-ids", default=None, metavar="FILE",
                   help="--refine also these cif_id values (one a line, or a CSV with a cif_id column)")
    p.add_argument("--refined", default=None, metavar="PATH",
                   help="refined.csv of --refine (default: refined.csv beside --results)")
    p.add_argument("--results", default="results.csv", help="predictions of --train 0 (CSV)")
    p.add_argument("--test-results", default="test_results.csv",
                   help="the source model's own predictions (CSV), as the original tool wrote")
    add_seed_option(p, help="random_state of the last layer and the CV folds")
    p.add_argument("--cv-folds", default=5, type=int, help="folds of the cross-validation of --train 1")
    p.add_argument("--trust-pickle", action="store_true",
                   help="accept a bare pickled estimator (the original tool's last_layer.sav); a pickle can run code")
    add_graph_options(p)
    add_quiet_option(p)
    add_screen_options(p, output="--results", title="screening (--train 0)")
    return document_ranges(p)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_options(args)  # every numeric option in its range (--cv-folds not 1), before any work
    from cgcnn.transfer import LastLayer

    check_counts(args, non_negative=("workers",))
    from cgcnn.api import fit_route, model_paths, predict_route

    model_paths(args.modelpath)  # names a model
    device = "cpu" if args.disable_cuda else None
    if args.train == 0:
        layer = LastLayer.load(args.last_layer, trust_pickle=args.trust_pickle)
        route = predict_route(args.modelpath, layer, args.property_models)
        if args.descriptors and args.descriptors != route.descriptors:
            raise InputError(f"{args.last_layer}: fit with --descriptors {route.descriptors}, not {args.descriptors}")
        return _screen(args, route, layer, device)
    route = fit_route(args.modelpath, args.last_layer_type, args.descriptors, args.property_models, args.members,
                      args.original)
    kind, descriptors = route.kind, route.descriptors
    import pandas as pd

    from cgcnn.outputs import OutputSet
    from cgcnn.transfer import compute_features, inputs_record

    for option in ("resume", "dask", "chunk_size", "refine", "refine_ids", "refined"):
        if getattr(args, option):
            raise InputError(f"--{option.replace('_', '-')} applies to --train 0 (screening) only")
    if args.on_error != "stop":
        raise InputError("--on-error skip applies to --train 0 (screening) only; --train 1 needs every crystal")

    from cgcnn.crystals import data_folder_inputs
    from cgcnn.transfer import folder_bte

    folder = Path(args.cifpath)
    _check_targets(folder, args)  # before any feature is computed
    bte, _ = folder_bte(args.bte, folder)
    inputs = route.model_files()
    inputs.update(data_folder_inputs(folder, args.atom_init))  # id_prop.csv, atom_init.json, every CIF
    if args.bte:
        inputs["--bte"] = args.bte
    outputs = {"--last-layer": args.last_layer, "--test-results": args.test_results}
    outs = OutputSet(outputs, inputs=inputs)  # checked before the long part

    t0 = time.time()
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    sources, props = route.load_models(device)
    feats = compute_features(sources, folder, batch_size=args.batch_size, workers=args.workers,
                             atom_init=args.atom_init, cache_dir=args.cache_dir, progress=not args.quiet,
                             descriptors=descriptors, property_models=props)
    record = inputs_record(sources, feats, descriptors, props)
    n = len(feats.ids)
    target = feats.targets if feats.targets is not None else np.full(n, np.nan)
    source_results = pd.DataFrame({"cif_id": feats.ids, "target": target,
                                   "prediction": feats.source_prediction[:, 0]})

    if args.train == 1:
        level = 0.9 if args.interval is None else args.interval
        log(f"fitting the last layer ({kind}) on {n} crystals x {feats.X.shape[1]} inputs "
            f"(crys_fea {feats.groups[0]}, descriptors {feats.groups[1]})")
        layer = LastLayer.fit(feats.X, feats.targets, kind, args.seed, args.cv_folds, level=level,
                              inputs=record, groups=feats.groups, log=log)
        if bte is not None:
            from cgcnn.transfer import fit_bte

            log(f"fitting the BTE model ({args.bte_mode}) on the crystals with a value in {bte.name}")
            fit_bte(layer, feats.X, feats.targets, feats.ids, bte, feats.groups, kind=kind, mode=args.bte_mode,
                    seed=args.seed, cv_folds=args.cv_folds, level=level, log=log)
        with outs:
            outs.write_csv(args.test_results, source_results)
            layer.save_to(outs, args.last_layer)
        _print_fit(layer, args, n, feats.X.shape[1], descriptors, level, route.note)
        if layer.bte is not None:
            _print_bte_fit(layer, args, n, level)
    log(f"source model predictions -> {args.test_results}; {time.time() - t0:.1f} s")
    return 0


def _print_fit(layer, args, n: int, n_inputs: int, descriptors: str, level: float, decided: str | None) -> None:
    """The summary of ``--train 1``: what was fit and how its type was chosen, its errors, and how its
    interval was calibrated (or that it has none); every line says what ran; ``decided``: the route's note."""
    from cgcnn.transfer import conformal_folds

    cv, iv = layer.cv, layer.interval
    no_cv = None if cv.get("folds") else (
        "--cv-folds 0" if args.cv_folds == 0 else f"--cv-folds {args.cv_folds} is more than the {n} crystals")
    chosen = layer.kind
    if layer.requested == "auto":
        chosen += " (chosen by cross-validation)" if no_cv is None else " (auto's default: no cross-validation ran)"
    print(f"fit the {chosen} last layer on {n} crystals x {n_inputs} inputs "
          f"(descriptors: {descriptors}) -> {args.last_layer}")
    if decided:  # what the route decided for the user (cgcnn.api.fit_route)
        print(f"note: {decided}")
    note = ""
    if layer.kind == "gp" and layer.train_mae < 0.01:
        note = (" (a Gaussian process passes through its training data: judge it by the cross-validated MAE)"
                if no_cv is None else " (a Gaussian process passes through its training data; without "
                "cross-validation nothing here measures its error on other crystals)")
    print(f"training MAE {layer.train_mae:.3f} log10 κ_L{note}")
    if cv.get("mae") is not None:
        print(f"{cv['folds']}-fold x {cv['repeats']} cross-validated MAE {cv['mae']:.3f} log10 κ_L "
              f"(predicting the mean: {cv['mae_constant']:.3f}); a factor of {10 ** cv['mae']:.2f} in κ_L")
    elif no_cv is not None:
        print(f"no cross-validation ({no_cv}): no error measured on held-out crystals")
    if iv.get("cv_coverage") is not None:
        print(f"{iv['level']:.0%} interval (CV+): cross-validated coverage {iv['cv_coverage']:.0%}, "
              f"mean width {iv['cv_width']:.2f} log10 (a factor of {10 ** (iv['cv_width'] / 2):.1f} either way)")
    elif layer.conformal is not None:
        folds = conformal_folds(args.cv_folds, n)
        how = (f"{folds} folds, the fewest it takes" if args.cv_folds < 2 else
               f"{folds} folds, one crystal each" if args.cv_folds > n else f"{folds} folds")
        why = (f"no cross-validation ({no_cv})" if no_cv is not None else
               f"the cross-validation's training parts are too few crystals for a {level:.0%} interval")
        print(f"{level:.0%} interval (CV+ with {how}); its coverage is not measured: {why}")
    else:
        print(f"no prediction interval: {n} crystals are too few for a {level:.0%} interval "
              f"(CV+ needs at least 10 and more than {1 / (1 - level):.0f})")


def _print_bte_fit(layer, args, n: int, level: float) -> None:
    """The lines ``--train 1`` adds for the BTE model: on which crystals, which not and why, its errors."""
    fit = layer.bte
    sub = fit["layer"]
    if fit.get("mode") == "stack":
        a, b, c = fit["coefficients"]
        how = (f"the stacked calibration {a:.3f}*plain + {b:.3f}*log10_kappa_bte {c:+.3f} (ridge on the plain "
               "last layer's out-of-fold predictions) is fit on them")
    else:
        how = f"the {sub.kind} last layer with log10_kappa_bte as one more descriptor is fit on them"
    print(f"BTE values ({fit['source']['name']}, column {fit['source']['column']}): {fit['n_with']} of {n} "
          f"crystals have a value; {how}, the plain last layer above on all {n}")
    if fit["n_without"]:
        print(f"without a BTE value ({fit['without']}): {fit['n_without']} crystals, predicted by the plain last "
              "layer (nothing imputed)")
    cv = sub.cv
    if cv.get("mae") is not None:
        print(f"with BTE: {cv['folds']}-fold x {cv['repeats']} cross-validated MAE {cv['mae']:.3f} log10 κ_L on "
              f"the {fit['n_with']} crystals (predicting the mean: {cv['mae_constant']:.3f})")
    else:
        print(f"with BTE: no cross-validation on {fit['n_with']} crystals; training MAE {sub.train_mae:.3f}")
    iv = sub.interval
    if iv.get("cv_coverage") is not None:
        print(f"with BTE: {iv['level']:.0%} interval (CV+): cross-validated coverage {iv['cv_coverage']:.0%}, "
              f"mean width {iv['cv_width']:.2f} log10")
    elif sub.conformal is None:
        print(f"with BTE: no prediction interval ({fit['n_with']} crystals are too few for {level:.0%})")


def _check_targets(folder: Path, args) -> None:
    """``--train 1``: refuse, before any model is loaded or feature computed, a data folder
    without targets, with fewer than 2, with targets that are not log10 κ_L
    (:func:`cgcnn.crystals.check_log10_kappa`), or too few for the ``--interval`` asked for."""
    from cgcnn.crystals import check_log10_kappa, read_id_prop
    from cgcnn.transfer import check_level

    id_prop = folder / "id_prop.csv"
    ids, targets = read_id_prop(folder)
    if targets is None:
        raise InputError(f"{id_prop}: --train 1 needs targets (cif_id,log10 κ_L rows)")
    check_log10_kappa(targets, id_prop, ids)
    if len(ids) < 2:
        raise InputError(f"{id_prop}: the last layer needs at least 2 crystals with targets, got {len(ids)}")
    if args.interval is not None:
        check_level(args.interval, len(ids), str(id_prop))


def _screen_settings(args):
    from cgcnn.screening import ScreenSettings

    return ScreenSettings(batch_size=args.batch_size, chunk_size=args.chunk_size, on_error=args.on_error,
                          resume=args.resume, dask=args.dask, workers=args.workers, level=args.interval,
                          progress=not args.quiet, cache_dir=args.cache_dir)


def _screen(args, route, layer, device) -> int:
    """``--train 0``: screen CIFPATH chunk by chunk (:func:`cgcnn.screen.screen`) with the models of ``route``
    (:func:`cgcnn.api.predict_route`) and print the summary."""
    from cgcnn.crystals import check_log10_kappa, data_folder_inputs, open_input
    from cgcnn.data import single_threaded
    from cgcnn.outputs import OutputSet
    from cgcnn.screening import Screener, atom_tables, dask_log, screen
    from cgcnn.transfer import check_bte_use, folder_bte

    check_counts(args, at_least_one=("batch_size", "chunk_size"))
    settings = _screen_settings(args)
    settings.check()
    data = open_input(args.cifpath)
    if data.targets is not None:  # compared with the predictions: they must be log10 κ_L too
        check_log10_kappa(data.targets, data.path / "id_prop.csv", data.ids)
    bte, explicit = folder_bte(args.bte, data.path if data.kind == "folder" else None)
    note = check_bte_use(layer, bte, explicit, data.ids)
    if note:
        print(f"note: {note}", file=sys.stderr)
    if layer.bte is None:
        bte = None  # a compounds.csv column that this last layer does not use
    results = Path(args.results)
    skipped = results.with_name("skipped.csv") if args.on_error == "skip" else None
    descriptors = route.descriptors
    inputs = route.model_files()
    inputs["--last-layer"] = args.last_layer
    if args.bte:
        inputs["--bte"] = args.bte
    if data.kind == "folder":
        inputs.update(data_folder_inputs(data.path, args.atom_init))  # id_prop.csv, atom_init.json, every CIF
    else:
        inputs.update({"CIFPATH": data.path, "--atom-init": args.atom_init})
    out_paths = {"--results": results, "--test-results": args.test_results, "skipped.csv": skipped,
                 "Dask log": dask_log(results) if args.dask else None}
    outs = OutputSet(out_paths, inputs=inputs)  # checked before the long part

    refined = _refine_setup(args, results, inputs) if args.refine or args.refine_ids else None

    t0 = time.time()
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    sources, props = route.load_models(device)
    models = sources + (list(props.values()) if props else [])
    tables, table_sources = atom_tables(models, data, args.atom_init)
    screener = Screener(sources, props, descriptors, layer, tables, table_sources, settings, bte=bte)
    layer.check_inputs(screener.record())

    def one_pass(outs):
        # the graphs and the networks run in the pool's processes (-j), the last layer here: one thread each
        with single_threaded():
            summary = screen(screener, data, outs, results, Path(args.test_results), skipped,
                             Path(args.last_layer), trust_pickle=args.trust_pickle, device=device, log=log)
        _print_screen(summary, args, layer, skipped)
        return summary

    summary = one_pass(outs)
    if refined is not None:
        new = _refine(args, results, refined)
        if new is not None and layer.bte is not None:
            screener.bte = new if bte is None else bte.updated(new)
            check_bte_use(layer, screener.bte, True, data.ids)
            print(f"screening again with the BTE values of {refined}:")
            summary = one_pass(OutputSet(out_paths, inputs={**inputs, "--refined": refined}))
        elif new is not None:
            print(f"note: {args.last_layer} has no BTE model: {refined} holds the raw BTE values; fit a last layer "
                  "with --train 1 --bte FILE to calibrate them")
    log(f"source model predictions -> {args.test_results}; {time.time() - t0:.1f} s "
        f"({summary.rate:.1f} crystals/s)")
    return 0


def _print_screen(summary, args, layer, skipped) -> None:
    """The summary lines of one screening pass of ``--train 0``."""
    n = summary.n
    print(f"predicted log10 κ_L of {n} crystals -> {args.results} (kappa columns in W m-1 K-1)")
    if summary.with_interval:
        print(f"{summary.level:.0%} prediction intervals (CV+); {summary.out_of_domain} of {n} crystals "
              "outside the last layer's applicability domain (in_domain False)")
    if layer.bte is not None:
        print(f"routes: {summary.routes.get('bte', 0)} of {n} crystals predicted with their BTE value "
              f"(route bte), {summary.routes.get('plain', 0)} by the plain last layer (route plain; why: "
              "no_bte_reason column)")
    if summary.n_targets:
        print(f"MAE {summary.mae:.3f} log10 κ_L (a factor of {10 ** summary.mae:.2f} in κ_L), R² {summary.r2:.3f}")
        if summary.with_interval:
            print(f"interval coverage {summary.coverage:.0%} of {summary.n_targets}")
    if skipped is not None:
        print(f"skipped {summary.skipped} of {n + summary.skipped} crystals -> {skipped}")


def _refine_setup(args, results: Path, inputs: dict) -> Path:
    """``--refine``: its output checked against the run's inputs and outputs, and the refine extra
    present, before the long part; returns the path of ``refined.csv``."""
    from cgcnn.outputs import check_outputs
    from cgcnn.refine import read_ids, require

    refined = Path(args.refined) if args.refined else results.with_name("refined.csv")
    if args.refine_ids:
        read_ids(args.refine_ids)  # a bad list fails now
    check_outputs({"--refined": refined, "--results": results, "--test-results": args.test_results},
                  inputs=inputs)
    for module in ("phono3py", "sevenn", "ase"):
        require(module)
    return refined


def _refine(args, results: Path, refined: Path):
    """``--refine`` after the screening: κ_L from phonons (:func:`cgcnn.refine.refine`, default settings,
    failures recorded and skipped) of the crystals ``results`` flags out of domain and those of
    ``--refine-ids``, into ``refined``; returns their :class:`cgcnn.transfer.BTEValues`, or None when
    no crystal is named."""
    from cgcnn.refine import BTESettings, read_crystals, read_flagged, read_ids, refine
    from cgcnn.transfer import read_bte

    only = list(dict.fromkeys(read_flagged(str(results)) + (read_ids(args.refine_ids) if args.refine_ids else [])))
    if not only:
        print("refine: no crystal flagged out of the applicability domain or listed; nothing computed")
        return None
    summary = refine(read_crystals(args.cifpath, only), refined, BTESettings(), resume=args.resume,
                     on_error="skip", quiet=args.quiet)
    print(f"refine: {summary.with_value} of {summary.crystals} crystals with a BTE value, {summary.without_value} "
          f"without (reason in {refined}); {summary.seconds:.0f} s")
    return read_bte(refined)

if __name__ == "__main__":
    sys.exit(run_main(main))
