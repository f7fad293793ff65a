"""Crystal structures in the formats people have, besides CIF: VASP ``POSCAR``/``CONTCAR``/``*.vasp``,
pymatgen's JSON (``Structure.as_dict()``, as the Materials Project serves it) and multi-frame
extended XYZ (``*.extxyz``, ``*.xyz`` with a lattice), and the objects of a Python session
(pymatgen ``Structure``, ASE ``Atoms``).

Every structure, whatever its format, goes through the checks of a CIF's
(:func:`check_structure`: at least one site and at most ``MAX_SITES``, ordered, chemical
elements only, a cell of non-zero volume, no overlapping atoms) and is sorted as pymatgen's
``CifParser`` sorts a CIF's sites (``Structure.get_sorted_structure``: by electronegativity, then
symbol), so that a crystal gives the same graph, and the same prediction, in any format.

Readers: pymatgen's ``Poscar`` and ``Structure.from_dict``, ASE's ``ase.io.read`` (extxyz) and
pymatgen's ``AseAtomsAdaptor`` (S. P. Ong et al., Comput. Mater. Sci. 68, 314 (2013);
A. H. Larsen et al., J. Phys.: Condens. Matter 29, 273002 (2017)).
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from cgcnn import InputError
from cgcnn.crystals.checks import check_structure
from cgcnn.crystals.names import STRUCTURE_FORMATS, structure_format

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["ID_KEYS", "STRUCTURE_FORMATS", "structure_format", "structures_from_text", "structure_from_object",
           "read_frames", "frame_name", "own_id"]

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sorted(structure: Structure) -> Structure:
    """Sites sorted as ``CifParser`` sorts a CIF's (by electronegativity, then symbol; stable)."""
    return structure.get_sorted_structure()


def structures_from_text(text: str, source: str, fmt: str, max_sites: int | None = None) -> list[tuple[str, Any]]:
    """The crystals of one non-CIF structure file's text, checked and sorted.

    Parameters
    ----------
    text : str
        The file's content.
    source : str
        Names the file in messages (a path, or ``archive:member``).
    fmt : {"poscar", "json", "extxyz"}
    max_sites : int, optional
        As :func:`check_structure`.

    Returns
    -------
    list of (suffix, Structure)
        One crystal (suffix ``""``) for ``poscar`` and ``json``; one per frame for ``extxyz``, its
        suffix the frame's ``info`` id (``cif_id``, ``material_id``, ``id`` or ``name``) or
        ``:INDEX`` (0-based).

    Raises
    ------
    InputError
        A file its reader cannot read, an extxyz frame without a lattice (three cell vectors and
        periodic boundaries), or the faults of :func:`check_structure` (naming the frame).
    """
    if fmt == "poscar":
        from pymatgen.io.vasp import Poscar

        try:
            structure = Poscar.from_str(text, read_velocities=False).structure
        except Exception as exc:  # pymatgen raises many types on bad files
            raise InputError(f"{source}: not a readable POSCAR ({_first_line(exc)})") from None
        return [("", _sorted(check_structure(structure, source, max_sites)))]
    if fmt == "json":
        from pymatgen.core import Structure

        try:
            raw = json.loads(text)
            if isinstance(raw, dict) and isinstance(raw.get("structure"), dict):  # a Materials Project document
                raw = raw["structure"]
            if not isinstance(raw, dict) or "lattice" not in raw or "sites" not in raw:
                raise ValueError("no 'lattice' and 'sites': not a pymatgen Structure.as_dict()")
            structure = Structure.from_dict(raw)
        except Exception as exc:
            raise InputError(f"{source}: not a readable pymatgen structure JSON ({_first_line(exc)})") from None
        return [("", _sorted(check_structure(structure, source, max_sites)))]
    if fmt == "extxyz":
        return [(suffix, structure_from_object(atoms, frame_name(source, source, suffix)[1], max_sites))
                for suffix, atoms in read_frames(text, source)]
    raise InputError(f"{source}: unknown structure format {fmt!r}; one of {', '.join(STRUCTURE_FORMATS)}")


