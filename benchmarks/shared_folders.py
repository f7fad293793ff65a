"""Make CGCNN folders of the team's evaluation sets in ../shared.

    python benchmarks/shared_folders.py OUT

writes

- ``OUT/half_heusler_143``: the 143 half-Heuslers of ../shared/data/half_heusler_143
  (computed κ_L at 300 K, ParAIsite's "Dataset2"), ``id_prop.csv`` of log10 κ;
- ``OUT/aflow_agl_test``: the 333 AFLOW-AGL crystals of the bundled source model's
  held-out test split (``cgcnn.train.split_indices(3330, seed=0)``), log10 κ.

CIFs are symbolic links; ``atom_init.json`` is the project's ``cgcnn/data/atom_init.json``
(the table the bundled models store).  These folders feed ``python -m cgcnn.evaluate``
for the figures of README.md and models/README.md.  The script imports the installed
package (``pip install -e .``; or ``python -m benchmarks.shared_folders OUT`` from the
repository's root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cgcnn.data import write_data_folder
from cgcnn.train import split_indices

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
COLUMN = "kappa_300K_W_mK"  # κ_L at 300 K, W m⁻¹ K⁻¹; folders hold its log10


def main() -> None:
    """Write the two evaluation folders into OUT (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write the CGCNN folders into")
    args = p.parse_args()
    if not SHARED.is_dir():
        sys.exit("../shared/data is absent")
    out = Path(args.out)
    hh, agl = SHARED / "half_heusler_143", SHARED / "aflow_agl_300K"
    write_data_folder(hh / "kappa.csv", hh / "cif", out / "half_heusler_143", column=COLUMN)
    table = pd.read_csv(agl / "kappa.csv")
    _, _, test = split_indices(len(table), seed=0)
    write_data_folder(table, agl / "cif", out / "aflow_agl_test", column=COLUMN, rows=test)
    print(f"wrote {out / 'half_heusler_143'} and {out / 'aflow_agl_test'} ({len(test)} crystals)")


if __name__ == "__main__":
    main()
