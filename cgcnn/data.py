"""The one crystal of a CIF file, read and checked (:func:`read_structure`); and, by their old
names, the data modules' public names.

The data folder's layout is described in :mod:`cgcnn.folder`, the crystal graph in
:mod:`cgcnn.graph`.  Rows keep their ``id_prop.csv`` order everywhere.

Where things live (every name below stays importable from here):

- :mod:`cgcnn.folder`: ``id_prop.csv`` read and checked, ``<cif_id>.cif`` found, ``atom_init.json`` read;
- :mod:`cgcnn.graph`: graph parameters, neighbour lists, Gaussian edge features;
- :mod:`cgcnn.graphcache`: the on-disk graph cache (``--cache-dir``);
- :mod:`cgcnn.dataset`: :class:`CIFData`, :func:`collate_pool`, :func:`build_graphs`;
- here: a CIF's structure read and checked (:func:`read_structure`, :data:`MAX_SITES`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from cgcnn import InputError

# the names of cgcnn.data before it was split, re-exported: code importing them from here keeps working
from cgcnn.folder import (  # noqa: F401
    LOG10_KAPPA_RANGE,
    _atom_table_from_dict,
    _not_utf8,
    atom_init_digest,
    check_log10_kappa,
    cif_file,
    load_atom_init,
    read_id_prop,
)
from cgcnn.graph import (  # noqa: F401
    MAX_NEIGHBOURS,
    GaussianDistance,
    Graph,
    GraphParams,
    build_graph,
    check_neighbour_count,
)
from cgcnn.graphcache import CACHE_SUFFIX, read_cached_graph, write_cached_graph  # noqa: F401

if TYPE_CHECKING:  # pymatgen is imported only when a CIF is parsed (cached graphs need none)
    from pymatgen.core import Structure

    from cgcnn.dataset import CIFData, build_graphs, collate_pool  # noqa: F401 (see __getattr__)

__all__ = [
    "MAX_SITES",
    "GraphParams",
    "GaussianDistance",
    "Graph",
    "load_atom_init",
    "read_id_prop",
    "cif_file",
    "LOG10_KAPPA_RANGE",
    "check_log10_kappa",
    "MAX_NEIGHBOURS",
    "read_structure",
    "check_neighbour_count",
    "build_graph",
    "CIFData",
    "collate_pool",
    "build_graphs",
]


_DATASET_NAMES = ("CIFData", "build_graphs", "collate_pool")


def __getattr__(name: str):
    """``CIFData``, ``build_graphs`` and ``collate_pool`` from :mod:`cgcnn.dataset`, imported when
    first asked for: reading a structure (here) needs no torch, and the graph-building processes
    of ``--train 0``, forked before torch is imported, never import it."""
    if name in _DATASET_NAMES:
        import cgcnn.dataset

        return getattr(cgcnn.dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MAX_SITES = 5000
"""Largest crystal, in sites per cell, that :func:`read_structure` accepts by default.

A crystal's memory grows linearly with its number of sites N: the neighbour search
within 8 Å (about 90 pairs per site in rocksalt NaCl) and the N x 12 x 41 edge
features (2 kB per site as float32, twice that while they are computed).  Building
the graph of a 5000-site NaCl supercell takes about 70 MB and 0.3 s; a batch holds
up to ``batch_size`` such crystals.  A larger cell, usually a mistake (a whole
slab or nanoparticle instead of a unit cell), is refused with a one-line error
giving its number of sites and the limit.  Pass ``max_sites`` to
:class:`CIFData` or :func:`read_structure` for another limit.
"""


def read_structure(path: str | os.PathLike, max_sites: int | None = None) -> Structure:
    """Read the one crystal of a CIF file into an ordered pymatgen ``Structure``.

    The structure is the one pymatgen's ``Structure.from_file`` gives (cell as written,
    every symmetry image, sites sorted by electronegativity), read by
    :func:`cgcnn.cif.read_cif` (a fast gemmi-based path, pymatgen's ``CifParser``
    otherwise), and checked: at least one site and at most ``max_sites``, full
    occupancies, chemical elements only, a cell of non-zero volume and no atoms closer
    than :data:`cgcnn.cif.MIN_DISTANCE` (0.5 Å).

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
        an occupancy of 0 or less or above 1, or is UTF-16/UTF-32 text (or holds NUL bytes).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return structure_from_bytes(data, path, max_sites)


def structure_from_bytes(data: bytes, source: str | os.PathLike, max_sites: int | None = None) -> Structure:
    """A CIF's bytes to the checked, ordered ``Structure`` of :func:`read_structure` (same parser,
    checks and messages, naming ``source``: a path, or ``archive:member``).

    ``data`` is UTF-8 text (bad bytes replaced, line ends made ``\\n``; UTF-16/UTF-32 refused).

    Raises
    ------
    InputError
        The cases of :func:`read_structure`.
    """
    from cgcnn.cif import check_geometry, read_cif

    if not data:
        raise InputError(f"{source}: empty file")
    problem = _not_utf8(data)
    if problem:
        raise InputError(f"{source}: {problem}")
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")  # as read_text
    structure = read_cif(source, text)
    if len(structure) == 0:
        raise InputError(f"{source}: no atomic sites")
    limit = MAX_SITES if max_sites is None else max_sites
    if len(structure) > limit:
        raise InputError(f"{source}: {len(structure)} sites, more than the limit of {limit} sites per crystal "
                         "(cgcnn.data.MAX_SITES)")
    if not structure.is_ordered:
        raise InputError(f"{source}: partial occupancies are not supported (CGCNN needs an ordered structure)")
    _check_elements_are_real(structure, Path(source))
    check_geometry(structure, Path(source))
    return structure


def _check_elements_are_real(structure: Structure, path: Path) -> None:
    """Refuse dummy species (``X``, ``D``-like placeholders pymatgen reads as ``DummySpecies``)."""
    from pymatgen.core import DummySpecies

    for idx, site in enumerate(structure):
        specie = site.specie
        if isinstance(specie, DummySpecies) or not 1 <= getattr(specie, "Z", 0) <= 118:
            label = getattr(site, "label", None) or site.species_string
            raise InputError(f"{path}: site {idx + 1} ({label}) has species {specie.symbol!r}, "
                             "not a chemical element (a dummy atom?)")
