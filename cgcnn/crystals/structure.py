"""The one crystal of a structure file, read and checked (:func:`read_structure`, :func:`structure_from_bytes`):
a CIF (:mod:`cgcnn.crystals.cif`), or a POSCAR, a pymatgen JSON or a one-frame extxyz file
(:mod:`cgcnn.crystals.formats`), by the file's name (:func:`cgcnn.crystals.structure_format`).

The data folder's layout is described in :mod:`cgcnn.crystals.folder`; the crystal graph made
from the structure in :mod:`cgcnn.data.graph`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cgcnn import InputError
from cgcnn.crystals.checks import check_elements_are_real, check_structure
from cgcnn.crystals.cif import read_cif
from cgcnn.crystals.cif_bounds import MAX_SITES
from cgcnn.crystals.folder import locate
from cgcnn.crystals.formats import structures_from_text
from cgcnn.crystals.frames import read_frame
from cgcnn.crystals.members import MAX_CIF_BYTES, not_utf8, read_cif_bytes
from cgcnn.crystals.names import structure_format

if TYPE_CHECKING:  # pymatgen is imported only when a CIF is parsed
    from pymatgen.core import Structure

__all__ = ["MAX_SITES", "read_crystal", "read_structure", "structure_from_bytes", "check_structure",
           "check_elements_are_real"]
# check_structure and check_elements_are_real live in cgcnn.crystals.checks; kept here for old imports


def read_structure(path: str | os.PathLike, max_sites: int | None = None) -> Structure:
    """Read the one crystal of a structure file into an ordered pymatgen ``Structure``.

    The format is the file name's (:func:`cgcnn.crystals.structure_format`): a POSCAR (``POSCAR*``,
    ``CONTCAR*``, ``*.vasp``), a pymatgen JSON (``*.json``) or a one-frame extxyz file is read by
    :func:`cgcnn.crystals.structures_from_text` and passes the same checks; any other name is read as a CIF.

    A CIF's structure is the one pymatgen's ``Structure.from_file`` gives (cell as written,
    every symmetry image, sites sorted by electronegativity), read by
    :func:`cgcnn.crystals.cif.read_cif` (a fast gemmi-based path, pymatgen's ``CifParser``
    otherwise), and checked: at least one site and at most ``max_sites``, full
    occupancies, chemical elements only, a cell of non-zero volume and no atoms closer
    than :data:`cgcnn.crystals.cif.MIN_DISTANCE` (0.5 Å).

    Parameters
    ----------
    path : path
        The structure file.
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
        size, unread). Another format: a file its reader cannot read, an extxyz file of several frames,
        the checks' faults (:func:`cgcnn.crystals.check_structure`).
    """
    path = Path(path)
    fmt = structure_format(path)
    return structure_from_bytes(read_cif_bytes(path), path, max_sites, "cif" if fmt is None else fmt)


def structure_from_bytes(data: bytes, source: str | os.PathLike, max_sites: int | None = None,
                         fmt: str = "cif") -> Structure:
    """A structure file's bytes to the checked, ordered ``Structure`` of :func:`read_structure` (same parser,
    checks and messages, naming ``source``: a path, or ``archive:member``).

    ``data`` is UTF-8 text (bad bytes replaced, line ends made ``\\n``; UTF-16/UTF-32 refused); ``fmt`` one
    of :data:`cgcnn.crystals.STRUCTURE_FORMATS` (``extxyz``: a file of one frame).

    Raises
    ------
    InputError
        The cases of :func:`read_structure`.
    """
    if not data:
        raise InputError(f"{source}: empty file")
    if len(data) > MAX_CIF_BYTES:
        what = "CIF" if fmt == "cif" else "structure file"
        raise InputError(f"{source}: {len(data):,} bytes, more than the limit of {MAX_CIF_BYTES:,} bytes per {what} "
                         "(cgcnn.crystals.MAX_CIF_BYTES)")
    problem = not_utf8(data)
    if problem:
        raise InputError(f"{source}: {problem}")
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")  # as read_text
    if fmt != "cif":
        crystals = structures_from_text(text, str(source), fmt, max_sites)
        if len(crystals) != 1:
            raise InputError(f"{source}: {len(crystals)} frames; one crystal is read here (a data folder's "
                             "extxyz frames are listed by cgcnn.crystals.open_input)")
        return crystals[0][1]
    limit = MAX_SITES if max_sites is None else max_sites
    return check_structure(read_cif(source, text, max_sites=limit), source, max_sites)


def read_crystal(folder: str | os.PathLike, cif_id: str, max_sites: int | None = None) -> Structure:
    """The checked, ordered ``Structure`` of the crystal ``cif_id`` of a data folder: its own file
    (:func:`read_structure`) or its extxyz frame (:func:`cgcnn.crystals.frames.read_frame`), as
    :func:`cgcnn.crystals.locate` finds it.

    Raises
    ------
    InputError
        The faults of :func:`read_structure` or of the frame, naming the file (and frame).
    """
    path, frame = locate(folder, cif_id)
    if frame is not None:
        return read_frame(path, frame, max_sites)
    return read_structure(path, max_sites)
