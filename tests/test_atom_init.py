"""Tests for the regenerated CGCNN atom features (cgcnn/data/atom_init.json)."""

import json
from pathlib import Path

import pytest

from cgcnn.atom_init import N_FEATURES, SEGMENTS, dumps, segment_bounds

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "cgcnn" / "data" / "atom_init.json"
UPSTREAM = REPO.parent / "shared" / "models" / "cgcnn_original" / "atom_init.json"


@pytest.fixture(scope="module")
def table():
    with open(SHIPPED) as fh:
        return json.load(fh)


def _category(vec, segment):
    """Index of the set bit inside ``segment`` (None if the segment is empty)."""
    for name, a, b in segment_bounds():
        if name == segment:
            seg = vec[a:b]
            return seg.index(1) if 1 in seg else None
    raise KeyError(segment)


def test_segments_sum_to_92():
    assert N_FEATURES == 92
    assert sum(w for _, w in SEGMENTS) == 92
    assert segment_bounds()[-1][2] == 92
    assert [n for n, _ in SEGMENTS] == [n for n, _, _ in segment_bounds()]


def test_shape_and_one_hot(table):
    assert list(table) == [str(z) for z in range(1, 101)]
    for key, vec in table.items():
        assert len(vec) == 92, key
        assert all(type(b) is int and b in (0, 1) for b in vec), key
        assert sum(vec) <= 9, key
        for name, a, b in segment_bounds():
            assert sum(vec[a:b]) <= 1, (key, name)
        # group, period and block are always known
        for name in ("group", "period", "block"):
            assert _category(vec, name) is not None, (key, name)


@pytest.mark.parametrize(
    "z, group, period, block",
    [
        (1, 1, 1, "s"),  # H
        (2, 18, 1, "s"),  # He
        (8, 16, 2, "p"),  # O
        (26, 8, 4, "d"),  # Fe
        (57, 0, 6, "f"),  # La
        (64, 0, 6, "f"),  # Gd
        (71, 3, 6, "d"),  # Lu
        (92, 0, 7, "f"),  # U
    ],
)
def test_group_period_block(table, z, group, period, block):
    vec = table[str(z)]
    assert _category(vec, "group") == group
    assert _category(vec, "period") == period - 1
    assert _category(vec, "block") == "spdf".index(block)


def test_physics_spot_checks(table):
    # valence electrons: category index = n_valence - 1
    assert _category(table["1"], "valence_electrons") == 0  # H: 1
    assert _category(table["6"], "valence_electrons") == 3  # C: 4
    assert _category(table["8"], "valence_electrons") == 5  # O: 6
    assert _category(table["26"], "valence_electrons") == 7  # Fe: 8
    # electronegativity: F is the most electronegative, Cs among the least
    assert _category(table["9"], "electronegativity") == 9
    assert _category(table["55"], "electronegativity") == 0
    # noble gases have no Pauling electronegativity (He, Ne, Ar)
    for z in (2, 10, 18):
        assert _category(table[str(z)], "electronegativity") is None
    # first ionization energy: He highest, Cs lowest
    assert _category(table["2"], "first_ionization") == 9
    assert _category(table["55"], "first_ionization") == 0


def test_shipped_matches_generator():
    pytest.importorskip("mendeleev")
    from cgcnn.atom_init import build_atom_init

    built = build_atom_init()
    assert SHIPPED.read_text() == dumps(built)


def test_agreement_with_upstream(table):
    if not UPSTREAM.is_file():
        pytest.skip("upstream atom_init.json not available")
    with open(UPSTREAM) as fh:
        ref = json.load(fh)
    assert set(ref) == set(table)
    # Measured: 79/100 elements identical, 9175/9200 bits agree; the
    # differences are atomic volumes (gases etc.), Pd valence and Ac EA.
    identical = sum(table[k] == ref[k] for k in table)
    assert identical >= 75
    bits = sum(a == b for k in table for a, b in zip(table[k], ref[k]))
    assert bits / (92 * len(table)) >= 0.995
    # Every segment except the atomic volume agrees for >= 98 elements.
    for name, a, b in segment_bounds():
        n_diff = sum(table[k][a:b] != ref[k][a:b] for k in table)
        limit = 20 if name == "atomic_volume" else 2
        assert n_diff <= limit, (name, n_diff)
    # and the shipped file is not a byte copy of upstream
    assert SHIPPED.read_bytes() != UPSTREAM.read_bytes()
