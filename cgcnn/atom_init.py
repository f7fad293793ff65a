"""Regenerate CGCNN's 92-bit one-hot atom features from the mendeleev library.

Reference: T. Xie and J. C. Grossman, "Crystal Graph Convolutional Neural
Networks for an Accurate and Interpretable Prediction of Material
Properties", Phys. Rev. Lett. 120, 145301 (2018), Supplementary Table
(atom feature vector).  The upstream ``atom_init.json`` distributed with the
CGCNN code is *not* copied here; this module rebuilds the table from the
element data shipped with ``mendeleev`` (no network access is needed).

Recipe (segments in order, 92 bits in total, elements Z = 1..100)
------------------------------------------------------------------
====================  =====  ==========================================
segment               width  encoding
====================  =====  ==========================================
group                 19     category = group number 1..18; La-Yb and
                             Ac-No (lanthanides/actinides except Lu, Lr)
                             -> category 0; Lu, Lr -> group 3
period                7      period 1..7
electronegativity     10     Pauling EN, 10 bins over 0.5..4.0
covalent_radius       10     covalent radius (pm), 10 bins over 25..250
valence_electrons     12     number of valence electrons 1..12
first_ionization      10     ln(IE1 / eV), 10 bins over 1.3..3.3
electron_affinity     10     EA (eV), 10 bins over -3..3.7
block                 4      s, p, d, f
atomic_volume         10     ln(V / cm^3 mol^-1), 10 bins over 1.5..4.3
====================  =====  ==========================================

Binning: 10 equal intervals,
``np.digitize(x, np.linspace(lo, hi, 11), right=True) - 1`` clipped to 0..9
(the clip only matters for ``x == lo``).  A missing property leaves its
segment all zero.  A value *outside* ``[lo, hi]`` is treated as missing
rather than clipped into an end bin: in mendeleev such values are the
gas-phase (STP) densities of the gaseous elements, an estimated density for
Fr, and large negative electron-affinity estimates for He and Ar, and the
upstream table leaves exactly those entries empty where it has them
(He/Ar EA, Rn/Fr volume).  Clipping would instead put every gas next to Cs
in the largest-volume bin.

mendeleev attribute choices
---------------------------
* group: ``group_id`` (with the La/Ac/Lu/Lr convention above, which differs
  from mendeleev's own assignment of La/Ac to group 3).
* period: ``period``.
* block: ``block``, except La-Yb and Ac-No are ``f`` and Lu, Lr are ``d``
  (consistent with the group convention; mendeleev calls La/Ac ``d`` and
  Lu/Lr ``f``).
* electronegativity: ``en_pauling``.
* covalent radius: ``covalent_radius_pyykko`` (single-bond radii of Pyykkoe
  & Atsumi; matches upstream for all 100 elements, whereas
  ``covalent_radius_cordero`` differs for 58 and ``covalent_radius_bragg``
  for 80).
* valence electrons: ``ElectronicConfiguration.nvalence(block, period)``
  (mendeleev's ``Element.nvalence()``) with the block convention above;
  for the f-block category only the outer ``ns`` electrons are counted
  (= 2 for all of La-Yb, Ac-Fm), which is what the upstream table encodes.
  mendeleev's default would count the f electrons too (3..16).
* first ionization energy: ``ionizationenergies`` table, ``ion_charge == 0``
  (same as ``Element.ionenergies[1]``).
* electron affinity: ``electron_affinity``.
* atomic volume: ``atomic_weight / density`` (mendeleev's
  ``Element.atomic_volume``).

Measured agreement with upstream atom_init.json (elements 1..100)
-----------------------------------------------------------------
Number of elements whose segment differs from the upstream file:

====================  ==========  ===================================
segment               # differ    elements
====================  ==========  ===================================
group                 0
period                0
electronegativity     0
covalent_radius       0
valence_electrons     1           Pd (mendeleev 4d10 -> 10; upstream 12)
first_ionization      0
electron_affinity     1           Ac (EA = 0.35 eV sits on a bin edge)
block                 0
atomic_volume         19          H He N O F Ne Cl Ar Kr Xe (gases:
                                  mendeleev only has gas-phase densities,
                                  upstream uses condensed-phase volumes;
                                  here the segment is left empty),
                                  Br Np (different data), Pm At Pu Bk Cf
                                  Es Fm (mendeleev has an estimate,
                                  upstream leaves the segment empty)
====================  ==========  ===================================

79 of the 100 elements match upstream in all 92 bits; 9175 of the
9200 bits agree (99.7 %).  For comparison, clipping out-of-range values
into the end bins (instead of treating them as missing) gives 3
electron-affinity and 21 atomic-volume disagreements (77 identical
elements).  Re-measure with::

    python -m cgcnn.atom_init --compare path/to/upstream/atom_init.json > /dev/null

Usage::

    python -m cgcnn.atom_init                 # JSON to stdout
    python -m cgcnn.atom_init --out cgcnn/data/atom_init.json
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys

import numpy as np

from cgcnn import InputError
from cgcnn.cli import run_main
from cgcnn.outputs import check_outputs, missing_reason, save_text

#: (segment name, width) in feature order; widths sum to 92.
SEGMENTS: tuple[tuple[str, int], ...] = (
    ("group", 19),
    ("period", 7),
    ("electronegativity", 10),
    ("covalent_radius", 10),
    ("valence_electrons", 12),
    ("first_ionization", 10),
    ("electron_affinity", 10),
    ("block", 4),
    ("atomic_volume", 10),
)

N_FEATURES = sum(w for _, w in SEGMENTS)  # 92
Z_MAX = 100

# (lo, hi) of the 10 equal bins of the continuous properties.
_BIN_RANGES = {
    "electronegativity": (0.5, 4.0),
    "covalent_radius": (25.0, 250.0),
    "first_ionization": (1.3, 3.3),  # ln(eV)
    "electron_affinity": (-3.0, 3.7),  # eV
    "atomic_volume": (1.5, 4.3),  # ln(cm^3/mol)
}

_BLOCKS = "spdf"


def segment_bounds() -> list[tuple[str, int, int]]:
    """Return ``[(name, start, stop), ...]`` slices of the 92-bit vector."""
    out = []
    start = 0
    for name, width in SEGMENTS:
        out.append((name, start, start + width))
        start += width
    return out


def _is_missing(x) -> bool:
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def _bin(x, lo: float, hi: float) -> int | None:
    """Index 0..9 of ``x`` among 10 equal bins over [lo, hi]; None if missing
    or outside the range."""
    if _is_missing(x):
        return None
    x = float(x)
    if not (lo <= x <= hi):
        return None
    idx = int(np.digitize(x, np.linspace(lo, hi, 11), right=True)) - 1
    return int(np.clip(idx, 0, 9))


def _log(x) -> float | None:
    if _is_missing(x) or float(x) <= 0:
        return None
    return math.log(float(x))


def _is_f_series(z: int) -> bool:
    """La-Yb and Ac-No: the lanthanides/actinides other than Lu and Lr."""
    return 57 <= z <= 70 or 89 <= z <= 102


def _categories(z, group_id, period, block, en, cov, ec_str, ie1, ea, weight, density):
    """Map raw properties of one element to category indices per segment."""
    from mendeleev.econf import ElectronicConfiguration

    period = int(period)
    if _is_f_series(z):
        group_cat = 0
        blk = "f"
    elif z in (71, 103):  # Lu, Lr
        group_cat = 3
        blk = "d"
    else:
        group_cat = None if _is_missing(group_id) else int(group_id)
        blk = block

    ec = ElectronicConfiguration(ec_str)
    if blk == "f":
        # Only the outer ns electrons (6s2 / 7s2) count for the f series.
        nval = ec.conf.get((period, "s"), 0)
    else:
        nval = ec.nvalence(blk, period)
    val_cat = nval - 1 if 1 <= nval <= 12 else None

    volume = None
    if not _is_missing(weight) and not _is_missing(density) and float(density) > 0:
        volume = float(weight) / float(density)

    r = _BIN_RANGES
    return {
        "group": group_cat,
        "period": period - 1,
        "electronegativity": _bin(en, *r["electronegativity"]),
        "covalent_radius": _bin(cov, *r["covalent_radius"]),
        "valence_electrons": val_cat,
        "first_ionization": _bin(_log(ie1), *r["first_ionization"]),
        "electron_affinity": _bin(ea, *r["electron_affinity"]),
        "block": _BLOCKS.index(blk) if blk in _BLOCKS else None,
        "atomic_volume": _bin(_log(volume), *r["atomic_volume"]),
    }


def _encode(cats: dict[str, int | None]) -> list[int]:
    vec: list[int] = []
    for name, width in SEGMENTS:
        seg = [0] * width
        idx = cats.get(name)
        if idx is not None and 0 <= idx < width:
            seg[idx] = 1
        vec.extend(seg)
    assert len(vec) == N_FEATURES
    return vec


def build_atom_init() -> dict[str, list[int]]:
    """Build ``{"1": [92 ints], ..., "100": [...]}`` from mendeleev data.

    Raises
    ------
    InputError
        If mendeleev is not installed (the message says ``pip install mendeleev``).
    """
    try:
        from mendeleev.fetch import fetch_table
    except ImportError:
        raise InputError(
            "cgcnn.atom_init needs the mendeleev element-data library to "
            "regenerate atom_init.json, and it is not installed: pip install mendeleev"
        ) from None

    elements = fetch_table("elements").set_index("atomic_number")
    ies = fetch_table("ionizationenergies")
    ie1 = ies[ies["ion_charge"] == 0].set_index("atomic_number")["ionization_energy"]

    table: dict[str, list[int]] = {}
    for z in range(1, Z_MAX + 1):
        row = elements.loc[z]
        cats = _categories(
            z,
            group_id=row["group_id"],
            period=row["period"],
            block=row["block"],
            en=row["en_pauling"],
            cov=row["covalent_radius_pyykko"],
            ec_str=row["electronic_configuration"],
            ie1=ie1.get(z),
            ea=row["electron_affinity"],
            weight=row["atomic_weight"],
            density=row["density"],
        )
        table[str(z)] = _encode(cats)
    return table


def dumps(table: dict[str, list[int]]) -> str:
    """Deterministic compact JSON, keys in atomic-number order, trailing newline."""
    ordered = {str(k): table[str(k)] for k in sorted(int(k) for k in table)}
    return json.dumps(ordered, indent=None, separators=(",", ":")) + "\n"


def _compare(table: dict[str, list[int]], other: dict[str, list[int]]) -> dict[str, list[str]]:
    """Per segment, the atomic numbers (as str) whose bits differ."""
    diffs: dict[str, list[str]] = {}
    for name, a, b in segment_bounds():
        diffs[name] = [k for k in table if k in other and table[k][a:b] != list(other[k][a:b])]
    return diffs


def _read_reference(path: str) -> dict:
    """The ``--compare`` table.  Raises :class:`InputError` (one line naming the file) if it is
    missing or not an ``atom_init.json``-like JSON object."""
    try:
        with open(path, encoding="utf-8") as fh:
            ref = json.load(fh)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP):
            raise InputError(f"{path}: {missing_reason(path)}") from None
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(ref, dict) or not all(isinstance(v, list) for v in ref.values()):
        raise InputError(f"{path}: expected a JSON object of atomic number -> feature list")
    return ref


def main(argv: list[str] | None = None) -> int:
    """``python -m cgcnn.atom_init [--out PATH] [--compare REF]``: the table as JSON, to stdout or
    written atomically to ``--out``; with ``--compare``, per-segment disagreement on stderr."""
    parser = argparse.ArgumentParser(
        description="Regenerate CGCNN's 92-bit atom_init.json from mendeleev data."
    )
    parser.add_argument("--out", default=None, help="output JSON path (default: stdout)")
    parser.add_argument(
        "--compare",
        default=None,
        help="optional reference atom_init.json; print per-segment disagreement to stderr",
    )
    args = parser.parse_args(argv)
    if args.out is not None:
        check_outputs({"--out": args.out}, inputs={"--compare": args.compare})
    ref = _read_reference(args.compare) if args.compare else None

    table = build_atom_init()
    text = dumps(table)

    if ref is not None:
        diffs = _compare(table, ref)
        for name, zs in diffs.items():
            print(f"{name:20s} {len(zs):3d}  {' '.join(zs)}", file=sys.stderr)
        n_same = sum(1 for k in table if k in ref and table[k] == list(ref[k]))
        print(f"identical elements: {n_same}/{len(table)}", file=sys.stderr)

    if args.out is None:
        sys.stdout.write(text)
    else:
        save_text(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
