"""What one CIF may cost, checked before its symmetry images are made.

A CIF lists n atoms and K symmetry operations; reading it makes the n x K images of the atoms
and removes those within 1e-4 (fractional) of one kept before.  A crystal too large for its
graph (more than :data:`cgcnn.crystals.MAX_SITES` sites) is refused here, from the counts and
before the expansion, when one of these lower bounds on its number of sites is above the limit:

- the atoms listed (each is a site of its own, or the crystal is refused later as disordered or
  overlapping);
- the places the n x K images occupy (computed only when n x K is above the limit, at most
  ``MAX_SITES`` x 192 images, some 25 MB): each site takes in images within 1e-4 of it, which
  lie in at most 8 cells of a grid of side just over 2e-4, so the sites are at least the
  occupied cells / 8.

Both hold for any CIF (a CIF listing every atom of the cell and the operations too is read as
pymatgen reads it), so a crystal refused here would have been refused for its sites anyway.

Repeated symmetry operations (equal after their translations are taken modulo whole cell
vectors) are counted, and applied, once (:func:`cgcnn.crystals.cif_fast.distinct_ops`); more than
:data:`MAX_OPERATIONS` distinct ones are refused.  The checks run on gemmi's tokens before either
parser (:func:`check_cif_cost`) and again inside pymatgen's ``CifParser``, on the operations and
coordinates it uses (:func:`bounded_parser`).  Time and memory of a crystal then grow with
the limit, not with what the file asks for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.crystals.cif_fast import _FRAC_TOL, _SYMOP_TAGS, _first_unique, _numbers, _operate, affine_ops, distinct_ops
from cgcnn.crystals.sites import _cells, _key

__all__ = ["MAX_SITES", "MAX_OPERATIONS", "MAX_SLOW_IMAGES", "check_cif_cost", "check_counts", "site_lower_bound",
           "bounded_parser"]

MAX_SITES = 5000
"""Largest crystal, in sites per cell, that :func:`cgcnn.crystals.read_structure` accepts by default
(checked from the counts here, before any symmetry image is made, and on the structure read).

