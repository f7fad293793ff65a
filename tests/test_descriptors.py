"""cgcnn.transfer.descriptors from one spglib symmetry dataset per crystal: the same primitive-cell sizes and
structure types as pymatgen's SpacegroupAnalyzer (the previous way), on real CIFs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from cgcnn.crystals import read_structure
from cgcnn.transfer import structure_descriptors, structure_type
from cgcnn.transfer.descriptors import structure_facts, symmetry_dataset
from conftest import REPO, SHARED

SAMPLE = REPO / "data" / "sample"


def analyzer_facts(structure) -> tuple[int, str]:
    """Atoms in the primitive cell and the structure type as pymatgen's SpacegroupAnalyzer gives them
    (``len(find_primitive())``, the cell itself where spglib fails)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analyzer = SpacegroupAnalyzer(structure, symprec=0.01)
            data = analyzer.get_symmetry_dataset()
            n_prim = len(analyzer.find_primitive())
    except Exception:
        return len(structure), f"P1-{len(structure)}"
    return n_prim, f"{data.number}-{n_prim}-{''.join(sorted(set(data.wyckoffs)))}"


def check_against_analyzer(paths) -> None:
    assert paths
    for path in paths:
        structure = read_structure(path)
        n_prim, kind = analyzer_facts(structure)
        row, label = structure_facts(structure, with_type=True)
        assert round(10 ** row[3]) == n_prim, path.name
        assert row[3] == math.log10(n_prim)  # as the previous code computed it
        assert label == kind == structure_type(structure), path.name
        np.testing.assert_array_equal(structure_descriptors([structure])[0], row)


def test_sample_cifs_as_the_analyzer():
    check_against_analyzer(sorted(SAMPLE.glob("*.cif")))


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared (AFLOW and half-Heusler CIFs) not present")
def test_shared_cifs_as_the_analyzer():
    """Every half-Heusler and every 10th AFLOW-AGL CIF (all 3,473 were compared once: none differs)."""
    half_heusler = sorted((SHARED / "data" / "half_heusler_143" / "cif").glob("*.cif"))
    aflow = sorted((SHARED / "data" / "aflow_agl_300K" / "cif").glob("*.cif"))[::10]
    check_against_analyzer(half_heusler + aflow)


def test_supercell_and_its_primitive_cell():
    """A conventional rock-salt cell (8 atoms) has 4 pure translations: 2 atoms in the primitive cell; a 2x1x1
    supercell of the primitive one still has 2."""
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    dataset = symmetry_dataset(nacl)
    identity = np.all(dataset.rotations == np.eye(3, dtype=int), axis=(1, 2))
    assert identity.sum() == 4 and dataset.number == 225
    primitive = nacl.get_primitive_structure()
    assert len(primitive) == 2
    for structure in (nacl, primitive, primitive * (2, 1, 1)):
        row, label = structure_facts(structure, with_type=True)
        assert 10 ** row[3] == pytest.approx(2) and label == "225-2-ab"
        assert row[4] == 2


def test_spglib_failure_keeps_the_cell():
    """Where spglib finds no symmetry dataset the cell counts as primitive and the type is P1-<sites>."""
    far = Structure(Lattice.cubic(3.0), ["Na", "Na"], [[0, 0, 0], [1e-9, 0, 0]], validate_proximity=False)
    assert symmetry_dataset(far) is None
    row, label = structure_facts(far, with_type=True)
    assert row[3] == np.log10(2) and label == "P1-2"
