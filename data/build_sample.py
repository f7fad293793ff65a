#!/usr/bin/env python
"""Build the ``data/sample`` CGCNN data set from ``data/sample/compounds.csv``.

``compounds.csv`` is the hand-curated source table: one row per compound with a
measured lattice thermal conductivity near 300 K, a literature reference and an
idealised crystal structure (space group, room-temperature experimental lattice
parameters and Wyckoff representative positions).

This script turns that table into the layout the CGCNN data loader expects:

* ``<cif_id>.cif``  one CIF per compound, built with
  ``Structure.from_spacegroup`` and written with ``CifWriter`` (P1 setting);
* ``id_prop.csv``   no header, ``cif_id,log10(kappa)`` in ``compounds.csv`` order;
* ``atom_init.json`` a byte-for-byte copy of ``cgcnn/data/atom_init.json``.

The output is deterministic: running the script twice gives byte-identical files.

Usage (from the repository root; the script imports the installed package,
``pip install -e .``, or runs as ``python -m data.build_sample``)::

    python data/build_sample.py            # writes into data/sample
    python data/build_sample.py --out DIR  # writes into DIR
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.io.cif import CifWriter

try:
    from cgcnn import InputError
    from cgcnn.data import save_id_prop
except ModuleNotFoundError:  # not installed, and not run from the repository's root
    sys.exit("the cgcnn package is not importable: pip install -e . in the repository, "
             "or run python -m data.build_sample from its root")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO_ROOT / "data" / "sample" / "compounds.csv"
DEFAULT_OUT = REPO_ROOT / "data" / "sample"
ATOM_INIT = REPO_ROOT / "cgcnn" / "data" / "atom_init.json"

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
CIF_DECIMALS = 6  # significant decimals kept in the CIF coordinates/cell


def read_compounds(csv_path: Path) -> list[dict[str, str]]:
    """Read ``compounds.csv`` and return its rows as dictionaries (file order)."""
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = [dict(row) for row in csv.DictReader(handle)]
    ids = [row["cif_id"] for row in rows]
    bad = [i for i in ids if not ID_PATTERN.match(i)]
    if bad:
        raise ValueError(f"invalid cif_id(s): {bad}")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"duplicate cif_id(s): {dupes}")
    return rows


def _float_or(value: str, default: float) -> float:
    """Parse ``value`` as float, returning ``default`` when the cell is empty."""
    value = (value or "").strip()
    return float(value) if value else default


def lattice_from_row(row: dict[str, str]) -> Lattice:
    """Return the conventional lattice of a row.

    Empty ``b``/``c`` default to ``a`` and empty angles to 90 degrees, except
    for hexagonal/trigonal space groups (143-194) where an empty ``gamma``
    defaults to 120 degrees (hexagonal axes).
    """
    a = float(row["a"])
    b = _float_or(row.get("b", ""), a)
    c = _float_or(row.get("c", ""), a)
    sg = int(row["spacegroup"])
    default_gamma = 120.0 if 143 <= sg <= 194 else 90.0
    alpha = _float_or(row.get("alpha", ""), 90.0)
    beta = _float_or(row.get("beta", ""), 90.0)
    gamma = _float_or(row.get("gamma", ""), default_gamma)
    return Lattice.from_parameters(a, b, c, alpha, beta, gamma)


def parse_sites(row: dict[str, str]) -> tuple[list[str], list[list[float]]]:
    """Parse the ``species`` and ``coords`` cells (``;``-separated) of a row.

    A coordinate may be a decimal (``0.3819``) or an exact fraction (``1/3``);
    fractions keep symmetry-equivalent sites that land on a cell face (z = 0
    and z = 1) from being generated twice. Raises ``ValueError`` naming the row
    when a coordinate is not a number or the cells do not pair up.
    """
    species = [s.strip() for s in row["species"].split(";")]
    try:
        coords = [[float(Fraction(x)) for x in c.split()] for c in row["coords"].split(";")]
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{row['cif_id']}: coords {row['coords']!r} is not numbers") from None
    if len(species) != len(coords) or any(len(c) != 3 for c in coords):
        raise ValueError(f"{row['cif_id']}: species/coords mismatch")
    return species, coords


def build_structure(row: dict[str, str]) -> Structure:
    """Build the idealised crystal structure of one ``compounds.csv`` row.

    Raises ``ValueError`` when the generated cell does not have the row's
    formula (for example a site given in the wrong Wyckoff setting).
    """
    species, coords = parse_sites(row)
    structure = Structure.from_spacegroup(
        int(row["spacegroup"]), lattice_from_row(row), species, coords
    )
    got = structure.composition.reduced_composition
    if got != Composition(row["formula"]).reduced_composition:
        raise ValueError(f"{row['cif_id']}: the structure built has formula {got.formula}, "
                         f"not {row['formula']}")
    return structure.get_sorted_structure()


def cif_text(structure: Structure) -> str:
    """Return the CIF text of ``structure`` (P1, fixed precision, no timestamp)."""
    writer = CifWriter(structure, significant_figures=CIF_DECIMALS)
    return str(writer)


def log10_kappa(row: dict[str, str]) -> float:
    """Return ``log10(kappa)`` of a row (κ_L in W m⁻¹ K⁻¹; ``id_prop.csv`` keeps six decimals)."""
    kappa = float(row["kappa_300K_W_mK"])
    if kappa <= 0:
        raise ValueError(f"{row['cif_id']}: non-positive kappa {kappa}")
    return float(np.log10(kappa))


def build(csv_path: Path, out_dir: Path, atom_init: Path = ATOM_INIT) -> int:
    """Write the CIF files, ``id_prop.csv`` and ``atom_init.json`` into ``out_dir``.

    Returns the number of compounds written. Raises ``FileNotFoundError`` with a
    clear message when ``atom_init`` does not exist, and ``ValueError`` naming the
    row when a row of ``csv_path`` cannot be built.
    """
    if not atom_init.is_file():
        raise FileNotFoundError(
            f"{atom_init} not found: cgcnn/data/atom_init.json must exist before the "
            "sample data set can be built (it is copied, never generated here)."
        )
    rows = read_compounds(csv_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = []
    for row in rows:
        structure = build_structure(row)
        with open(out_dir / f"{row['cif_id']}.cif", "w", encoding="utf-8", newline="\n") as fh:
            fh.write(cif_text(structure))
        targets.append((row["cif_id"], log10_kappa(row)))
    save_id_prop(out_dir / "id_prop.csv", targets, decimals=6)
    target = out_dir / "atom_init.json"
    if target.resolve() != atom_init.resolve():
        shutil.copyfile(atom_init, target)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV,
                        help="source table (default: data/sample/compounds.csv)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output directory (default: data/sample)")
    parser.add_argument("--atom-init", type=Path, default=ATOM_INIT,
                        help="atom_init.json to copy (default: cgcnn/data/atom_init.json)")
    args = parser.parse_args(argv)
    try:
        n = build(args.csv, args.out, args.atom_init)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad row of the source table
        print(f"error: {args.csv}: {exc}", file=sys.stderr)
        return 1
    except InputError as exc:  # an output that cannot be written
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} structures, id_prop.csv and atom_init.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
