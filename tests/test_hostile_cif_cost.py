"""Issue 24, class 5: one CIF costs bounded time and memory or is refused in one line.

Repeated symmetry operations are applied once; more than 192 distinct ones are refused; a crystal
whose atoms listed and operations make more sites than the limit is refused from the counts,
before any symmetry image is made (checked here by making the expansion fail if it is reached).
Normal CIFs read as before (tests/test_cif_fast.py; here also through pymatgen's path)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser
from pymatgen.symmetry.groups import SpaceGroup
from test_cif_fast import assert_same_structure, symmetrized_cifs
from test_safety_outputs import assert_error, snapshot

import cgcnn.crystals.cif_bounds as cif_bounds
import cgcnn.crystals.cif_fast as cif_fast
import cgcnn.crystals.sites as sites
from cgcnn import InputError, predict
from cgcnn.cli import run_main
from cgcnn.crystals import structure_from_bytes
from cgcnn.crystals.cif import parse_cif_pymatgen
from conftest import REPO

MODEL = REPO / "models" / "source.pth.tar"
SAMPLE = REPO / "data" / "sample"
FM3M = [op.as_xyz_str() for op in SpaceGroup("Fm-3m").symmetry_ops]
OXIDATION = "loop_\n_atom_type_symbol\n_atom_type_oxidation_number\nSi 0\n"  # sends the CIF to pymatgen's path


def cif_text(xyz, ops, a: float = 5.43, extra: str = "", symbol: str = "Si") -> str:
    """A CIF of atoms ``xyz`` (fractional) of ``symbol`` under the symmetry operations ``ops``."""
    lines = ["data_x", *(f"_cell_length_{c} {a}" for c in "abc"),
             *(f"_cell_angle_{c} 90" for c in ("alpha", "beta", "gamma")), extra,
             "loop_", "_symmetry_equiv_pos_as_xyz", *(f"'{op}'" for op in ops),
             "loop_", "_atom_site_label", "_atom_site_type_symbol", "_atom_site_fract_x", "_atom_site_fract_y",
             "_atom_site_fract_z", "_atom_site_occupancy"]
    lines += [f"{symbol}{i} {symbol} {x:.6f} {y:.6f} {z:.6f} 1" for i, (x, y, z) in enumerate(xyz)]
    return "\n".join(lines) + "\n"


def general_positions(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3))


@pytest.fixture
def no_expansion(monkeypatch):
    """Symmetry images may not be made (the refusal must come from the counts)."""
    def refuse(*args, **kwargs):
        raise AssertionError("symmetry images made before the counts were checked")

    monkeypatch.setattr(cif_fast, "_operate", refuse)
    monkeypatch.setattr(cif_bounds, "_operate", refuse)
    monkeypatch.setattr(CifParser, "_unique_coords", refuse)


@pytest.mark.parametrize("extra", ["", OXIDATION], ids=["fast path", "pymatgen path"])
@pytest.mark.parametrize("ops", [["x,y,z"] * 20_000, [f"x+{k},y,z" for k in range(2000)],
                                 FM3M * 100], ids=["20000 identical", "2000 whole translations", "Fm-3m x 100"])
def test_repeated_operations_are_applied_once(ops, extra):
    distinct = list(dict.fromkeys(ops))[:192] if ops[0] != "x+0,y,z" else ["x,y,z"]
    want = structure_from_bytes(cif_text([[0.1, 0.2, 0.3]], distinct, a=20, extra=extra).encode(), "once.cif")
    got = structure_from_bytes(cif_text([[0.1, 0.2, 0.3]], ops, a=20, extra=extra).encode(), "many.cif")
    assert len(got) == len(want) == (len(CifParser.from_str(cif_text([[0.1, 0.2, 0.3]], distinct, a=20))
                                         .parse_structures(primitive=False)[0]) if len(distinct) > 1 else 1)
    assert_same_structure(got, want)


def test_distinct_operations_keep_first_occurrences():
    affine = cif_fast.affine_ops(("x,y,z", "-x,-y,-z", "x+1,y,z", "-x,-y,-z", "x,y,z+1/2", "x,y,z-1/2"))
    assert len(affine) == 5  # the repeated string once
    kept = cif_fast.distinct_ops(affine)
    np.testing.assert_array_equal(kept, affine[[0, 1, 3]])  # x+1 is x; z-1/2 is z+1/2


@pytest.mark.parametrize("extra", ["", OXIDATION], ids=["fast path", "pymatgen path"])
def test_more_than_192_distinct_operations(no_expansion, extra):
    ops = [f"x+{k}/200,y,z" for k in range(200)]
    with pytest.raises(InputError) as exc:
        structure_from_bytes(cif_text([[0.1, 0.2, 0.3]], ops, a=50, extra=extra).encode(), "ops.cif")
    assert str(exc.value) == ("ops.cif: 200 distinct symmetry operations; a space group has at most 192 (in a "
                              "conventional cell)")


@pytest.mark.parametrize("extra", ["", OXIDATION, "_cell_length_a 40\n"],
                         ids=["fast path", "pymatgen path", "gemmi cannot read it"])
@pytest.mark.parametrize("n, ops, words", [
    (201, ["x,y,z"], ["at least 201 sites (201 atoms listed)"]),
    (60, FM3M, ["60 atoms listed x 192 symmetry operations, whose images lie in", "at most 8 per site"]),
    (10, FM3M, ["10 atoms listed x 192 symmetry operations, whose images lie in", "at most 8 per site"]),
], ids=["atoms listed", "operations", "places"])
def test_too_many_sites_refused_before_expansion(no_expansion, extra, n, ops, words):
    text = cif_text(general_positions(n), ops, a=40, extra=extra)
    with pytest.raises(InputError) as exc:
        structure_from_bytes(text.encode(), "big.cif", max_sites=200)
    message = str(exc.value)
    assert message.startswith("big.cif: at least ") and "\n" not in message
    assert message.endswith("more than the limit of 200 sites per crystal (cgcnn.crystals.MAX_SITES)")
    for word in words:
        assert word in message


def test_under_the_bounds_the_limit_counts_the_sites():
    """10 atoms of Fm-3m at general positions: 1920 sites, refused by the count after expansion."""
    text = cif_text(general_positions(10, seed=6), FM3M, a=100)  # seed 6: no two atoms closer than 0.5 Å
    with pytest.raises(InputError, match=r"big.cif: 1920 sites, more than the limit of 1900"):
        structure_from_bytes(text.encode(), "big.cif", max_sites=1900)
    assert len(structure_from_bytes(text.encode(), "big.cif", max_sites=1920)) == 1920


@pytest.mark.parametrize("name", ["NaCl", "Si", "GaAs", "GaN", "Al2O3", "TiO2"])
def test_pymatgen_path_reads_as_pymatgen(name):
    """The operations and images the bounded parser makes are pymatgen's own."""
    text = symmetrized_cifs()[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = CifParser.from_str(text).parse_structures(primitive=False)[0]
    assert_same_structure(parse_cif_pymatgen(f"{name}.cif", text), want)
    many = text.replace(" _symmetry_equiv_pos_as_xyz\n", " _symmetry_equiv_pos_as_xyz\n  901  'x, y, z'\n"
                        "  902  'x+1, y, z'\n  903  'x, y, z'\n")
    assert many != text
    assert_same_structure(parse_cif_pymatgen(f"{name}.cif", many), want)  # repeats applied once


def test_a_costly_cif_is_one_line_or_a_skipped_row(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(SAMPLE / "NaCl.cif", data / "NaCl.cif")
    (data / "ops.cif").write_text(cif_text([[0.1, 0.2, 0.3]], [f"x+{k}/500,y,z" for k in range(500)], a=50))
    out = tmp_path / "out.csv"
    before = snapshot(tmp_path)
    code = run_main(predict.main, [str(MODEL), str(data), "--out", str(out), "-q", "-j", "0"])
    assert_error(code, capsys.readouterr().err, "ops.cif", "500 distinct symmetry operations")
    assert snapshot(tmp_path) == before
    code = run_main(predict.main, [str(MODEL), str(data), "--out", str(out), "-q", "-j", "0", "--on-error", "skip"])
    assert code == 0, capsys.readouterr().err
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped.cif_id) == ["ops"] and "500 distinct symmetry operations" in skipped.reason[0]
    assert list(pd.read_csv(out).cif_id) == ["NaCl"]


def test_close_pairs_equal_every_pair_compared(monkeypatch):
    """The grid search of sites.close_pairs finds exactly the pairs that comparing all pairs finds,
    across cell borders and the periodic boundary."""
    monkeypatch.setattr(sites, "_ALL_PAIRS", 0)  # the grid, even for these few points
    rng = np.random.default_rng(3)
    base = rng.random((60, 3)) * 3 - 1
    a = np.concatenate([base, base + rng.normal(0, 6e-5, base.shape),
                        np.round(base * 4) / 4 + rng.choice([-1, 1], base.shape) * rng.random(base.shape) * 1.5e-4,
                        [[0, 0, 1 - 5e-5], [1e-5, 0, -3], [0.5, 0.5, 0.5]]])
    b = np.concatenate([a + 1, a + rng.normal(0, 5e-5, a.shape), rng.random((50, 3))])
    for x, y in ((a, b), (a, a)):
        diff = x[:, None, :] - y[None, :, :]
        diff -= np.round(diff)
        want = set(zip(*map(list, np.nonzero(np.all(np.abs(diff) < 1e-4, axis=-1)))))
        got = sites.close_pairs(x, y)
        assert set(zip(got[0].tolist(), got[1].tolist())) == want and len(got[0]) == len(want)
    assert sites.close_pairs(a, a, limit=10) is None


def test_structure_sanity():
    """The helper's CIF is read as pymatgen reads it (a guard for the tests above)."""
    text = cif_text([[0, 0, 0], [0.25, 0.25, 0.25]], FM3M, symbol="Si")
    got = structure_from_bytes(text.encode(), "si.cif")
    want = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    assert len(got) == len(want) == 12  # 4a and 8c


def test_every_atom_listed_and_the_operations_too():
    """A CIF listing all 8 atoms of rock salt's cell and Fm-3m's 192 operations (8 x 192 images of 8
    places): the bounds let it through (8 sites at most 8), and it is refused as pymatgen refuses it,
    the symmetry-equivalent atoms adding up to an occupancy of 4."""
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    lines = cif_text([], FM3M, a=5.64).splitlines()
    lines += [f"{s.specie}{i} {s.specie} {x:.6f} {y:.6f} {z:.6f} 1" for i, (s, (x, y, z)) in
              enumerate(zip(nacl, nacl.frac_coords))]
    text = "\n".join(lines) + "\n"
    with warnings.catch_warnings(), pytest.raises(ValueError):
        warnings.simplefilter("ignore")
        CifParser.from_str(text).parse_structures(primitive=False)
    with pytest.raises(InputError, match=r"nacl.cif: overlapping atoms: .* add up to an occupancy of 4"):
        structure_from_bytes(text.encode(), "nacl.cif", max_sites=8)
