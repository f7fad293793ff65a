"""One neighbour search per crystal: ``check_geometry`` inside ``graph_to_follow`` uses (and keeps)
the graph's neighbour list; the errors, the graphs and the kept list's validity are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from test_cif_faults import NACL_ASYM, nacl_cif, write

from cgcnn import InputError
from cgcnn.cif import check_geometry
from cgcnn.data import GraphParams, build_graph, read_structure
from cgcnn.graph import _KEPT, graph_to_follow, neighbour_list
from conftest import crystals

FM3M = "_symmetry_space_group_name_H-M 'F m -3 m'"


def bad_cifs(tmp_path):
    nacl = crystals()["NaCl"]
    rows = "\n".join(f"{site.species_string}{i} {site.species_string} {x:.6f} {y:.6f} {z:.6f}"
                     for i, (site, (x, y, z)) in enumerate(zip(nacl, nacl.frac_coords)))
    return [
        write(tmp_path, nacl_cif("loop_\n_symmetry_equiv_pos_as_xyz\n'x, y, z'",
                                 rows=rows + f"\nCl9 Cl {0.1 / 5.64:.6f} 0 0\n"), "close.cif"),
        write(tmp_path, nacl_cif(FM3M, a=0.564), "nm.cif"),
        write(tmp_path, nacl_cif(FM3M, a=0.01), "tiny.cif"),
        write(tmp_path, nacl_cif(FM3M, rows=NACL_ASYM + "Cl2 Cl 0.01 0 0\n"), "pair.cif"),
        write(tmp_path, nacl_cif(FM3M, a=3.0, c=0.9), "thin.cif"),
    ]


def message(path, radius=None):
    try:
        if radius is None:
            read_structure(path)
        else:
            with graph_to_follow(radius):
                read_structure(path)
    except InputError as exc:
        return str(exc)
    return None


def test_same_errors_with_the_graphs_neighbour_list(tmp_path):
    for path in bad_cifs(tmp_path):
        want = message(path)
        assert want is not None and "\n" not in want, path.name
        assert message(path, 8.0) == want, path.name
        assert message(path, 4.0) == want, path.name


@pytest.mark.parametrize("name", sorted(crystals()))
def test_same_graph_and_the_list_is_kept_once(name):
    structure = crystals()[name]
    want = build_graph(structure.copy(), GraphParams())
    with graph_to_follow(8.0):
        check_geometry(structure, f"{name}.cif")
    assert _KEPT in structure.__dict__
    got = build_graph(structure, GraphParams())
    assert _KEPT not in structure.__dict__  # used once, then dropped
    np.testing.assert_array_equal(got.numbers, want.numbers)
    np.testing.assert_array_equal(got.nbr_fea_idx, want.nbr_fea_idx)
    np.testing.assert_array_equal(got.nbr_dist, want.nbr_dist)


def test_no_list_kept_outside_graph_to_follow():
    structure = crystals()["NaCl"]
    check_geometry(structure, "NaCl.cif")
    assert _KEPT not in structure.__dict__


def test_a_changed_structure_is_searched_again():
    structure = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with graph_to_follow(8.0):
        check_geometry(structure, "x.cif")
    structure.translate_sites([1], [0.1, 0, 0])
    fresh = structure.copy().get_neighbor_list(r=8.0)
    got = neighbour_list(structure, 8.0)
    for a, b in zip(got, fresh):
        np.testing.assert_array_equal(a, b)
    with graph_to_follow(6.0):
        check_geometry(structure, "x.cif")
    got = neighbour_list(structure, 8.0)  # kept at another radius: searched again
    assert got[3].max() > 6.0
