"""Structure files known by their names: the format of a file (:func:`structure_format`) and the ``cif_id``
of a single-crystal file (:func:`structure_id`).

Formats, by file name (any case of a suffix):

- ``cif``: ``*.cif``;
- ``poscar``: VASP's ``POSCAR*``, ``CONTCAR*`` and ``*.vasp``;
- ``json``: pymatgen's ``Structure.as_dict()`` (or a Materials Project document holding one under
  ``structure``) in ``*.json``, except ``atom_init*.json`` (atom feature tables) and ``id_prop*.json``
  (:data:`NOT_STRUCTURES`);
- ``extxyz``: extended XYZ, ``*.extxyz`` and ``*.xyz``, each frame one crystal.

Nothing here reads a file; :mod:`cgcnn.crystals.formats` reads them.
"""

from __future__ import annotations

import os

__all__ = ["NOT_STRUCTURES", "STRUCTURE_FORMATS", "SINGLE_SUFFIXES", "structure_format", "structure_id"]

#: Formats read, by file name: ``cif`` (``*.cif``), ``poscar`` (``POSCAR*``, ``CONTCAR*``, ``*.vasp``),
#: ``json`` (``*.json``), ``extxyz`` (``*.extxyz``, ``*.xyz``; each frame one crystal).
STRUCTURE_FORMATS = ("cif", "poscar", "json", "extxyz")

#: Beginnings of the names of a data folder's JSON files that hold no crystal (any case): ``atom_init.json``
#: (an atom feature table, or another one named ``atom_init_*.json``) and ``id_prop*.json``.
NOT_STRUCTURES = ("atom_init", "id_prop")

#: Suffixes of the files that hold one crystal named by the file (``<cif_id><suffix>``), in the order a
#: data folder's ``<cif_id>`` is looked for (:func:`cgcnn.crystals.cif_file`).
SINGLE_SUFFIXES = (".cif", ".vasp", ".json")


def structure_format(name: str | os.PathLike) -> str | None:
    """The format of a structure file by its name (:data:`STRUCTURE_FORMATS`), or None for another file
    (``atom_init.json``, ``id_prop.csv``, macOS ``._*`` metadata, anything else)."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    if base.startswith("._"):  # macOS metadata beside a file in an archive
        return None
    lower = base.lower()
    if lower.endswith(".cif") and len(base) > 4:
        return "cif"
    if (lower.endswith(".vasp") and len(base) > 5) or base.startswith(("POSCAR", "CONTCAR")):
        return "poscar"
    if lower.endswith(".json") and len(base) > 5 and not lower.startswith(NOT_STRUCTURES):
        return "json"
    if lower.endswith((".extxyz", ".xyz")):
        return "extxyz"
    return None


def structure_id(name: str | os.PathLike) -> str | None:
    """The ``cif_id`` of a file holding one crystal: its name without ``.cif``, ``.vasp`` or ``.json``
    (any case), or the whole name of a ``POSCAR*``/``CONTCAR*`` file without such a suffix
    (``POSCAR_NaCl``); None for an extxyz file (its frames have their own ids) or another file."""
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    fmt = structure_format(base)
    if fmt is None or fmt == "extxyz":
        return None
    lower = base.lower()
    for suffix in SINGLE_SUFFIXES:
        if lower.endswith(suffix):
            return base[:-len(suffix)]
    return base  # POSCAR*, CONTCAR*
