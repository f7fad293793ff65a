"""Make CGCNN folders of the team's evaluation sets in ../shared.

    python benchmarks/shared_folders.py OUT

writes

- ``OUT/half_heusler_143``: the 143 half-Heuslers of ../shared/data/half_heusler_143
  (computed κ_L at 300 K, ParAIsite's "Dataset2"), ``id_prop.csv`` of log10 κ;
- ``OUT/aflow_agl_test``: the 333 AFLOW-AGL crystals of the bundled source model's
  held-out test split (``cgcnn.train.split_indices(3330, seed=0)``), log10 κ.

CIFs are symbolic links; ``atom_init.json`` is the project's ``cgcnn/atom_init.json``
(the table the bundled models store).  These folders feed ``python -m cgcnn.evaluate``
for the figures of README.md and models/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

sys.path.insert(0, str(ROOT / "models"))
from cgcnn.train import split_indices  # noqa: E402
from train_source import build_folder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="folder to write the CGCNN folders into")
    args = p.parse_args()
    if not SHARED.is_dir():
        sys.exit("../shared/data is absent")
    out = Path(args.out)
    build_folder(SHARED / "half_heusler_143", out / "half_heusler_143")
    n_agl = len(pd.read_csv(SHARED / "aflow_agl_300K" / "kappa.csv"))
    _, _, test = split_indices(n_agl, seed=0)
    build_folder(SHARED / "aflow_agl_300K", out / "aflow_agl_test", rows=test)
    print(f"wrote {out / 'half_heusler_143'} and {out / 'aflow_agl_test'} ({len(test)} crystals)")


if __name__ == "__main__":
    main()
