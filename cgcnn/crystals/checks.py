"""The checks every crystal passes, whatever its format (:func:`check_structure`): at least one site and
at most :data:`cgcnn.crystals.MAX_SITES`, full occupancies, chemical elements only
(:func:`check_elements_are_real`), a cell of non-zero volume and no overlapping atoms
(:func:`cgcnn.crystals.check_geometry`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cgcnn import InputError
from cgcnn.crystals.cif import check_geometry
from cgcnn.crystals.cif_bounds import MAX_SITES

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["check_structure", "check_elements_are_real"]


def check_structure(structure: Structure, source: str | os.PathLike, max_sites: int | None = None) -> Structure:
    """The checks every crystal passes, whatever its format; returns ``structure``.

    Raises
    ------
    InputError
        No sites, more than ``max_sites`` (default :data:`MAX_SITES`), partial
        occupancies, a species that is no chemical element, a zero-volume cell or overlapping atoms
        (:func:`cgcnn.crystals.check_geometry`); the message names ``source``.
    """
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
    """Refuse dummy species (``X``, ``D``-like placeholders pymatgen reads as ``DummySpecies``).

    Raises
    ------
    InputError
        Naming ``path``, the site (1-based) and its species.
    """
    from pymatgen.core import DummySpecies

    for idx, site in enumerate(structure):
        specie = site.specie
        if isinstance(specie, DummySpecies) or not 1 <= getattr(specie, "Z", 0) <= 118:
            label = getattr(site, "label", None) or site.species_string
            raise InputError(f"{path}: site {idx + 1} ({label}) has species {specie.symbol!r}, "
                             "not a chemical element (a dummy atom?)")
