"""Make CGCNN folders of the team's evaluation sets in ../shared.

    python benchmarks/shared_folders.py OUT

writes

- ``OUT/half_heusler_143``: the 143 half-Heuslers of ../shared/data/half_heusler_143
  (computed κ_L at 300 K, ParAIsite's "Dataset2"), ``id_prop.csv`` of log10 κ;
- ``OUT/aflow_agl_test``: the 333 AFLOW-AGL crystals of the bundled source model's
  held-out test split (``cgcnn.train.split_indices(3330, seed=0)``), log10 κ.

CIFs are symbolic links; no ``atom_init.json`` is written, so a project checkpoint
uses the atom features it stores.  These folders feed ``python -m cgcnn.evaluate``
for the figures of README.md and models/README.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from cgcnn.train import split_indices  # noqa: E402


def write_folder(out: Path, cif_dir: Path, ids, kappas) -> Path:
    """CIF links and ``id_prop.csv`` (``cif_id,log10 κ`` with 6 decimals) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for cif_id, kappa in zip(ids, kappas):
        link = out / f"{cif_id}.cif"
        if not link.exists():
            os.symlink(os.path.relpath(cif_dir / f"{cif_id}.cif", out), link)
        lines.append(f"{cif_id},{math.log10(kappa):.6f}\n")
    (out / "id_prop.csv").write_text("".join(lines))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write the CGCNN folders into")
    args = p.parse_args()
    if not SHARED.is_dir():
        sys.exit("../shared/data is absent")
    out = Path(args.out)
    hh = pd.read_csv(SHARED / "half_heusler_143" / "kappa.csv")
    write_folder(out / "half_heusler_143", SHARED / "half_heusler_143" / "cif", hh["id"], hh["kappa_300K_W_mK"])
    agl = pd.read_csv(SHARED / "aflow_agl_300K" / "kappa.csv")
    _, _, test = split_indices(len(agl), seed=0)
    test_rows = agl.iloc[test]
    write_folder(out / "aflow_agl_test", SHARED / "aflow_agl_300K" / "cif", test_rows["id"],
                 test_rows["kappa_300K_W_mK"])
    print(f"wrote {out / 'half_heusler_143'} ({len(hh)} crystals) and {out / 'aflow_agl_test'} ({len(test)})")


if __name__ == "__main__":
    main()
