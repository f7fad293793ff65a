"""Would a stacked calibration use the BTE value better than one more descriptor?  A look at one
``cgcnn.evaluate --bte`` run's held-out predictions (issue 27; a prototype for the tool, not its route).

    python benchmarks/bte_stacking.py PREDICTIONS_CSV [--compounds data/sample/compounds.csv]
                                      [--group-by prototype] [--plain auto]

PREDICTIONS_CSV is the ``predictions.csv`` of ``python -m cgcnn.evaluate ... --group-by prototype --bte FILE``
(one held-out prediction per crystal and method: K-fold).  For the crystals with a BTE value it compares,
by the held-out MAE in log10 κ_L pooled over crystals:

- the plain last layer (``--plain``, default ``auto``) and the tool's ``auto+bte`` (the value as one more
  descriptor of the last layer);
- the raw BTE values, and the raw values shifted by the mean error of the other groups;
- a stacked linear model ``a·plain + b·log10 κ_BTE + c`` (D. H. Wolpert, Neural Networks 5, 241 (1992)), and
  ``a·log10 κ_BTE + c`` alone, each fit by least squares on the other groups' crystals (leave one group out,
  :class:`sklearn.model_selection.LeaveOneGroupOut`) from their held-out plain predictions, so that no
  crystal's own target or group takes part in its prediction.

Crystals without a BTE value keep the plain prediction in the "all crystals" line.  Pooled MAE, not the
mean over folds that ``metrics.md`` gives: the figures of the two differ by a few thousandths.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import LeaveOneGroupOut


def _logo_fit(features: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Leave-one-group-out predictions of a least-squares linear model of ``features`` (n, k)."""
    out = np.empty(len(y))
    for train, test in LeaveOneGroupOut().split(features, y, groups):
        out[test] = LinearRegression().fit(features[train], y[train]).predict(features[test])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictions", help="predictions.csv of cgcnn.evaluate --group-by ... --bte FILE")
    p.add_argument("--compounds", default="data/sample/compounds.csv", help="the table holding the group column")
    p.add_argument("--group-by", default="prototype", help="the group column")
    p.add_argument("--plain", default="auto", help="the plain method of the evaluation")
    args = p.parse_args(argv)
    pred = pd.read_csv(args.predictions, dtype={"cif_id": str})
    if pred.groupby(["cif_id", "method"]).size().max() != 1:
        sys.exit(f"{args.predictions}: one held-out prediction per crystal and method needed (a K-fold run)")
    wide = pred.pivot(index="cif_id", columns="method", values="prediction")
    wide = wide.join(pred.groupby("cif_id")[["target", "log10_kappa_bte"]].first())
    groups = pd.read_csv(args.compounds, dtype=str).set_index("cif_id")[args.group_by]
    wide = wide.join(groups)
    have = wide[wide["log10_kappa_bte"].notna()]
    y, g = have["target"].to_numpy(), have[args.group_by].to_numpy()
    plain, bte = have[args.plain].to_numpy(), have["log10_kappa_bte"].to_numpy()
    shifted = np.empty(len(y))
    for train, test in LeaveOneGroupOut().split(bte, y, g):
        shifted[test] = bte[test] + np.mean(y[train] - bte[train])
    rows = {
        args.plain: plain,
        f"{args.plain}+bte (the tool)": have[f"{args.plain}+bte"].to_numpy(),
        "raw BTE": bte,
        "raw BTE + other groups' mean error": shifted,
        "stacked a·plain + b·BTE + c": _logo_fit(np.c_[plain, bte], y, g),
        "stacked a·BTE + c": _logo_fit(bte[:, None], y, g),
    }
    print(f"{len(have)} of {len(wide)} crystals with a BTE value, {len(set(g))} groups by {args.group_by}; "
          "held-out MAE, log10 κ_L, pooled:")
    print("| method | crystals with a value | all crystals (plain where none) |")
    print("|---|---:|---:|")
    for name, values in rows.items():
        full = wide[args.plain].copy()
        full.loc[have.index] = values
        print(f"| {name} | {mean_absolute_error(y, values):.3f} | {mean_absolute_error(wide['target'], full):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
