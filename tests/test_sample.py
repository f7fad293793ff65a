"""Tests for the measured-kappa sample data set in ``data/sample``.

They check that the CIFs parse, match their formulas, have no unphysically
short contacts, have the density implied by independent lattice parameters,
that the kappa values and references are sane, and that
``data/build_sample.py`` reproduces the folder byte for byte.
"""

import csv
import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.molecule_structure_comparator import CovalentRadius
from pymatgen.core import Composition, Structure

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
ATOM_INIT = REPO / "cgcnn" / "data" / "atom_init.json"
# Issue 4 asks for at least 60 compounds, each with a citation; see
# data/sample/README.md for what was left out and why.
MIN_COMPOUNDS = 60
AVOGADRO = 6.02214076e23

# formula units per conventional cell of each prototype (independent of pymatgen)
Z_PER_CELL = {
    "diamond": 8, "zincblende": 4, "rocksalt": 4, "wurtzite": 2, "fluorite": 4,
    "antifluorite": 4, "corundum": 6, "tetradymite": 3, "CsCl": 1, "perovskite": 1,
    "chalcopyrite": 4, "alpha-quartz": 3, "calcite": 6,
}


def _rows():
    with open(SAMPLE / "compounds.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


ROWS = _rows()
IDS = [r["cif_id"] for r in ROWS]


def _load(cif_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(SAMPLE / f"{cif_id}.cif")


def _cell_volume(row):
    """Cell volume in A^3 from the lattice parameters, without pymatgen."""
    a = float(row["a"])
    b = float(row["b"] or a)
    c = float(row["c"] or a)
    sg = int(row["spacegroup"])
    if 143 <= sg <= 194:  # hexagonal axes
        return math.sqrt(3) / 2 * a * a * c
    if sg >= 195:
        return a ** 3
    return a * b * c  # tetragonal (chalcopyrite) and orthorhombic


def test_enough_compounds_and_unique_ids():
    assert len(ROWS) >= MIN_COMPOUNDS
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_row_metadata(row):
    k = float(row["kappa_300K_W_mK"])
    assert 0.05 <= k <= 3000
    assert row["reference"].strip()
    # every value was compared with a text during curation, and the row says where
    assert row["source_check"].startswith("checked: ") and row["source_check"][9:].strip()
    assert row["kappa_kind"] in {"lattice", "total"}
    assert 250 <= float(row["T_K"]) <= 350
    assert row["prototype"] in Z_PER_CELL


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_structure(row):
    s = _load(row["cif_id"])
    # composition
    assert s.composition.reduced_composition == Composition(row["formula"]).reduced_composition
    # no atoms closer than 0.7 x sum of covalent radii
    dm = s.distance_matrix
    for i in range(len(s)):
        for j in range(i + 1, len(s)):
            ri = CovalentRadius.radius[s[i].specie.symbol]
            rj = CovalentRadius.radius[s[j].specie.symbol]
            assert dm[i, j] >= 0.7 * (ri + rj), (row["cif_id"], i, j, dm[i, j])
    # density vs independent Z * M / V
    z = Z_PER_CELL[row["prototype"]]
    mass = float(Composition(row["formula"]).weight) * z / AVOGADRO  # g
    rho = mass / (_cell_volume(row) * 1e-24)
    assert s.density == pytest.approx(rho, rel=1e-3)


def test_id_prop_matches_cifs():
    with open(SAMPLE / "id_prop.csv", newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    ids = [line[0] for line in lines]
    assert ids == IDS
    cifs = sorted(p.stem for p in SAMPLE.glob("*.cif"))
    assert cifs == sorted(IDS)
    by_id = {r["cif_id"]: float(r["kappa_300K_W_mK"]) for r in ROWS}
    for cif_id, value in lines:
        assert float(value) == pytest.approx(np.log10(by_id[cif_id]), abs=1e-6)


def test_build_is_reproducible(tmp_path):
    spec = importlib.util.spec_from_file_location("build_sample", REPO / "data" / "build_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    atom_init = ATOM_INIT
    if not atom_init.is_file():
        atom_init = tmp_path / "dummy_atom_init.json"
        atom_init.write_text("{}\n")
    out = tmp_path / "out"
    mod.build(SAMPLE / "compounds.csv", out, atom_init)
    names = [f"{i}.cif" for i in IDS] + ["id_prop.csv"]
    if ATOM_INIT.is_file():
        names.append("atom_init.json")
    for name in names:
        assert (out / name).read_bytes() == (SAMPLE / name).read_bytes(), name


def test_build_refuses_wrong_setting_and_bad_coords(tmp_path):
    """A site in the wrong Wyckoff setting or a non-numeric coordinate stops the build."""
    spec = importlib.util.spec_from_file_location("build_sample", REPO / "data" / "build_sample.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    quartz = dict(next(r for r in ROWS if r["cif_id"] == "SiO2"))
    assert len(mod.build_structure(quartz)) == 9
    quartz["coords"] = quartz["coords"].replace("1/3", "0")  # Si off its 3a site
    with pytest.raises(ValueError, match="SiO2: the structure built has formula"):
        mod.build_structure(quartz)
    quartz["coords"] = "0.4702 0 x;0.4137 0.2672 0.2139"
    with pytest.raises(ValueError, match="SiO2: coords"):
        mod.build_structure(quartz)