A crystal's memory grows linearly with its number of sites N: the neighbour search
within 8 Å (about 90 pairs per site in rocksalt NaCl) and the N x 12 x 41 edge
features (2 kB per site as float32, twice that while they are computed).  Building
the graph of a 5000-site NaCl supercell takes about 70 MB and 0.3 s; a batch holds
up to ``batch_size`` such crystals.  A larger cell, usually a mistake (a whole
slab or nanoparticle instead of a unit cell), is refused with a one-line error
giving its number of sites and the limit.  Pass ``max_sites`` to
:class:`cgcnn.data.CIFData` or :func:`cgcnn.crystals.read_structure` for another limit.
"""

MAX_SLOW_IMAGES = 20_000
"""Most symmetry images of one species merged by pymatgen's own loop (time grows with their square),
where the fast merge cannot be sure to match it: magnetic CIFs, images in chains within 1e-4."""

MAX_OPERATIONS = 192
"""Most distinct symmetry operations of a CIF: a space group has at most 192 in a conventional
cell (Fm-3m and the other face-centred cubic groups: 48 point operations x 4 centring vectors)."""


def site_lower_bound(n: int, affine: np.ndarray, coords: np.ndarray | None, limit: int) -> tuple[int, str]:
    """A lower bound on the sites ``n`` atoms make under the distinct operations ``affine``
    (K, 4, 4), and how it was found (module docstring); ``coords`` (n, 3), the atoms' fractional
    coordinates, adds the bound from the images' places (skipped when None).  Stops as soon as a
    bound exceeds ``limit``."""
    k = len(affine)
    bound, how = n, f"{n} atoms listed"
    if bound > limit or coords is None or n * k <= limit:
        return bound, how
    images = np.einsum("kij,nj->nki", affine[:, :3, :3], coords) + affine[None, :, :3, 3]
    places = len(np.unique(_key(_cells(images.reshape(-1, 3)))))
    if -(-places // 8) > bound:
        bound, how = -(-places // 8), (f"{n} atoms listed x {k} symmetry operations, whose images lie in "
                                       f"{places:,} cells of side 2e-4, at most 8 per site")
    return bound, how


def check_counts(source, n: int, affine: np.ndarray, coords: np.ndarray | None, limit: int) -> None:
    """Refuse a crystal of more than ``limit`` sites, or of more than :data:`MAX_OPERATIONS`
    distinct operations, from the counts (:func:`site_lower_bound`), before any expansion.

    Raises
    ------
    InputError
        One line naming ``source``, e.g. ``at least 20,000 sites (5000 atoms listed x 192
        symmetry operations, ...), more than the limit of 5000 sites per crystal``.
    """
    if len(affine) > MAX_OPERATIONS:
        raise InputError(f"{source}: {len(affine):,} distinct symmetry operations; a space group has at most "
                         f"{MAX_OPERATIONS} (in a conventional cell)")
    bound, how = site_lower_bound(n, affine, coords, limit)
    if bound > limit:
        raise InputError(f"{source}: at least {bound} sites ({how}), more than the limit of {limit} sites per "
                         "crystal (cgcnn.crystals.MAX_SITES)")


def _structure_block(doc):
    blocks = [b for b in doc if b.find_values("_atom_site_fract_x") or b.find_values("_atom_site_Cartn_x")
              or b.find_values("_atom_site_label")]
    return blocks[0] if len(blocks) == 1 else None


def check_cif_cost(path: str | Path, doc, limit: int) -> None:
    """:func:`check_counts` on a gemmi document's structure block: its atoms, its explicit symmetry
    operations (the first of pymatgen's tags whose operations parse, as both parsers take them)
    and its fractional coordinates (thirds snapped as pymatgen does).  Without explicit operations
    only the atoms listed are counted here (:func:`bounded_parser` does the rest).

    Raises
    ------
    InputError
        As :func:`check_counts`.
    """
    import gemmi

    block = _structure_block(doc)
    if block is None:
        return
    n = max(len(block.find_values(tag)) for tag in ("_atom_site_label", "_atom_site_fract_x", "_atom_site_Cartn_x"))
    if n > limit:
        raise InputError(f"{path}: at least {n} sites ({n} atoms listed), more than the limit of {limit} sites per "
                         "crystal (cgcnn.crystals.MAX_SITES)")
    affine = None
    for tag in _SYMOP_TAGS:
        values = [gemmi.cif.as_string(v) for v in block.find_values(tag)]
        if values:
            affine = affine_ops(tuple(values))
            if affine is not None:
                break
    if affine is None:
        return
    affine = distinct_ops(affine)
    if n * len(affine) <= limit and len(affine) <= MAX_OPERATIONS:  # the common CIF: no bound can pass the limit
        return
    coords = None
    xyz = [_numbers([gemmi.cif.as_string(v) for v in block.find_values(f"_atom_site_fract_{c}")]) for c in "xyz"]
    if all(c is not None and len(c) == n for c in xyz):
        coords = np.array(xyz, dtype=np.float64).T
        for frac in (1 / 3, 2 / 3):  # CifParser._sanitize_data
            coords[np.abs(coords / frac - 1) <= _FRAC_TOL] = float(str(frac))
    check_counts(path, n, affine, coords, limit)


_parser_class = None


def bounded_parser(text: str, source, limit: int):
    """pymatgen's ``CifParser.from_str(text)``, with the symmetry operations of a block made
    distinct (:func:`cgcnn.crystals.cif_fast.distinct_ops`) and the counts checked, on the
    coordinates and operations it uses, before it makes the images of each species' atoms
    (:func:`site_lower_bound`; the species' bounds added up against ``limit``).  Its
    ``parse_structures`` raises :class:`InputError` naming ``source`` when they are too many."""
    global _parser_class
    if _parser_class is None:
        _parser_class = _make_parser_class()
    parser = _parser_class.from_str(text)
    parser._cgcnn_source, parser._cgcnn_limit = source, limit
    for block in parser._cif.data.values():  # pymatgen merges listed atoms pairwise before any image
        n = max((len(v) for tag, v in block.data.items() if tag.startswith("_atom_site_") and isinstance(v, list)),
                default=0)
        if n > limit:
            raise InputError(f"{source}: at least {n} sites ({n} atoms listed), more than the limit of {limit} sites "
                             "per crystal (cgcnn.crystals.MAX_SITES)")
    return parser


def _make_parser_class():
    from pymatgen.io.cif import CifParser

    class BoundedCifParser(CifParser):
        _cgcnn_sites = 0

        def get_symops(self, data):
            ops = super().get_symops(data)
            if len(ops) < 2:
                return ops
            affine = np.array([op.affine_matrix for op in ops], dtype=np.float64)
            kept = distinct_ops(affine)
            if len(kept) == len(ops):
                return ops
            first = {}
            for i, matrix in enumerate(affine):
                first.setdefault(matrix.tobytes(), i)
            return [ops[first[matrix.tobytes()]] for matrix in kept]

        def _unique_coords(self, coords, magmoms=None, lattice=None, labels=None):
            """pymatgen's images of one species' atoms, kept unless within 1e-4 of one kept before:
            the counts checked first; then made as :func:`cgcnn.crystals.cif_fast.parse_cif_fast`
            makes them (the same values, in time that grows with the images, not their square),
            or by pymatgen where that is not sure to match (magnetic CIFs, close calls)."""
            from pymatgen.electronic_structure.core import Magmom

            source, limit, done = self._cgcnn_source, self._cgcnn_limit, self._cgcnn_sites
            affine = np.array([op.affine_matrix for op in self.symmetry_operations], dtype=np.float64)
            affine = affine.reshape(-1, 4, 4)
            if len(affine) > MAX_OPERATIONS:
                raise InputError(f"{source}: {len(affine):,} distinct symmetry operations; a space group has at "
                                 f"most {MAX_OPERATIONS} (in a conventional cell)")
            points = np.array(coords, dtype=np.float64).reshape(-1, 3)
            finite = bool(np.isfinite(points).all())
            bound, how = site_lower_bound(len(points), affine, points if finite else None, limit - done)
            if done + bound > limit:
                others = f"; {done} more of the species before" if done else ""
                raise InputError(f"{source}: at least {done + bound} sites ({how}{others}), more than the limit of "
                                 f"{limit} sites per crystal (cgcnn.crystals.MAX_SITES)")
            keep = None
            if finite and not magmoms:
                wrapped = _operate(affine, points).reshape(-1, 3)
                wrapped = wrapped - np.floor(wrapped)  # as pymatgen: i - math.floor(i)
                keep = _first_unique(wrapped)
            if keep is None:
                if len(points) * len(affine) > MAX_SLOW_IMAGES:
                    raise InputError(f"{source}: {len(points) * len(affine):,} symmetry images of one species, too "
                                     "many to merge one by one as pymatgen does here (magnetic, or many within 1e-4 "
                                     f"of one another; at most {MAX_SLOW_IMAGES:,})")
                result = super()._unique_coords(coords, magmoms=magmoms, lattice=lattice, labels=labels)
            else:
                kept = np.nonzero(keep)[0]
                labels = labels or {}
                result = ([wrapped[i].copy() for i in kept], [Magmom(0)] * len(kept),
                          [labels.get(coords[i // len(affine)], "no_label") for i in kept])
            self._cgcnn_sites = done + len(result[0])
            return result

    return BoundedCifParser
