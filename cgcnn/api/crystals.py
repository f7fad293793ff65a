"""The crystals a Python user has, as the screening engine reads them (:class:`cgcnn.crystals.CrystalText`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from cgcnn import InputError
from cgcnn.crystals import CrystalText, open_input, structure_format, structure_from_object, structures_from_text

__all__ = ["crystals_of"]

_ID_KEYS = ("cif_id", "material_id", "id", "name")


def _own_id(obj) -> str | None:
    """A Structure's ``properties`` or an Atoms' ``info`` id, if it has one."""
    meta = getattr(obj, "properties", None) if not hasattr(obj, "info") else obj.info
    if isinstance(meta, dict):
        for key in _ID_KEYS:
            value = meta.get(key)
            if isinstance(value, str | int) and str(value).strip():
                return str(value).strip()
    return None


def _of_file(path: Path) -> Iterator[CrystalText]:
    fmt = structure_format(path)
    if fmt is None:
        raise InputError(f"{path}: not a structure file this tool reads (.cif, POSCAR/CONTCAR/.vasp, .json, "
                         ".extxyz/.xyz)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    stem = path.name if fmt == "poscar" and "." not in path.name else path.stem
    if fmt == "cif":
        yield CrystalText(cif_id=stem, source=str(path), data=data)
        return
    for suffix, structure in structures_from_text(data.decode("utf-8", errors="replace"), str(path), fmt):
        if not suffix:  # one crystal in the file
            cif_id, source = stem, str(path)
        elif suffix.startswith(":"):  # a frame without an id of its own: FILE:INDEX
            cif_id, source = stem + suffix, f"{path}{suffix}"
        else:
            cif_id, source = suffix, f"{path}:{suffix}"
        yield CrystalText(cif_id=cif_id, source=source, data=None, structure=structure)


def _items(structures) -> Iterator[tuple[str | None, CrystalText]]:
    if isinstance(structures, str | os.PathLike):
        path = Path(structures)
        if path.is_dir() or not path.is_file() or structure_format(path) is None:
            data = open_input(path)  # a data folder or an archive of CIFs: its own ids, in order
            for _, chunk in data.chunks(1000, set()):
                for crystal in chunk:
                    yield crystal.cif_id, crystal
            return
        structures = [path]
    for position, obj in enumerate(structures):
        if isinstance(obj, str | os.PathLike):
            for crystal in _of_file(Path(obj)):
                yield crystal.cif_id, crystal
        else:
            own = _own_id(obj)
            name = own if own is not None else str(position)
            structure = structure_from_object(obj, f"crystal {name}")
            yield own, CrystalText(cif_id=name, source=f"crystal {name}", data=None, structure=structure)


def crystals_of(structures, ids=None) -> Iterator[CrystalText]:
    """The crystals of ``structures``, one :class:`cgcnn.crystals.CrystalText` each, lazily and in order.

    Parameters
    ----------
    structures : iterable, or path
        pymatgen ``Structure`` and ASE ``Atoms`` (each checked as a CIF's crystal, sorted as ``CifParser``
        sorts a CIF's sites; :func:`cgcnn.crystals.structure_from_object`), and paths of structure files:
        ``.cif`` (read later, as screening reads it), ``POSCAR``/``CONTCAR``/``*.vasp``, pymatgen ``*.json``,
        multi-frame ``*.extxyz``/``*.xyz`` (:func:`cgcnn.crystals.structures_from_text`). One path of a
        data folder or an archive of CIFs gives its crystals (:func:`cgcnn.crystals.open_input`).
    ids : sequence of str, optional
        ``cif_id`` of each crystal; default: the object's own id (``Structure.properties`` or
        ``Atoms.info``: ``cif_id``, ``material_id``, ``id`` or ``name``), a file's name without its
        suffix (``FILE:INDEX`` or the frame's id for extxyz frames), else the position.

    Raises
    ------
    InputError
        A crystal that cannot be read or checked, naming it; ``ids`` of another length than the crystals.
    """
    given = None if ids is None else [str(i) for i in ids]
    count = 0
    for count, (_, crystal) in enumerate(_items(structures), start=1):
        if given is not None:
            if count > len(given):
                raise InputError(f"ids: {len(given)} given for more crystals")
            crystal.cif_id = given[count - 1]
        yield crystal
    if given is not None and count != len(given):
        raise InputError(f"ids: {len(given)} given for {count} crystals")
