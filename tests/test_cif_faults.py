"""CIF faults that pymatgen reads silently wrong are refused, or read right (issue 13, class 1).

Each bad CIF is made here from rock-salt NaCl (a = 5.64 Å); each refusal is one
``InputError`` line naming the file and what is wrong.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from cgcnn import InputError
from cgcnn.data import CIFData, GraphParams, build_graph, check_neighbour_count, read_structure
from conftest import crystals, write_folder

CELL = """_cell_length_a {a}
_cell_length_b {b}
_cell_length_c {c}
_cell_angle_alpha {alpha}
_cell_angle_beta {beta}
_cell_angle_gamma {gamma}
"""
SITES = """loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
{rows}"""
NACL_ASYM = "Na1 Na 0 0 0\nCl1 Cl 0.5 0.5 0.5\n"


def nacl_cif(symmetry: str, a: float = 5.64, rows: str = NACL_ASYM, name: str = "NaCl", **cell) -> str:
    """The rock-salt asymmetric unit with the given symmetry lines (no operations unless given)."""
    params = {"a": a, "b": a, "c": a, "alpha": 90, "beta": 90, "gamma": 90, **cell}
    return f"data_{name}\n" + CELL.format(**params) + symmetry + "\n" + SITES.format(rows=rows)


def write(tmp_path, text: str, name: str = "bad.cif"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_one_line(err, *parts: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


# --- symmetry -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "symmetry",
    [
        "_symmetry_space_group_name_H-M 'F m 3 m'",  # old style, no bar: pymatgen fell back to P1 (2 atoms)
        "_space_group_name_Hall '-F 4 2 3'",  # Hall symbol only: same
        "_symmetry_space_group_name_H-M 'Fm3m'",
    ],
    ids=["old-HM", "Hall-only", "old-HM-compact"],
)
def test_space_group_pymatgen_cannot_read_is_read_right(tmp_path, symmetry):
    path = write(tmp_path, nacl_cif(symmetry))
    structure = read_structure(path)
    assert len(structure) == 8
    assert structure.composition.reduced_formula == "NaCl" and structure.composition["Na"] == 4
    reference = crystals()["NaCl"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, want = build_graph(structure), build_graph(reference)
    np.testing.assert_allclose(np.sort(ours.nbr_dist, axis=None), np.sort(want.nbr_dist, axis=None), atol=1e-9)
    assert sorted(ours.numbers) == sorted(want.numbers)


def test_space_group_nobody_knows_is_refused(tmp_path):
    path = write(tmp_path, nacl_cif("_symmetry_space_group_name_H-M 'F 4/m -3 2/m'"))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "'F 4/m -3 2/m'", "not recognised")


def test_no_symmetry_at_all_is_refused_not_p1(tmp_path):
    path = write(tmp_path, nacl_cif(""))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "no symmetry operations and no space group")


def test_space_group_pymatgen_knows_is_unchanged(tmp_path):
    path = write(tmp_path, nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'"))
    assert len(read_structure(path)) == 8


# --- data blocks ----------------------------------------------------------------------------------


def test_several_data_blocks_refused(tmp_path):
    one = nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'", name="first")
    two = nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'", a=6.0, name="second")
    path = write(tmp_path, one + "\n" + two)
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "2 data blocks")


def test_a_block_without_atoms_is_no_second_crystal(tmp_path):
    text = "data_global\n_journal_name_full 'Some Journal'\n\n" + nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'")
    assert len(read_structure(write(tmp_path, text, "ok.cif"))) == 8


# --- impossible cells -----------------------------------------------------------------------------


def test_cell_in_nm_is_refused(tmp_path):
    """Rock salt with a = 0.564 (nm, not Å): Na and Cl 0.282 Å apart."""
    path = write(tmp_path, str(CifWriter(Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(0.564), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "overlapping atoms", "0.282 Å apart", "Na", "Cl")


def test_hundredth_of_an_angstrom_cell_is_refused(tmp_path):
    path = write(tmp_path, nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'", a=0.01))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "overlapping atoms", "0.01 Å")


def test_overlapping_atoms_are_refused(tmp_path):
    """A Cl put 0.1 Å from a Na (P1 cell listing all eight sites and one more)."""
    rows = "\n".join(f"{site.species_string}{i} {site.species_string} {x:.6f} {y:.6f} {z:.6f}"
                     for i, (site, (x, y, z)) in enumerate(zip(crystals()["NaCl"], crystals()["NaCl"].frac_coords)))
    rows += f"\nCl9 Cl {0.1 / 5.64:.6f} 0 0\n"
    path = write(tmp_path, nacl_cif("loop_\n_symmetry_equiv_pos_as_xyz\n'x, y, z'", rows=rows))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "overlapping atoms", "0.1 Å apart", "Cl9")


def test_atoms_at_the_same_place_are_refused(tmp_path):
    rows = NACL_ASYM + "Cl2 Cl 0 0 0\n"
    path = write(tmp_path, nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'", rows=rows))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "overlapping atoms", "same position")


@pytest.mark.parametrize("cell", [{"gamma": 180}, {"c": 0}, {"alpha": 120, "beta": 120, "gamma": 120}],
                         ids=["flat-angle", "zero-length", "coplanar"])
def test_zero_volume_cell_is_refused(tmp_path, cell):
    path = write(tmp_path, nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'", **cell))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "zero-volume cell")


def test_too_many_neighbours_refused_before_the_graph(tmp_path):
    """Simple cubic, a = 0.6 Å: no atoms closer than 0.5 Å, but some 10,000 neighbours per
    site within 8 Å; refused before any neighbour list is built."""
    dense = Structure(Lattice.cubic(0.6), ["Na"], [[0, 0, 0]])
    with pytest.raises(InputError) as err:
        check_neighbour_count(dense, 8.0, "dense.cif")
    assert_one_line(err, "dense.cif", "neighbours per site", "limit of 1000")
    with pytest.raises(InputError, match="neighbours per site"):
        build_graph(dense, GraphParams(), name="dense")
    folder = write_folder(tmp_path / "f", {"dense": dense}, atom_init={"11": [1.0]})
    with pytest.raises(InputError) as err:
        CIFData(folder)[0]
    assert_one_line(err, "dense.cif", "neighbours per site")


def test_real_crystals_pass_the_neighbour_bound():
    for structure in crystals().values():
        check_neighbour_count(structure, 8.0, "x")


# --- species --------------------------------------------------------------------------------------


def test_dummy_species_is_refused(tmp_path):
    rows = "X1 X 0 0 0\nCl1 Cl 0.5 0.5 0.5\n"
    path = write(tmp_path, nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'", rows=rows))
    with pytest.raises(InputError) as err:
        read_structure(path)
    assert_one_line(err, "bad.cif", "'X'", "not a chemical element")


def test_dummy_species_in_a_data_folder(tmp_path, atom_init_table):
    folder = write_folder(tmp_path / "f", {"NaCl": crystals()["NaCl"]}, atom_init=atom_init_table)
    (folder / "NaCl.cif").write_text(
        nacl_cif("_symmetry_space_group_name_H-M 'F m -3 m'", rows="X1 X 0 0 0\nCl1 Cl 0.5 0.5 0.5\n"))
    with pytest.raises(InputError) as err:
        CIFData(folder)[0]
    assert_one_line(err, "NaCl.cif", "not a chemical element")