def read_frames(text: str, source: str) -> list[tuple[str, Any]]:
    """The frames of an extended XYZ file's text, read by ASE (``ase.io.read(..., format="extxyz")``), unchecked.

    Returns
    -------
    list of (suffix, ase.Atoms)
        In file order; ``suffix`` is the frame's id from its ``info`` (``cif_id``, ``material_id``, ``id`` or
        ``name``), else ``:INDEX`` (0-based); :func:`frame_name` makes its ``cif_id`` and source from it.

    Raises
    ------
    InputError
        A file ASE cannot read, or one without frames, naming ``source``.
    """
    from ase.io import read

    try:
        frames = read(io.StringIO(text), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types on bad files
        raise InputError(f"{source}: not a readable extended XYZ file ({_first_line(exc)})") from None
    if not frames:
        raise InputError(f"{source}: no frames")
    return [(_frame_id(atoms, k), atoms) for k, atoms in enumerate(frames)]


def frame_name(file_name: str, source: str | os.PathLike, suffix: str) -> tuple[str, str]:
    """The ``cif_id`` and the source (for messages) of a frame of the extxyz file ``file_name`` (a file name,
    ``source`` naming the file: a path, or ``archive:member``), from its suffix (:func:`read_frames`): the
    frame's own id and ``SOURCE:ID``, or ``STEM:INDEX`` (the file name without its suffix) and ``SOURCE:INDEX``."""
    if suffix.startswith(":"):
        base = str(file_name).replace("\\", "/").rsplit("/", 1)[-1]
        stem = base.rsplit(".", 1)[0] if "." in base else base
        return stem + suffix, f"{source}{suffix}"
    return suffix, f"{source}:{suffix}"


#: The keys of a Structure's ``properties`` or an Atoms' ``info`` that give a crystal's own id, in order.
ID_KEYS = ("cif_id", "material_id", "id", "name")


def own_id(obj: Any) -> str | None:
    """The id a pymatgen ``Structure`` (``properties``) or an ASE ``Atoms`` (``info``) carries under one of
    :data:`ID_KEYS` (a non-empty string or an integer, stripped), or None."""
    meta = obj.info if hasattr(obj, "info") else getattr(obj, "properties", None)
    if isinstance(meta, dict):
        for key in ID_KEYS:
            value = meta.get(key)
            if isinstance(value, str | int) and str(value).strip():
                return str(value).strip()
    return None


def _frame_id(atoms, index: int) -> str:
    own = own_id(atoms)
    return own if own is not None else f":{index}"


def structure_from_object(obj: Any, source: str, max_sites: int | None = None) -> Structure:
    """A pymatgen ``Structure`` or ASE ``Atoms`` of a Python session as a checked, sorted ``Structure``.

    ASE ``Atoms`` go through pymatgen's ``AseAtomsAdaptor``; they need a lattice (three cell vectors
    and periodic boundaries in all three directions).

    Raises
    ------
    InputError
        Another type, Atoms without a lattice, or the faults of :func:`check_structure`, naming ``source``.
    """
    from pymatgen.core import Structure

    atoms_type = sys.modules["ase"].Atoms if "ase" in sys.modules else ()  # an Atoms means ASE is imported
    if isinstance(obj, Structure):
        structure = obj.copy()
    elif isinstance(obj, atoms_type):
        cell = obj.get_cell()
        if cell.rank != 3 or not all(obj.get_pbc()):
            raise InputError(f"{source}: ASE Atoms without a lattice (three cell vectors, periodic in x, y and z); "
                             "CGCNN needs a crystal")
        from pymatgen.io.ase import AseAtomsAdaptor

        try:
            structure = AseAtomsAdaptor.get_structure(obj)
        except Exception as exc:
            raise InputError(f"{source}: cannot convert the ASE Atoms ({_first_line(exc)})") from None
    else:
        raise InputError(f"{source}: a {type(obj).__name__}, not a pymatgen Structure, ASE Atoms or a file path")
    return _sorted(check_structure(structure, source, max_sites))
