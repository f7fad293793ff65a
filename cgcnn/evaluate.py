"""How good is a transfer? ``python -m cgcnn.evaluate MODELPATH CIFPATH [options]``.

Repeated cross-validation of the transfer of T. Zhu et al., Energy Environ. Sci.
14, 3559 (2021) and of this project's recommended route against baselines, on one
data folder of log10 κ_L targets (measured or computed).  Protocols:

- by default that of ParAIsite (L. Klochko, M. d'Aquin, A. Togo, L. Chaput,
  arXiv:2411.18259): 9 random 80/20 splits with seeds 0-8
  (``perm = np.random.RandomState(seed).permutation(n)``, the first ``int(0.8 n)``
  rows train, the rest test);
- ``--kfold K``: a shuffled K-fold;
- ``--group-by COLUMN``: a grouped K-fold (``sklearn.model_selection.GroupKFold``) on a
  column of a table of the crystals (by default ``CIFPATH/compounds.csv``, e.g. the
  structure ``prototype``), so that every test crystal's group is absent from its
  training part: how well a fit carries to chemistries or structures it has not seen;
  ``--group-by structure_type`` needs no table: it groups by
  :func:`cgcnn.transfer.descriptors.structure_type` (space group, atoms in the primitive cell,
  Wyckoff letters) computed from the CIFs.

The last-layer inputs (:func:`cgcnn.transfer.compute_features`: ``crys_fea`` of the
source models and, by ``--descriptors``, physical descriptors) are computed once; each
split then fits every method on its training part only (:meth:`cgcnn.transfer.lastlayer.LastLayer.fit`,
whose ``auto`` type choice and CV+ interval use that part alone) and predicts its test part.
Methods:

- ``constant``: the median of the training part's targets;
- ``source``: the first source model's own prediction (no transfer);
- ``original``: the original tool's last layer (linear MLP) on the first source model's
  ``crys_fea`` alone;
- ``auto``, ``gp``, ``ensemble``, ``ridge``, ``rf``, ``mlp``: last layers on all the inputs;
- ``finetune`` (``--finetune EPOCHS``): the first source network itself trained
  further on the training part (embedding frozen, Adam, early stopping on 10 %
  of the training part), ParAIsite's staged fine-tuning; where, on those 10 %, it does
  worse than the ``gp`` last layer on the frozen inputs fit on the same 90 %, that last
  layer's prediction is used instead (the number of such splits is reported), so that
  fine-tuning never loses to the features it starts from on its own validation data;
- ``auto+bte`` ... (``--bte FILE``, or a ``log10_kappa_bte`` column of ``CIFPATH/compounds.csv``): each
  last layer once more with the phonon-BTE value as one more descriptor, fit on the training crystals
  that have a value; test crystals without one get the plain method's prediction
  (:mod:`cgcnn.evaluation.bte`), and ``metrics.md`` adds every method's MAE on the crystals with a
  value beside the raw BTE values' own.

Writes ``metrics.md`` (MAE, RMSE, R² and Spearman ρ of log10 κ_L, MAPE of κ_L; mean ±
standard deviation over splits; the held-out coverage and mean width of each method's
interval and its MAE in and out of the applicability domain), ``predictions.csv`` and
``parity.png`` (:mod:`cgcnn.evaluation.report`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn import InputError
from cgcnn.cli import add_graph_options, add_quiet_option, check_counts, check_options, document_ranges, run_main
from cgcnn.evaluation import (  # noqa: F401  (re-exported: the protocol was defined here)
    BASELINES,
    Split,
    best_method,
    format_table,
    make_group_splits,
    make_splits,
    metrics,
    parity_figure,
    protocol_text,
    read_groups,
    split_metrics,
    structure_types,
    summarize,
    write_report,
)
from cgcnn.options import BTE_MODES

__all__ = ["BASELINES", "METHODS", "Split", "make_splits", "make_group_splits", "read_groups", "structure_types",
           "metrics", "split_metrics", "summarize", "evaluate", "best_method", "format_table", "parity_figure", "main"]

#: Last-layer methods evaluated by default (on all inputs), after ``constant``, ``source`` and ``original``.
METHODS = ("auto", "gp", "ensemble", "ridge", "rf", "mlp")
#: The files written into ``--out-dir`` (:func:`cgcnn.evaluation.write_report`).
REPORT_FILES = ("metrics.md", "predictions.csv", "parity.png")


def _finetune(source, folder, splits: Sequence[Split], epochs: int, patience: int, batch_size: int,
              lr: float, atom_init, cache_dir, workers, log) -> dict:
    """The first source network fine-tuned on each split's training part.

    Returns split index → (test-part predictions, rows fit on, validation rows, validation MAE).
    """
    import torch

    from cgcnn.model import FitSettings, finetune

    data = source.dataset(folder, atom_init=atom_init, cache_dir=cache_dir)
    out = {}
    for split in splits:
        t0 = time.time()
        train = np.random.RandomState(split.seed).permutation(split.train)
        n_val = max(1, round(0.1 * len(train)))
        val, fit = train[:n_val], train[n_val:]
        settings = FitSettings(epochs=epochs, lr=lr, optim="Adam", batch_size=batch_size, patience=patience,
                               seed=split.seed, workers=workers or 0, print_freq=0)
        tuned = finetune(source, data, fit, val, settings, freeze_embedding=True)
        _, pred = tuned.run(torch.utils.data.Subset(data, np.sort(split.test)), batch_size=batch_size,
                            workers=0, progress=False)
        _, pred_val = tuned.run(torch.utils.data.Subset(data, val), batch_size=batch_size, workers=0,
                                progress=False)
        out[split.index] = (pred, fit, val, float(np.mean(np.abs(pred_val - data.targets[val]))))
        log(f"fine-tuned split {split.index + 1}/{len(splits)} in {time.time() - t0:.1f} s")
    return out


def evaluate(sources, folder, *, splits: int = 9, train_fraction: float = 0.8, kfold: int | None = None,
             groups: Sequence | str | None = None, group_folds: int = 5, group_name: str = "group",
             last_layers: Sequence[str] = METHODS, descriptors: str = "none", property_models: dict | None = None,
             level: float = 0.9, finetune: int = 0, finetune_patience: int = 10, finetune_batch_size: int = 64,
             finetune_lr: float = 0.003, batch_size: int = 500, workers: int | None = 0, atom_init=None,
             cache_dir=None, progress: bool = True, bte=None,
             bte_mode: str = "stack") -> tuple[pd.DataFrame, pd.DataFrame]:
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
    groups : sequence or "structure_type", optional
        A group per crystal: grouped K-fold (:func:`make_group_splits` with ``group_folds``)
        instead; ``group_name`` names it in the protocol line.  ``"structure_type"``: each
        crystal's :func:`cgcnn.transfer.descriptors.structure_type`, from the structures read
        for its graphs.
    last_layers : sequence of str
        Types of :class:`cgcnn.transfer.lastlayer.LastLayer` fit on all the inputs; split ``i``
        fits them with ``seed=i``.  ``original`` (the MLP on the first source's
        ``crys_fea``) is always evaluated.
    descriptors, property_models
        As :func:`cgcnn.transfer.compute_features`.
    level : float
        Level of the CV+ prediction intervals.
    finetune : int
        Epochs of the ``finetune`` row (0: no such row).
    finetune_patience, finetune_batch_size, finetune_lr
        Its early-stopping patience, batch size and Adam learning rate.
    batch_size, workers, atom_init, cache_dir, progress
        As :func:`cgcnn.transfer.compute_features`; ``progress`` also prints a line
        per stage on stderr.
    bte : cgcnn.transfer.BTEValues, optional
        BTE values: adds a method ``K+bte`` for every ``K`` of ``last_layers``
        (:func:`cgcnn.evaluation.bte.bte_rows`), a ``log10_kappa_bte`` column to ``predictions``
        and ``table.attrs["bte"]`` (``source``, ``n_with``, ``without``, ``subset``:
        :func:`cgcnn.evaluation.bte.bte_subset`, ``mode``).
    bte_mode : str
        How ``K+bte`` uses the value (:data:`cgcnn.transfer.BTE_MODES`, as ``--train 1 --bte-mode``).

    Returns
    -------
    table : DataFrame
        :func:`summarize` of the predictions; ``table.attrs`` holds ``folder`` (its name),
        ``n``, ``protocol``, ``sources`` (file names), ``descriptors`` and ``level``.
    predictions : DataFrame
        Columns ``split, seed, cif_id, method, target, prediction, low, high, in_domain``
        (log10 κ_L; ``low``/``high`` empty for the baselines): every method's prediction of
        every test crystal of every split, test crystals in ``id_prop.csv`` order.

    Raises
    ------
    InputError
        No source, an unknown last layer, a folder without targets or with targets that
        are not log10 κ_L, a protocol that does not fit the number of crystals, and the
        faults of :func:`cgcnn.transfer.compute_features`.
    """
    from cgcnn.data import check_log10_kappa, read_id_prop
    from cgcnn.model import SourceModel
    from cgcnn.transfer import LAST_LAYER_TYPES, LastLayer, compute_features, quietly

    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    sources = [s if isinstance(s, SourceModel) else SourceModel.load(s, require_regression=True) for s in sources]
    if not sources:
        raise InputError("no source model given")
    for kind in last_layers:
        if kind not in LAST_LAYER_TYPES:
            raise InputError(f"unknown last layer type {kind!r}; choose from {', '.join(LAST_LAYER_TYPES)}")
    if finetune < 0:
        raise InputError(f"--finetune must be a number of epochs >= 0, not {finetune}")
    id_prop = Path(folder) / "id_prop.csv"
    ids, targets = read_id_prop(folder)  # targets checked before any feature is computed
    if targets is None:
        raise InputError(f"{id_prop}: evaluation needs targets (cif_id,log10 κ_L rows)")
    check_log10_kappa(targets, id_prop, ids)
    if isinstance(groups, str) and groups != "structure_type":
        raise InputError(f"groups {groups!r}: give a group per crystal, or 'structure_type'")
    if not isinstance(groups, str):  # the protocol checked before the long part too
        parts = make_group_splits(groups, group_folds) if groups is not None else make_splits(
            len(ids), splits, train_fraction, kfold)
    t0 = time.time()
    feats = compute_features(sources, folder, batch_size=batch_size, workers=workers, atom_init=atom_init,
                             cache_dir=cache_dir, progress=progress, descriptors=descriptors,
                             property_models=property_models, structure_types=isinstance(groups, str))
    n = len(feats.ids)
    if isinstance(groups, str):
        groups = np.asarray(feats.structure_types, dtype=object)
        parts = make_group_splits(groups, group_folds)
    X, y = feats.X, feats.targets
    X_original = feats.crys_fea[:, :sources[0].crys_fea_len]  # float32, as the original tool
    log(f"{n} crystals x {X.shape[1]} inputs (crys_fea {feats.groups[0]}, descriptors {feats.groups[1]}) in "
        f"{time.time() - t0:.1f} s; {len(parts)} splits")
    ids = np.asarray(feats.ids, dtype=object)
    if bte is not None:
        from cgcnn.evaluation import bte_rows, bte_subset
        from cgcnn.transfer import reason_counts

        values, reasons = bte.lookup(feats.ids)
        log(f"{int(np.isfinite(values).sum())} of {n} crystals have a BTE value ({bte.name}); without one "
            f"({reason_counts(reasons)}) the +bte methods use the plain method's prediction")

    tuned = {}
    if finetune:
        tuned = _finetune(sources[0], folder, parts, finetune, finetune_patience, finetune_batch_size,
                          finetune_lr, atom_init, cache_dir, workers, log)

    frames = []
    fallbacks = 0
    for split in parts:
        test = np.sort(split.test)
        nan = np.full(len(test), np.nan)
        rows = {"constant": (np.full(len(test), np.median(y[split.train])), nan, nan, np.ones(len(test), bool)),
                "source": (feats.source_prediction[test, 0], nan, nan, np.ones(len(test), bool))}
        fits = [("original", "mlp", X_original, None)] + [(k, k, X, feats.groups) for k in last_layers]
        layers = {}
        for method, kind, inputs, groups_ in fits:
            with quietly():
                layer = LastLayer.fit(inputs[split.train], y[split.train], kind, seed=split.index, level=level,
                                      groups=groups_, interval_cv=False)
                p = layer.predict(inputs[test])
            rows[method] = (p.prediction, p.low, p.high, p.in_domain)
            layers[method] = layer
        if bte is not None:
            rows.update(bte_rows(X, y, feats.ids, bte, feats.groups, split,
                                 {k: layers[k] for k in last_layers}, bte_mode, level))
        if finetune:
            # fine-tuning must not lose to the frozen features it starts from: on the inner
            # validation rows it chose its epoch on, compare it with the default last layer
            # fit on the same rows, and fall back to that last layer when it loses
            pred, fit_rows, val_rows, val_mae = tuned[split.index]
            with quietly():
                frozen = LastLayer.fit(X[fit_rows], y[fit_rows], "gp", seed=split.index, cv_folds=0,
                                       groups=feats.groups)
                frozen_mae = float(np.mean(np.abs(frozen.predict(X[val_rows]).prediction - y[val_rows])))
                if frozen_mae < val_mae:
                    pred = frozen.predict(X[test]).prediction
                    fallbacks += 1
            rows["finetune"] = (pred, nan, nan, np.ones(len(test), bool))
        for method, (pred, low, high, inside) in rows.items():
            frames.append(pd.DataFrame({"split": split.index, "seed": split.seed, "cif_id": ids[test],
                                        "method": method, "target": y[test], "prediction": np.asarray(pred, float),
                                        "low": low, "high": high, "in_domain": inside,
                                        **({"log10_kappa_bte": values[test]} if bte is not None else {})}))
        log(f"split {split.index + 1}/{len(parts)} done, {time.time() - t0:.1f} s")
    predictions = pd.concat(frames, ignore_index=True)
    table = summarize(predictions)
    protocol = protocol_text(n, len(parts), groups=groups, group_name=group_name, kfold=kfold, splits=splits,
                             train_fraction=train_fraction)
    if finetune:
        protocol += (f"; finetune: fell back to the frozen-feature gp last layer in {fallbacks} of {len(parts)} "
                     "splits, where it lost on the inner validation rows")
    table.attrs.update(folder=Path(folder).resolve().name, n=n, protocol=protocol,
                       sources=[s.path.name for s in sources], descriptors=descriptors, level=level)
    if bte is not None:
        table.attrs["bte"] = {"source": bte.name, "mode": bte_mode, "n_with": int(np.isfinite(values).sum()),
                              "without": reason_counts(reasons), "subset": bte_subset(predictions)}
    return table, predictions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cgcnn.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("modelpath", metavar="MODELPATH",
                   help="source model checkpoint (.pth.tar); several, comma-separated, concatenate their crys_fea")
    p.add_argument("cifpath", metavar="CIFPATH",
                   help="data folder: <cif_id>.cif files (or .vasp, POSCAR*, .json, frames of .extxyz), id_prop.csv "
                        "(cif_id,log10 κ_L) and atom_init.json")
    p.add_argument("--out-dir", default="evaluation", help="folder for metrics.md, predictions.csv, parity.png")
    p.add_argument("--splits", default=9, type=int, help="random splits, seeds 0..N-1 (ParAIsite protocol)")
    p.add_argument("--train-fraction", default=0.8, type=float, help="training part of each random split")
    p.add_argument("--kfold", default=None, type=int, metavar="K", help="K-fold cross-validation instead")
    p.add_argument("--group-by", default=None, metavar="COLUMN",
                   help="grouped cross-validation on this column of --groups-file (e.g. prototype); "
                        "structure_type: by space group, primitive-cell size and Wyckoff letters, from the CIFs")
    p.add_argument("--groups-file", default=None, metavar="CSV",
                   help="table with cif_id and the --group-by column (default CIFPATH/compounds.csv)")
    p.add_argument("--group-folds", default=5, type=int, help="folds of the grouped cross-validation")
    p.add_argument("--last-layers", default=",".join(METHODS),
                   help="comma-separated last layers fit on all inputs (of auto, gp, ensemble, ridge, rf, mlp)")
    p.add_argument("--descriptors", default=None, choices=("none", "structure", "slack"),
                   help="inputs beside crys_fea, as in transfer_learning_kappa.py (default slack, or structure "
                        "when no property models are found beside MODELPATH)")
    p.add_argument("--property-models", default=None, metavar="PATHS",
                   help="property models of --descriptors slack (default: beside MODELPATH)")
    p.add_argument("--members", default="auto", choices=("auto", "none"),
                   help="auto: the ensemble members beside MODELPATH (seed*/ folders), as --train 1 fits them; "
                        "none: MODELPATH alone")
    p.add_argument("--interval", default=0.9, type=float, help="level of the prediction intervals")
    p.add_argument("--bte", default=None, metavar="FILE",
                   help="log10_kappa_bte values (a refined.csv of python -m cgcnn.refine; default: the "
                        "log10_kappa_bte column of CIFPATH/compounds.csv if it has one): also evaluate each last "
                        "layer with it (methods K+bte), as --train 1 --bte fits it")
    p.add_argument("--bte-mode", default=BTE_MODES[0], choices=BTE_MODES,
                   help="how K+bte uses the value, as in transfer_learning_kappa.py: stack, a linear calibration "
                        "of the plain prediction and the value; descriptor, one more last-layer descriptor")
    p.add_argument("--finetune", default=0, type=int, metavar="EPOCHS",
                   help="also fine-tune the first source network for at most EPOCHS epochs per split (0: no)")
    p.add_argument("--finetune-patience", default=10, type=int, help="early-stopping patience of --finetune")
    p.add_argument("--finetune-batch-size", default=64, type=int, help="batch size of --finetune")
    p.add_argument("--finetune-lr", default=0.003, type=float, help="Adam learning rate of --finetune")
    p.add_argument("-b", "--batch-size", default=500, type=int, help="crystals per batch of the source model")
    p.add_argument("-j", "--workers", default=None, type=int, help="graph-building processes (default: all cores)")
    add_graph_options(p)
    add_quiet_option(p)
    return document_ranges(p)


