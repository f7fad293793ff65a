"""Does the BTE value help the transfer? The recommended route with and without ``log10_kappa_bte`` as one
more last-layer descriptor, on the crystals of a data folder that have a BTE value (issue 27, part 2).

    python benchmarks/bte_descriptor.py [FOLDER] [REFINED_CSV] [--model PATH] [--last-layer auto]
                                        [--group-by prototype] [--folds 5] [--splits 9]

Defaults: ``data/sample``, ``data/sample_bte/refined.csv`` (``python -m cgcnn.refine``), the bundled
``models/source.pth.tar`` with its property models and ensemble members (the recommended route of
``transfer_learning_kappa.py --train 1``), last layer ``auto``.  The BTE value is appended to each
member's descriptors (so a ``gp`` kernel sees it among them).  Crystals without a BTE value (refused as
dynamically unstable, failed, or not computed yet) are listed and left out of both variants, so the two
are compared on the same crystals; nothing is imputed.  Prints, for prototype-grouped K-fold (the
``--group-by`` column of ``FOLDER/compounds.csv``) and for the random 80/20 splits of ParAIsite, the
held-out MAE (log10 κ_L, mean ± standard deviation over splits) without and with the BTE descriptor, and
the raw BTE values' MAE against the measured values on the same crystals.  Not a test.  The tool's own
evaluation is ``python -m cgcnn.evaluate MODELPATH FOLDER --bte REFINED_CSV``: on every crystal, those
without a value predicted by the plain last layer (:mod:`cgcnn.evaluation.bte`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cgcnn.evaluation import make_group_splits, make_splits, read_groups
from cgcnn.model import SourceModel
from cgcnn.transfer import (
    Features,
    LastLayer,
    compute_features,
    default_property_models,
    load_property_models,
    quietly,
    with_members,
)


def with_bte(feats: Features, bte: np.ndarray) -> Features:
    """``feats`` with the BTE column appended to each ensemble member's descriptors."""
    k = feats.members
    blocks = np.split(feats.descriptors, k, axis=1)
    desc = np.concatenate([c for b in blocks for c in (b, bte[:, None])], axis=1)
    n_desc = feats.descriptors.shape[1] // k
    n_crys = feats.crys_fea.shape[1] // k
    names, out = list(feats.names), []
    for m in range(k):  # names follow Features.X: member m's crys_fea, its descriptors, then the BTE column
        start = m * (n_crys + n_desc)
        out += names[start:start + n_crys + n_desc] + ["log10 kappa_bte" + ("" if m == 0 else f"@{m}")]
    return Features(feats.ids, feats.targets, feats.crys_fea, feats.source_prediction, desc, out,
                    feats.atom_init, feats.members)


def held_out(X, y, groups, splits, kind: str) -> list[float]:
    """The held-out MAE of each split."""
    maes = []
    for split in splits:
        with quietly():
            layer = LastLayer.fit(X[split.train], y[split.train], kind, seed=split.index, groups=groups,
                                  interval_cv=False)
            pred = layer.predict(X[split.test]).prediction
        maes.append(float(np.mean(np.abs(pred - y[split.test]))))
    return maes


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default="data/sample")
    p.add_argument("refined", nargs="?", default="data/sample_bte/refined.csv")
    p.add_argument("--model", default="models/source.pth.tar")
    p.add_argument("--last-layer", default="auto")
    p.add_argument("--group-by", default="prototype")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--splits", type=int, default=9)
    args = p.parse_args(argv)
    t0 = time.time()
    paths, prop_paths = with_members([args.model], default_property_models(args.model))
    sources = [SourceModel.load(q, require_regression=True) for q in paths]
    props = load_property_models(prop_paths)
    feats = compute_features(sources, args.folder, descriptors="slack", property_models=props, workers=0,
                             progress=False)
    refined = pd.read_csv(args.refined, keep_default_na=False, na_values=[""])
    value = dict(zip(refined["cif_id"], refined["log10_kappa_bte"]))
    reason = dict(zip(refined["cif_id"], refined["reason"].fillna("")))
    bte = np.array([value.get(i, np.nan) for i in feats.ids], dtype=float)
    keep = np.isfinite(bte)
    missing = [i for i, ok in zip(feats.ids, keep) if not ok]
    print(f"{keep.sum()} of {len(keep)} crystals with a BTE value; left out of both variants: "
          + (", ".join(f"{i} ({reason[i] or 'no value'})" if i in reason else f"{i} (not computed)"
                       for i in missing) or "none"))
    y = feats.targets[keep]
    variants = {"without BTE": feats, "with BTE": with_bte(feats, bte)}
    X = {name: f.X[keep] for name, f in variants.items()}
    groups = read_groups(Path(args.folder) / "compounds.csv", args.group_by, feats.ids)[keep]
    protocols = {f"grouped by {args.group_by} ({len(set(groups))} groups, {min(args.folds, len(set(groups)))} "
                 f"folds)": make_group_splits(groups, args.folds),
                 f"{args.splits} random 80/20 splits": make_splits(int(keep.sum()), args.splits)}
    raw = np.abs(bte[keep] - y)
    print(f"raw BTE log10 MAE against measured: {raw.mean():.3f} (mean signed error "
          f"{np.mean(bte[keep] - y):+.3f}), {keep.sum()} crystals")
    for name, splits in protocols.items():
        for variant, f in variants.items():
            maes = held_out(X[variant], y, f.groups, splits, args.last_layer)
            print(f"{name}: {args.last_layer} {variant}: held-out MAE {np.mean(maes):.3f} ± "
                  f"{np.std(maes, ddof=1):.3f}")
    print(f"{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
