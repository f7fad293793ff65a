"""The Python API in a few lines: fit the last layer on the bundled sample, predict crystals built in the
session (as a Materials Project query would give them), plot κ_L with its 90 % interval.

    python docs/python_api_example.py [--out kappa_intervals.png] [--quick]

``--quick`` fits the ridge last layer on the source model alone (seconds); without it, the recommended
route (about a minute on 2 cores).  Run from the repository's root (the bundled models are found there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="kappa_intervals.png", help="the figure (PNG)")
    p.add_argument("--quick", action="store_true", help="ridge on the source model alone: seconds")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pymatgen.core import Lattice, Structure

    from cgcnn import KappaModel

    options = {"last_layer_type": "ridge", "members": "none"} if args.quick else {}
    model = KappaModel.fit(ROOT / "data" / "sample", source=ROOT / "models" / "source.pth.tar", **options)
    print(f"last layer {model.chosen}: cross-validated MAE {model.cv_mae:.3f} log10 κ_L "
          f"(predicting the mean: {model.cv_mae_constant:.3f}); interval coverage {model.coverage:.0%}")

    # Materials Project-style structures: pymatgen Structures with their ids in .properties
    prototypes = {"rocksalt": ("Fm-3m", [[0, 0, 0], [0.5, 0.5, 0.5]]),
                  "zincblende": ("F-43m", [[0, 0, 0], [0.25, 0.25, 0.25]])}
    crystals = []
    for name, species, kind, a in [("NaCl", ["Na", "Cl"], "rocksalt", 5.64), ("KCl", ["K", "Cl"], "rocksalt", 6.29),
                                   ("MgO", ["Mg", "O"], "rocksalt", 4.21), ("GaAs", ["Ga", "As"], "zincblende", 5.65),
                                   ("ZnS", ["Zn", "S"], "zincblende", 5.41), ("Si", ["Si", "Si"], "zincblende", 5.43)]:
        group, sites = prototypes[kind]
        structure = Structure.from_spacegroup(group, Lattice.cubic(a), species, sites)
        structure.properties["material_id"] = name
        crystals.append(structure)
    table = model.predict(crystals, interval=0.9)
    print(table[["kappa", "kappa_low", "kappa_high", "in_domain"]].to_string(float_format="%.3g"))

    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = range(len(table))
    ax.errorbar(x, table["kappa"], yerr=[table["kappa"] - table["kappa_low"], table["kappa_high"] - table["kappa"]],
                fmt="o", capsize=3)
    ax.set_yscale("log")
    ax.set_xticks(list(x), table.index, rotation=0)
    ax.set_ylabel("κ_L / W m⁻¹ K⁻¹ (300 K)")
    ax.set_title("predicted κ_L with 90 % intervals")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"figure -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