def main(argv: list[str] | None = None) -> int:
    from cgcnn.crystals import data_folder_inputs
    from cgcnn.model import SourceModel
    from cgcnn.outputs import check_output_dir, check_outputs
    from cgcnn.transfer import default_property_models, folder_bte, load_property_models, with_members

    args = build_parser().parse_args(argv)
    check_options(args)  # every numeric option in its range, before any work
    check_counts(args, at_least_one=("batch_size", "finetune_batch_size", "group_folds"))
    if not 0.5 <= args.interval < 1:
        raise InputError(f"--interval must lie in [0.5, 1), not {args.interval:g}")
    paths = [p for p in args.modelpath.split(",") if p]
    if not paths:
        raise InputError("MODELPATH names no model")
    last_layers = [k.strip() for k in args.last_layers.split(",") if k.strip()]
    unknown = [k for k in last_layers if k not in METHODS]
    if unknown:
        raise InputError(f"unknown last layer type {unknown[0]!r}; choose from {', '.join(METHODS)}")
    out_dir = check_output_dir(args.out_dir, REPORT_FILES)  # fail before the long part
    # fine-tuning trains on the CPU (cgcnn.model.fit keeps its tensors there)
    device = "cpu" if args.finetune else None
    props = None
    descriptors = args.descriptors or "slack"
    prop_paths = ([Path(p) for p in args.property_models.split(",") if p] if args.property_models
                  else default_property_models(paths[0]))
    if args.descriptors is None and not args.property_models and not all(p.is_file() for p in prop_paths):
        descriptors = "structure"  # said in the table's header line
    if descriptors == "slack" and args.members == "auto" and len(paths) == 1 and not args.property_models:
        paths, prop_paths = with_members(paths, prop_paths)  # as transfer_learning_kappa.py --train 1
    inputs = {f"MODELPATH ({p})": p for p in paths}
    inputs.update({f"property model ({p})": p for p in (prop_paths if descriptors == "slack" else [])})
    inputs.update(data_folder_inputs(args.cifpath, args.atom_init))  # id_prop.csv, atom_init.json, every CIF
    if args.group_by:
        inputs["--groups-file"] = args.groups_file or Path(args.cifpath) / "compounds.csv"
    bte, _ = folder_bte(args.bte, args.cifpath)  # read before the long part
    if args.bte:
        inputs["--bte"] = args.bte
    if out_dir.is_dir():  # no report file may be an input (a link to one): refused before the long part
        check_outputs({name: out_dir / name for name in REPORT_FILES}, inputs=inputs)
    sources = [SourceModel.load(p, require_regression=True, device=device) for p in paths]
    if descriptors == "slack":
        props = load_property_models(prop_paths)
    groups = None
    if args.group_by:
        from cgcnn.data import read_id_prop

        ids, _ = read_id_prop(args.cifpath)
        if args.group_by == "structure_type" and not args.groups_file:
            groups = "structure_type"  # from the structures read for the graphs
        else:
            table_path = args.groups_file or Path(args.cifpath) / "compounds.csv"
            groups = read_groups(table_path, args.group_by, ids)
    table, predictions = evaluate(
        sources, args.cifpath, splits=args.splits, train_fraction=args.train_fraction, kfold=args.kfold,
        groups=groups, group_folds=args.group_folds, group_name=args.group_by or "group",
        last_layers=last_layers, descriptors=descriptors, property_models=props, level=args.interval,
        finetune=args.finetune, finetune_patience=args.finetune_patience,
        finetune_batch_size=args.finetune_batch_size, finetune_lr=args.finetune_lr, batch_size=args.batch_size,
        workers=args.workers, atom_init=args.atom_init, cache_dir=args.cache_dir, progress=not args.quiet, bte=bte,
        bte_mode=args.bte_mode)
    written = write_report(table, predictions, args.out_dir, inputs=inputs)
    print(format_table(table), end="")
    print(f"wrote {written['metrics']}, {written['predictions']}, {written['parity']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
