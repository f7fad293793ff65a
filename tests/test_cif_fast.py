"""The fast CIF path (cgcnn/crystals/cif_fast.py, through cgcnn/crystals/cif.py) gives pymatgen's Structure, and so
the same graph.

Compared with ``Structure.from_file`` (pymatgen's ``CifParser``): lattice, species,
fractional coordinates (exactly), labels and site order, then the graphs
(``build_graph``: atomic numbers, neighbour indices exactly, distances to 1e-6 Å).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from cgcnn.crystals import read_cif
from cgcnn.crystals.cif_fast import parse_cif_fast
from cgcnn.data import build_graph
from conftest import REPO, SHARED, crystals

SAMPLE = sorted((REPO / "data" / "sample").glob("*.cif"))
SHARED_CIFS = sorted((SHARED / "data" / "aflow_agl_300K" / "cif").glob("*.cif")) + sorted(
    (SHARED / "data" / "half_heusler_143" / "cif").glob("*.cif"))


def pymatgen_structure(path: Path) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_file(str(path))


def assert_same_structure(got: Structure, want: Structure) -> None:
    np.testing.assert_array_equal(got.lattice.matrix, want.lattice.matrix)
    assert [site.species for site in got] == [site.species for site in want]
    np.testing.assert_array_equal(got.frac_coords, want.frac_coords)
    assert got.labels == want.labels


def assert_same_graph(got: Structure, want: Structure) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # padding warnings, alike for both
        g1, g2 = build_graph(got), build_graph(want)
    np.testing.assert_array_equal(g1.numbers, g2.numbers)
    np.testing.assert_array_equal(g1.nbr_fea_idx, g2.nbr_fea_idx)
    np.testing.assert_allclose(g1.nbr_dist, g2.nbr_dist, rtol=0, atol=1e-6)


def check_file(path: Path) -> None:
    fast = parse_cif_fast(path.read_text())
    assert fast is not None, f"{path.name}: not taken by the fast path"
    want = pymatgen_structure(path)
    assert_same_structure(fast, want)
    assert_same_graph(fast, want)


def test_sample_cifs_identical():
    assert len(SAMPLE) > 50
    for path in SAMPLE:
        check_file(path)


@pytest.mark.skipif(not SHARED_CIFS, reason="../shared (AFLOW and half-Heusler CIFs) not present")
def test_shared_cifs_identical():
    """Every 10th shared CIF (the full 3,473 were compared by hand, 0 differing)."""
    for path in SHARED_CIFS[::10]:
        check_file(path)


# --- symmetry expansion (the shared CIFs are all P1) ---------------------------------------------


def symmetrized_cifs() -> dict[str, str]:
    """CIFs with the asymmetric unit and the space group's operations, as CifWriter writes them."""
    c = crystals()
    wurtzite = Structure.from_spacegroup(
        "P6_3mc", Lattice.hexagonal(3.19, 5.19), ["Ga", "N"], [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.377]])
    corundum = Structure.from_spacegroup(
        "R-3c", Lattice.hexagonal(4.76, 12.99), ["Al", "O"], [[0, 0, 0.3523], [0.3064, 0, 0.25]])
    tetragonal = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"], [[0, 0, 0], [0.3053, 0.3053, 0]])
    structures = {"NaCl": c["NaCl"], "Si": c["Si"], "GaAs": c["GaAs"], "GaN": wurtzite,
                  "Al2O3": corundum, "TiO2": tetragonal}
    return {name: str(CifWriter(s, symprec=0.01)) for name, s in structures.items()}


@pytest.mark.parametrize("name", ["NaCl", "Si", "GaAs", "GaN", "Al2O3", "TiO2"])
def test_symmetry_expansion_identical(tmp_path, name):
    path = tmp_path / f"{name}.cif"
    path.write_text(symmetrized_cifs()[name])
    assert "_symmetry_equiv_pos_as_xyz" in path.read_text()
    check_file(path)


def test_thirds_written_to_four_places_are_snapped_as_pymatgen_does(tmp_path):
    """0.3333 and 0.6667 become exactly 1/3 and 2/3 (pymatgen's _sanitize_data) before the
    operations of P6_3/mmc are applied; hexagonal operations (x-y) also test the sum order,
    and numbers with uncertainties, '3.21(2)', are read as pymatgen's str2float reads them."""
    path = tmp_path / "hex.cif"
    path.write_text("""data_hex
_cell_length_a 3.21(2)
_cell_length_b 3.21
_cell_length_c 5.21
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 120
loop_
_symmetry_equiv_pos_as_xyz
'x, y, z'
'x-y, x, z+1/2'
'-y, x-y, z'
'-x, -y, z+1/2'
'-x+y, -x, z'
'y, -x+y, z+1/2'
'-x, -y, -z'
'-x+y, -x, -z+1/2'
'y, -x+y, -z'
'x, y, -z+1/2'
'x-y, x, -z'
'-y, x-y, -z+1/2'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Mg1 Mg 0.3333 0.6667 0.2500(3) 1.0
""")
    check_file(path)
    assert len(read_cif(path)) == 2


# --- what the fast path leaves to pymatgen -------------------------------------------------------


def _nacl_p1() -> Structure:
    return crystals()["NaCl"]


@pytest.mark.parametrize("kind", ["partial occupancy", "oxidation states", "Cartesian only", "symbol only"])
def test_fallback_to_pymatgen_gives_the_same(tmp_path, kind):
    path = tmp_path / "x.cif"
    if kind == "partial occupancy":
        s = Structure(Lattice.cubic(5.6), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        path.write_text(str(CifWriter(s)))
    elif kind == "oxidation states":
        s = _nacl_p1()
        s.add_oxidation_state_by_element({"Na": 1, "Cl": -1})
        path.write_text(str(CifWriter(s)))
    elif kind == "Cartesian only":
        text = str(CifWriter(_nacl_p1())).replace("_atom_site_fract_", "_atom_site_Cartn_")
        path.write_text(text)
    else:  # a space group symbol pymatgen knows, no operations
        path.write_text(_NACL_BY_SYMBOL)
    assert parse_cif_fast(path.read_text()) is None
    try:
        want = pymatgen_structure(path)
    except Exception:
        return  # pymatgen cannot read it either: read_cif raises InputError (tests/test_cif_faults.py)
    got = read_cif(path)
    assert_same_structure(got, want)


_NACL_BY_SYMBOL = """data_NaCl
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'F m -3 m'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Na1 Na 0 0 0
Cl1 Cl 0.5 0.5 0.5
"""


def test_symmetry_related_sites_left_to_pymatgen(tmp_path):
    """A CIF listing all four Na of rock salt *and* the F operations: pymatgen merges the
    copies into one site of occupancy 4 and refuses it; the fast path must not quietly
    drop them instead."""
    text = str(CifWriter(crystals()["NaCl"], symprec=0.01))
    lines = text.splitlines()
    na = next(line for line in lines if line.strip().startswith("Na"))
    shifted = na.replace("0.00000000  0.00000000  0.00000000", "0.00000000  0.50000000  0.50000000")
    assert shifted != na
    path = tmp_path / "NaCl_twice.cif"
    path.write_text("\n".join(lines + [shifted.replace("Na0", "Na9")]) + "\n")
    assert parse_cif_fast(path.read_text()) is None
