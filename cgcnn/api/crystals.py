"""The crystals a Python user has, as the screening engine reads them (:class:`cgcnn.crystals.CrystalText`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from cgcnn import InputError
from cgcnn.crystals import (
    CrystalInput,
    CrystalText,
    file_frames,
    open_input,
    own_id,
    read_cif_bytes,
    structure_format,
    structure_from_object,
    structure_id,
)

__all__ = ["crystals_of", "open_structures"]

def _of_file(path: Path) -> Iterator[CrystalText]:
    """The crystals of one structure file: its bytes and format (read as a folder's file is read), or the
    checked structures of an extxyz file's frames."""
    fmt = structure_format(path)
    if fmt is None:
        raise InputError(f"{path}: not a structure file this tool reads (.cif, POSCAR/CONTCAR/.vasp, .json, "
                         ".extxyz/.xyz)")
    data = read_cif_bytes(path)
    if fmt != "extxyz":
        yield CrystalText(cif_id=structure_id(path.name), source=str(path), data=data, fmt=fmt)
        return
    for cif_id, source, atoms in file_frames(data, path.name, str(path)):
        yield CrystalText(cif_id=cif_id, source=source, data=None, structure=structure_from_object(atoms, source),
                          fmt="extxyz")


def open_structures(structures):
    """``structures`` as :func:`crystals_of` reads them: one path of a data folder or an archive opened
    (:func:`cgcnn.crystals.open_input`: a :class:`cgcnn.crystals.CrystalInput`, whose folder's
    ``atom_init.json`` counts as for the command line), one structure file as a list of it, anything else as is.

    Raises
    ------
    InputError
        The faults of :func:`cgcnn.crystals.open_input`.
    """
    if isinstance(structures, str | os.PathLike):
        path = Path(structures)
        if path.is_dir() or not path.is_file() or structure_format(path) is None:
            return open_input(path)  # a data folder or an archive: its own ids, in order
        return [path]
    return structures


def _items(structures, given: list[str] | None) -> Iterator[CrystalText]:
    structures = open_structures(structures)
    if isinstance(structures, CrystalInput):
        for _, chunk in structures.chunks(1000, set()):
            yield from chunk
        return
    count = 0  # crystals so far (a file of frames gives several)
    for position, obj in enumerate(structures):
        if isinstance(obj, str | os.PathLike):
            for crystal in _of_file(Path(obj)):
                count += 1
                yield crystal
        else:
            own = own_id(obj)
            name = own if own is not None else str(position)
            if given is not None and count < len(given):
                name = given[count]  # the id given names it in messages too
            structure = structure_from_object(obj, f"crystal {name}")
            count += 1
            yield CrystalText(cif_id=name, source=f"crystal {name}", data=None, structure=structure)


def crystals_of(structures, ids=None) -> Iterator[CrystalText]:
    """The crystals of ``structures``, one :class:`cgcnn.crystals.CrystalText` each, lazily and in order.

    Parameters
    ----------
    structures : iterable, path, or CrystalInput
        pymatgen ``Structure`` and ASE ``Atoms`` (each checked as a CIF's crystal, sorted as ``CifParser``
        sorts a CIF's sites; :func:`cgcnn.crystals.structure_from_object`), and paths of structure files:
        ``.cif``, ``POSCAR``/``CONTCAR``/``*.vasp``, pymatgen ``*.json`` (read later, as screening reads a
        folder's files), multi-frame ``*.extxyz``/``*.xyz`` (each frame a crystal, read now:
        :mod:`cgcnn.crystals.frames`). One path of a data folder or an archive of structure files gives
        its crystals (:func:`cgcnn.crystals.open_input`).
    ids : sequence of str, optional
        ``cif_id`` of each crystal; default: the object's own id (``Structure.properties`` or
        ``Atoms.info``: ``cif_id``, ``material_id``, ``id`` or ``name``), a file's name without its
        suffix (:func:`cgcnn.crystals.structure_id`; ``STEM:INDEX`` or the frame's id for extxyz frames),
        else the position.

    Raises
    ------
    InputError
        A crystal that cannot be read or checked, naming it; ``ids`` of another length than the crystals.
    """
    given = None if ids is None else [str(i) for i in ids]
    count = 0
    for count, crystal in enumerate(_items(structures, given), start=1):
        if given is not None:
            if count > len(given):
                raise InputError(f"ids: {len(given)} given for more crystals")
            crystal.cif_id = given[count - 1]
        yield crystal
    if given is not None and count != len(given):
        raise InputError(f"ids: {len(given)} given for {count} crystals")
