"""The BTE values of ``python -m cgcnn.refine`` against measured κ_L: log10 errors and wall time per crystal.

    python benchmarks/refine_sample.py [REFINED_CSV] [DATA_FOLDER]

Defaults: ``data/sample_bte/refined.csv`` (the committed run) and ``data/sample`` (its ``id_prop.csv``
holds the measured log10 κ_L).  Prints one line per crystal, then the count with a value, without one
(reasons), the log10 MAE and mean signed error (BTE − measured) over those with a value, and the median
and mean wall time per crystal (s).  Needs only the core install.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd


def main(argv: list[str]) -> int:
    refined = argv[0] if argv else "data/sample_bte/refined.csv"
    folder = argv[1] if len(argv) > 1 else "data/sample"
    rows = pd.read_csv(refined, keep_default_na=False, na_values=[""])
    measured = pd.read_csv(f"{folder}/id_prop.csv", header=None, names=["cif_id", "log10_measured"])
    table = rows.merge(measured, on="cif_id", how="left")
    table["error"] = table["log10_kappa_bte"] - table["log10_measured"]
    for r in table.itertuples():
        value = f"{r.kappa_bte:9.3g} W/m-K  error {r.error:+.3f}" if r.kappa_bte == r.kappa_bte else r.reason
        print(f"{r.cif_id:10s} measured {10 ** r.log10_measured:8.3g}  BTE {value}  ({r.seconds:.0f} s, "
              f"{r.supercell})")
    ok = table[table["kappa_bte"].notna()]
    print(f"{len(table)} crystals: {len(ok)} with a BTE value, {len(table) - len(ok)} without")
    if len(ok):
        print(f"log10 MAE {np.mean(np.abs(ok['error'])):.3f}, mean signed error {np.mean(ok['error']):+.3f} "
              f"(BTE - measured, {len(ok)} crystals)")
    seconds = table["seconds"].dropna()
    if len(seconds):
        print(f"wall time per crystal: median {seconds.median():.0f} s, mean {seconds.mean():.0f} s, "
              f"total {seconds.sum() / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
