"""The one crystal of a CIF file, read and checked (:func:`read_structure`, :func:`structure_from_bytes`).

The data folder's layout is described in :mod:`cgcnn.crystals.folder`; the crystal graph made
from the structure in :mod:`cgcnn.data.graph`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cgcnn import InputError
from cgcnn.crystals.cif_bounds import MAX_SITES
from cgcnn.crystals.folder import not_utf8
from cgcnn.crystals.members import MAX_CIF_BYTES, read_cif_bytes

if TYPE_CHECKING:  # pymatgen is imported only when a CIF is parsed
    from pymatgen.core import Structure

__all__ = ["MAX_SITES", "read_structure", "structure_from_bytes", "check_structure", "check_elements_are_real"]


def read_structure(path: str | os.PathLike, max_sites: int | None = None) -> Structure:
    """Read the one crystal of a CIF file into an ordered pymatgen ``Structure``.

    The structure is the one pymatgen's ``Structure.from_file`` gives (cell as written,
    every symmetry image, sites sorted by electronegativity), read by
    :func:`cgcnn.crystals.cif.read_cif` (a fast gemmi-based path, pymatgen's ``CifParser``
    otherwise), and checked: at least one site and at most ``max_sites``, full
    occupancies, chemical elements only, a cell of non-zero volume and no atoms closer
    than :data:`cgcnn.crystals.cif.MIN_DISTANCE` (0.5 Å).

    Parameters
    ----------
    path : path
        The CIF file.
    max_sites : int, optional
        Largest number of sites accepted (default :data:`MAX_SITES`, which bounds
        the memory a graph takes).

    Raises
    ------
    InputError
        If the file is missing, empty or unparsable, holds several data blocks with
        atoms, gives no readable symmetry, holds no sites or more than ``max_sites``,
        has partial occupancies or a species that is no element (a dummy ``X``), a
        zero-volume cell or overlapping atoms, a cell angle outside 0 ... 180 degrees or
        an occupancy of 0 or less or above 1, or is UTF-16/UTF-32 text (or holds NUL bytes);
        if it is larger than :data:`cgcnn.crystals.members.MAX_CIF_BYTES` (50 MB, refused by its
        size, unread).
    """
    path = Path(path)
    return structure_from_bytes(read_cif_bytes(path), path, max_sites)


def structure_from_bytes(data: bytes, source: str | os.PathLike, max_sites: int | None = None) -> Structure:
    """A CIF's bytes to the checked, ordered ``Structure`` of :func:`read_structure` (same parser,
    checks and messages, naming ``source``: a path, or ``archive:member``).

    ``data`` is UTF-8 text (bad bytes replaced, line ends made ``\\n``; UTF-16/UTF-32 refused).

    Raises
    ------
    InputError
        The cases of :func:`read_structure`.
    """
    from cgcnn.crystals.cif import read_cif

    if not data:
        raise InputError(f"{source}: empty file")
    if len(data) > MAX_CIF_BYTES:
        raise InputError(f"{source}: {len(data):,} bytes, more than the limit of {MAX_CIF_BYTES:,} bytes per CIF "
                         "(cgcnn.crystals.MAX_CIF_BYTES)")
    problem = not_utf8(data)
    if problem:
        raise InputError(f"{source}: {problem}")
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")  # as read_text
    limit = MAX_SITES if max_sites is None else max_sites
    return check_structure(read_cif(source, text, max_sites=limit), source, max_sites)


def check_structure(structure: Structure, source: str | os.PathLike, max_sites: int | None = None) -> Structure:
    """The checks every crystal passes, whatever its format; returns ``structure``.

    Raises
    ------
    InputError
        No sites, more than ``max_sites`` (default :data:`MAX_SITES`), partial
        occupancies, a species that is no chemical element, a zero-volume cell or overlapping atoms
        (:func:`cgcnn.crystals.check_geometry`); the message names ``source``.
    """
    from cgcnn.crystals.cif import check_geometry

    if len(structure) == 0:
        raise InputError(f"{source}: no atomic sites")
    limit = MAX_SITES if max_sites is None else max_sites
    if len(structure) > limit:
        raise InputError(f"{source}: {len(structure)} sites, more than the limit of {limit} sites per crystal "
                         "(cgcnn.crystals.MAX_SITES)")
    if not structure.is_ordered:
        raise InputError(f"{source}: partial occupancies are not supported (CGCNN needs an ordered structure)")
    check_elements_are_real(structure, Path(str(source)))
    check_geometry(structure, Path(str(source)))
    return structure


def check_elements_are_real(structure: Structure, path: Path) -> None:
    """Refuse dummy species (``X``, ``D``-like placeholders pymatgen reads as ``DummySpecies``)."""
    from pymatgen.core import DummySpecies

    for idx, site in enumerate(structure):
        specie = site.specie
        if isinstance(specie, DummySpecies) or not 1 <= getattr(specie, "Z", 0) <= 118:
            label = getattr(site, "label", None) or site.species_string
            raise InputError(f"{path}: site {idx + 1} ({label}) has species {specie.symbol!r}, "
                             "not a chemical element (a dummy atom?)")
