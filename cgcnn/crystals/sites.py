"""Fractional coordinates within 1e-4 of each other, periodically, as pymatgen's ``CifParser``
finds them (``find_in_coord_list_pbc``, ``site_tolerance``): :func:`close_pairs`, every pair tested
for a few hundred points, pairs of neighbouring grid cells beyond, so that the cost grows with
the points and not with their square.  Used by :mod:`cgcnn.crystals.cif_fast` (the symmetry
images kept) and :mod:`cgcnn.crystals.cif_bounds` (the cells images occupy).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_PAIR_CANDIDATES", "close_pairs"]

_SITE_TOL = 1e-4  # CifParser site_tolerance
_CELLS = 4998  # cells per axis of the pair search: side just over 2e-4, twice _SITE_TOL
MAX_PAIR_CANDIDATES = 200_000_000
"""Most candidate pairs :func:`close_pairs` tests (in chunks of 2**20, some 50 MB of work arrays each;
about 10 s): enough for 5000 sites of 192 images each; beyond, None."""


_ALL_PAIRS = 4_000_000


def _all_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`close_pairs` by testing every pair, ``b`` in chunks so that memory stays bounded."""
    chunk = max(1, 1_000_000 // max(1, len(a)))
    found_i, found_j = [], []
    for start in range(0, len(b), chunk):
        diff = a[:, None, :] - b[None, start:start + chunk, :]
        diff -= np.round(diff)
        i, j = np.nonzero(np.all(np.abs(diff) < _SITE_TOL, axis=-1))
        found_i.append(i)
        found_j.append(j + start)
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_i), np.concatenate(found_j)


def _cells(x: np.ndarray) -> np.ndarray:
    """Cell of each point (n, 3) of a grid of ``_CELLS`` per axis over the unit cell, periodic, as
    one int64 key per point; points within 1e-4 of each other (periodically) lie in the same or
    neighbouring cells."""
    with np.errstate(invalid="ignore"):  # a coordinate of inf: no pair, as in pymatgen
        wrapped = np.nan_to_num(x - np.floor(x))
    return np.floor(wrapped * _CELLS).astype(np.int64) % _CELLS


def _key(c: np.ndarray) -> np.ndarray:
    return (c[:, 0] * _CELLS + c[:, 1]) * _CELLS + c[:, 2]


def close_pairs(a: np.ndarray, b: np.ndarray, limit: int = MAX_PAIR_CANDIDATES
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Index pairs (i, j) with ``a[i]`` within 1e-4 of ``b[j]`` in every fractional coordinate,
    periodically, computed as pymatgen's ``find_in_coord_list_pbc`` does (``a[i] - b[j]``, minus
    its rounding).

    Up to :data:`_ALL_PAIRS` pairs (every crystal of a few hundred images) every pair is
    tested, in chunks; beyond, only pairs in the same or neighbouring cells of a periodic grid of
    side 2e-4 (a superset of the close pairs, so the result is the same set), so that time and
    memory grow with the number of points and of such candidate pairs, not with their product.
    None when there are more than ``limit`` candidates (many points at one place).
    """
    if len(a) * len(b) <= _ALL_PAIRS:
        return _all_pairs(a, b)
    ca, cb = _cells(a), _cells(b)
    kb = _key(cb)
    order = np.argsort(kb, kind="stable")
    sorted_kb = kb[order]
    ranges = []
    total = 0
    for offset in np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")).reshape(3, -1).T:
        k = _key((ca + offset) % _CELLS)
        lo = np.searchsorted(sorted_kb, k, "left")
        counts = np.searchsorted(sorted_kb, k, "right") - lo
        total += int(counts.sum())
        if total > limit:
            return None
        ranges.append((lo, counts))
    found_i, found_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for lo, counts in ranges:
        rows = np.nonzero(counts)[0]
        if not len(rows):
            continue
        ends = np.cumsum(counts[rows])
        for part in np.split(rows, np.searchsorted(ends, np.arange(1 << 20, ends[-1], 1 << 20), "right")):
            c = counts[part]
            i = np.repeat(part, c)
            j = order[np.repeat(lo[part] - np.cumsum(c) + c, c) + np.arange(len(i))]
            diff = a[i] - b[j]
            diff -= np.round(diff)
            close = np.all(np.abs(diff) < _SITE_TOL, axis=-1)
            found_i.append(i[close])
            found_j.append(j[close])
    return np.concatenate(found_i), np.concatenate(found_j)
