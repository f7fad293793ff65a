"""Crystal graphs from CIF files, numerically identical to upstream CGCNN.

A data folder follows the CGCNN convention: ``id_prop.csv`` (no header,
``cif_id,target``), one ``<cif_id>.cif`` per row and ``atom_init.json`` (keys are
atomic numbers as strings, values equal-length feature lists).  For prediction,
``id_prop.csv`` may hold ids only, or be absent (then every ``*.cif``, sorted by
name, is used).  ``<cif_id>.CIF`` (any case of the suffix) is read where
``<cif_id>.cif`` is absent; a ``cif_id`` is a file name in the folder, never a path.

Graph (Xie & Grossman, PRL 120, 145301 (2018), Eq. 1 and Supplementary):
every site's neighbours within ``radius`` under periodic boundaries, sorted by
distance with a *stable* sort, the nearest ``max_num_nbr`` kept; a site with fewer
is padded with index 0 and distance ``radius + 1``.  Edge features are the
Gaussian expansion ``exp(-(d - mu_k)^2 / step^2)``, ``mu_k = arange(dmin,
radius + step, step)``.

Rows keep their ``id_prop.csv`` order everywhere.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cgcnn import InputError
from cgcnn.files import missing_reason

if TYPE_CHECKING:  # pymatgen is imported only when a CIF is parsed (cached graphs need none)
    from pymatgen.core import Structure

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


@dataclass(frozen=True)
class GraphParams:
    """Parameters of the crystal graph (upstream defaults).

    Parameters
    ----------
    radius : float
        Neighbour cut-off radius in Å (8).
    max_num_nbr : int
        Neighbours kept per site, M (12).
    dmin : float
        First Gaussian centre in Å (0).
    step : float
        Spacing and width of the Gaussians in Å (0.2).
    """

    radius: float = 8.0
    max_num_nbr: int = 12
    dmin: float = 0.0
    step: float = 0.2

    @property
    def nbr_fea_len(self) -> int:
        """Number of Gaussian edge features (41 for the defaults)."""
        return len(GaussianDistance(self.dmin, self.radius, self.step).filter)

    def as_dict(self) -> dict:
        """The parameters as a plain dict (stored in checkpoints)."""
        return {k: (float(v) if isinstance(v, float) else int(v)) for k, v in asdict(self).items()}


class GaussianDistance:
    """Expand distances in a basis of Gaussians (upstream ``GaussianDistance``).

    ``exp(-(d - mu_k)^2 / var^2)`` with ``mu_k = np.arange(dmin, dmax + step, step)``
    and ``var = step`` unless given.

    Raises
    ------
    ValueError
        If ``dmin >= dmax`` or ``dmax - dmin <= step``.
    """

    def __init__(self, dmin: float, dmax: float, step: float, var: float | None = None):
        if not (dmin < dmax and dmax - dmin > step):
            raise ValueError(f"bad Gaussian basis: dmin {dmin}, dmax {dmax}, step {step}")
        self.filter = np.arange(dmin, dmax + step, step)
        self.var = step if var is None else var

    def expand(self, distances: np.ndarray) -> np.ndarray:
        """Distances of any shape ``(...)`` in Å to features of shape ``(..., K)``."""
        return np.exp(-((distances[..., np.newaxis] - self.filter) ** 2) / self.var**2)


def load_atom_init(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """Read an ``atom_init.json`` table.

    Returns
    -------
    dict
        Atomic number to feature vector (float32 ndarray of shape (orig_atom_fea_len,)).

    Raises
    ------
    InputError
        If the file is missing, not JSON, not a mapping of atomic numbers to lists,
        or its vectors differ in length.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: atom_init.json {missing_reason(path)}")
    if not path.is_file():
        raise InputError(f"{path}: is a folder or a device, not an atom_init.json file")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return _atom_table_from_dict(raw, str(path))


def _atom_table_from_dict(raw, source: str = "atom feature table") -> dict[int, np.ndarray]:
    """Check an atom feature table (parsed ``atom_init.json`` or the one a checkpoint
    stores) and return it as atomic number → float32 vector.  ``source`` names it in
    messages.  Raises :class:`InputError` as :func:`load_atom_init` describes."""
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{source}: expected a JSON object of atomic number -> feature list")
    table: dict[int, np.ndarray] = {}
    length = None
    for key, value in raw.items():
        try:
            z = int(key)
            vec = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"{source}: entry {key!r} is not atomic number -> list of numbers") from None
        if vec.ndim != 1:
            raise InputError(f"{source}: entry {key!r} is not a flat list of numbers")
        if not np.isfinite(vec).all():
            raise InputError(f"{source}: entry {key!r} holds NaN or infinite values")
        if length is None:
            length = len(vec)
        elif len(vec) != length:
            raise InputError(
                f"{source}: feature vectors differ in length ({length} for the first, {len(vec)} for {key!r})"
            )
        table[z] = vec
    return table


def atom_init_digest(table: dict[int, np.ndarray]) -> str:
    """SHA-256 of an atom feature table, independent of JSON formatting."""
    h = hashlib.sha256()
    for z in sorted(table):
        h.update(str(z).encode())
        h.update(np.asarray(table[z], dtype=np.float32).tobytes())
    return h.hexdigest()


_HEADER_WORDS = {"id", "cif_id", "cif", "material_id", "name", "structure", "formula"}


def cif_file(folder: str | os.PathLike, cif_id: str) -> Path:
    """The CIF of ``cif_id`` in ``folder``: ``<cif_id>.cif``, else ``<cif_id>.CIF`` or another
    case of the suffix; ``<cif_id>.cif`` (which does not exist) when there is none."""
    folder = Path(folder)
    path = folder / f"{cif_id}.cif"
    if path.is_file():
        return path
    upper = folder / f"{cif_id}.CIF"
    if upper.is_file():
        return upper
    try:
        for other in folder.iterdir():
            if other.stem == cif_id and other.suffix.lower() == ".cif" and other.is_file():
                return other
    except OSError:
        pass
    return path


def _check_cif_id(cif_id: str, where: str) -> None:
    """Refuse a ``cif_id`` that is a path (it would read a file outside the data folder)."""
    if "/" in cif_id or "\\" in cif_id or "\0" in cif_id or cif_id in (".", "..") or os.path.isabs(cif_id):
        raise InputError(f"{where}: cif_id {cif_id!r} is a path, not a name; each CIF must lie in the data "
                         "folder itself, as <cif_id>.cif")


def _not_utf8(data: bytes) -> str | None:
    """What a file's bytes are when they are plainly not UTF-8 or ASCII text: UTF-16 or UTF-32
    (a byte-order mark) or NUL bytes (UTF-16 without one, or binary); None otherwise."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            return f"is {name} text (it starts with a {name} byte-order mark); save it as UTF-8"
    if b"\x00" in data:
        return "holds NUL bytes (UTF-16 text without a byte-order mark, or not text); save it as UTF-8"
    return None


def _read_text_utf8(path: Path) -> str:
    """The text of ``id_prop.csv``, which must be UTF-8 (a byte-order mark is allowed).

    Raises :class:`InputError` naming the file and, where it can tell, the encoding found:
    UTF-16 or UTF-32 (a byte-order mark, or NUL bytes), or the first byte that is not
    UTF-8 with its line (Latin-1 or Windows-1252 text, usually).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    problem = _not_utf8(data)
    if problem:
        raise InputError(f"{path}: {problem}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        byte = data[exc.start]
        guess = ""
        try:
            guess = f", {data[exc.start:exc.start + 1].decode('cp1252')!r} in Windows-1252"
        except UnicodeDecodeError:
            pass
        raise InputError(f"{path}, line {line}: byte 0x{byte:02x} is not UTF-8 (Latin-1 or Windows-1252 "
                         f"text{guess}?); save it as UTF-8") from None


#: Bounds of log10 κ_L (κ_L in W m-1 K-1) at room temperature, 0.03 ... 4000: measured
#: values lie within, from about 0.05 (amorphous-like solids) to about 3000 (diamond).
#: Computed sets reach lower: 5 of the 3,330 AFLOW-AGL values are below 0.03 (the
#: lowest 0.0099, log10 -2.0), and :func:`check_log10_kappa` refuses them.
LOG10_KAPPA_RANGE = (-1.5, 3.6)


def check_log10_kappa(targets, source: str | os.PathLike, ids: Sequence[str] | None = None) -> None:
    """Refuse targets that cannot be log10 κ_L at room temperature (κ_L in W m-1 K-1).

    Every target must lie within :data:`LOG10_KAPPA_RANGE` (-1.5 ... 3.6).  Values that
    are all positive with some above 3.6 look like κ_L itself, not its log10, and the
    message says so; others name the first value outside and its crystal.  Not used by
    ``cgcnn.train``, whose targets may be any property.

    Parameters
    ----------
    targets : array-like of shape (n,)
    source : path or str
        Where the targets come from (usually the data folder's ``id_prop.csv``), for the message.
    ids : sequence of str, optional
        The crystals of ``targets``, to name the first one outside.

    Raises
    ------
    InputError
        One line naming ``source`` and what the values look like, e.g. ``values from 0.5 to
        420 look like κ_L in W m-1 K-1, not log10 κ_L: take log10 of the second column``.
    """
    values = np.asarray(targets, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return
    lo_ok, hi_ok = LOG10_KAPPA_RANGE
    outside = ~((values >= lo_ok) & (values <= hi_ok))
    if not outside.any():
        return
    fmt = lambda x: f"{x:.0f}" if 1e3 <= abs(x) < 1e15 else f"{x:.3g}"  # 4200, not 4.2e+03
    finite = values[np.isfinite(values)]
    span = f"values from {fmt(finite.min())} to {fmt(finite.max())}" if finite.size else "no finite values"
    if finite.size == values.size and (finite > 0).all() and finite.max() > hi_ok:
        raise InputError(f"{source}: {span} look like κ_L in W m-1 K-1, not log10 κ_L: take log10 of the "
                         "second column")
    first = int(np.argmax(outside))
    who = f" ({ids[first]})" if ids is not None and first < len(ids) else ""
    raise InputError(f"{source}: target {values[first]:.4g}{who} lies outside {lo_ok} ... {hi_ok}, where every "
                     f"log10 κ_L at room temperature lies ({span}); the second column must be log10 of κ_L "
                     "in W m-1 K-1")


def read_id_prop(folder: str | os.PathLike) -> tuple[list[str], np.ndarray | None]:
    """Read the ids (and targets) of a CGCNN data folder, in file order.

    Accepts blank lines, Windows line endings, surrounding spaces, a header row
    (first row whose target is not a number and whose id has no CIF), and
    ``id_prop.csv`` with ids only.  Without ``id_prop.csv`` every ``*.cif`` of the
    folder, sorted by name, is used, with no targets.

    Returns
    -------
    ids : list of str
    targets : ndarray of shape (n,) or None
        None when the folder has no targets.

    Raises
    ------
    InputError
        Missing or empty folder, a row without its CIF, duplicate ids, a target that is
        not a finite number, rows with and without targets mixed.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: data folder {missing_reason(folder)}")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    id_prop = folder / "id_prop.csv"
    if not id_prop.exists():
        if os.path.lexists(id_prop):  # a broken symbolic link or a loop: not "no id_prop.csv"
            raise InputError(f"{id_prop}: {missing_reason(id_prop)}")
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".cif" and p.is_file()),
                       key=lambda p: p.name)
        seen: dict[str, Path] = {}
        for p in files:
            if p.stem in seen:
                raise InputError(f"{folder}: both {seen[p.stem].name} and {p.name}; keep one (no id_prop.csv "
                                 "says which)")
            seen[p.stem] = p
        ids = sorted(seen)
        if not ids:
            raise InputError(f"{folder}: no id_prop.csv and no .cif files")
        return ids, None
    text = _read_text_utf8(id_prop)
    rows = [
        (lineno, [c.strip() for c in row])
        for lineno, row in enumerate(csv.reader(text.splitlines()), start=1)
        if row and any(c.strip() for c in row)
    ]
    if not rows:
        raise InputError(f"{id_prop}: no rows")
    # A header row: first row whose id has no CIF and whose second column is no number.
    _, first = rows[0]
    if not cif_file(folder, first[0]).exists():
        second = first[1] if len(first) > 1 else ""
        try:
            float(second)
            numeric = True
        except ValueError:
            numeric = False
        if (second and not numeric) or first[0].lower() in _HEADER_WORDS:
            rows = rows[1:]
            if not rows:
                raise InputError(f"{id_prop}: only a header row")
    ids: list[str] = []
    targets: list[float] = []
    seen: dict[str, int] = {}
    with_target = None
    for lineno, row in rows:
        cif_id = row[0]
        if not cif_id:
            raise InputError(f"{id_prop}, line {lineno}: empty cif_id")
        _check_cif_id(cif_id, f"{id_prop}, line {lineno}")
        if cif_id in seen:
            raise InputError(f"{id_prop}, line {lineno}: duplicate cif_id {cif_id!r} (first on line {seen[cif_id]})")
        seen[cif_id] = lineno
        has_target = len(row) > 1 and row[1] != ""
        if with_target is None:
            with_target = has_target
        elif has_target != with_target:
            raise InputError(f"{id_prop}, line {lineno}: some rows have a target and some do not")
        if has_target:
            try:
                value = float(row[1])
            except ValueError:
                raise InputError(f"{id_prop}, line {lineno}: target {row[1]!r} is not a number") from None
            if not math.isfinite(value):
                raise InputError(f"{id_prop}, line {lineno}: target {row[1]!r} is not finite")
            targets.append(value)
        path = cif_file(folder, cif_id)
        if not path.is_file():
            reason = missing_reason(path) if os.path.lexists(path) else "not found"
            raise InputError(f"{id_prop}, line {lineno}: {cif_id}.cif {reason} in {folder}")
        ids.append(cif_id)
    return ids, (np.asarray(targets, dtype=np.float64) if with_target else None)


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


MAX_NEIGHBOURS = 1000
"""Most neighbours per site, on average, within the graph's radius (:func:`check_neighbour_count`).

Estimated from the density, N / V x 4/3 pi r^3: about 380 within 8 Å in diamond, the
densest common solid; a cell given in nm (1000 times denser) would need about 1000 times
the memory of the real crystal's graph.
"""


def check_neighbour_count(structure: Structure, radius: float, source: str | os.PathLike,
                          limit: int | None = None) -> None:
    """Refuse a crystal too dense for its neighbour list within ``radius`` (Å) to fit in memory.

    Raises
    ------
    InputError
        If N / V * 4/3 * pi * radius^3 (neighbours per site, V in Å^3) exceeds ``limit``
        (default :data:`MAX_NEIGHBOURS`), or the cell has no volume.
    """
    limit = MAX_NEIGHBOURS if limit is None else limit
    volume = float(structure.lattice.volume)
    n = len(structure)
    if not volume > 0:
        raise InputError(f"{source}: zero-volume cell")
    per_site = n / volume * 4 / 3 * math.pi * radius**3
    if per_site > limit:
        raise InputError(f"{source}: {n} atoms in {volume:.4g} Å^3 give about {per_site:.0f} neighbours per site "
                         f"within {radius} Å, more than the limit of {limit} (cgcnn.data.MAX_NEIGHBOURS); "
                         "are the cell lengths in Å?")


@dataclass
class Graph:
    """A crystal graph in compact form (before the Gaussian expansion).

    Attributes
    ----------
    numbers : ndarray of shape (N,)
        Atomic numbers of the N sites.
    nbr_dist : ndarray of shape (N, M)
        Distances in Å to the M nearest neighbours (radius + 1 where padded).
    nbr_fea_idx : ndarray of shape (N, M)
        Site indices of those neighbours (0 where padded).
    """

    numbers: np.ndarray
    nbr_dist: np.ndarray
    nbr_fea_idx: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.numbers.nbytes + self.nbr_dist.nbytes + self.nbr_fea_idx.nbytes

    def to_array(self) -> np.ndarray:
        """One float64 array of shape (N, 1 + 2M): atomic number, M distances, M indices
        (integers below 2**53 are exact in float64); one file read per cached graph."""
        return np.hstack([self.numbers[:, None], self.nbr_dist, self.nbr_fea_idx]).astype(np.float64)

    @classmethod
    def from_array(cls, arr: np.ndarray) -> Graph:
        """Inverse of :meth:`to_array`.  Raises ``ValueError`` for an array of another shape."""
        if arr.ndim != 2 or arr.shape[1] % 2 != 1 or arr.shape[1] < 3:
            raise ValueError(f"not a cached graph: array of shape {arr.shape}")
        m = (arr.shape[1] - 1) // 2
        return cls(arr[:, 0].astype(np.int64), np.ascontiguousarray(arr[:, 1:1 + m]),
                   arr[:, 1 + m:].astype(np.int64))


def build_graph(structure: Structure, params: GraphParams = GraphParams(), name: str = "") -> Graph:
    """Neighbour lists of a crystal, as upstream CGCNN builds them.

    Neighbours come from pymatgen's vectorised ``Structure.get_neighbor_list``; per
    centre a stable sort by distance keeps the first ``max_num_nbr``, which reproduces
    upstream's ``get_all_neighbors`` + ``sorted`` including the order among ties.

    Warns (``UserWarning``, naming ``name``) when a site has fewer than ``max_num_nbr``
    neighbours within the radius; such rows are padded with index 0, distance radius + 1.

    Raises
    ------
    InputError
        If the crystal is too dense for its neighbour list to be built
        (:func:`check_neighbour_count`), naming ``name``.
    """
    check_neighbour_count(structure, params.radius, name or structure.composition.reduced_formula)
    n = len(structure)
    m = params.max_num_nbr
    centers, points, _, dists = structure.get_neighbor_list(r=params.radius)
    order = np.lexsort((dists, centers))  # stable: ties keep get_neighbor_list order
    centers, points, dists = centers[order], points[order], dists[order]
    counts = np.bincount(centers, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(centers)) - starts[centers]
    keep = rank < m
    nbr_idx = np.zeros((n, m), dtype=np.int64)
    nbr_dist = np.full((n, m), params.radius + 1.0, dtype=np.float64)
    nbr_idx[centers[keep], rank[keep]] = points[keep]
    nbr_dist[centers[keep], rank[keep]] = dists[keep]
    if (counts < m).any():
        warnings.warn(
            f"{name or structure.composition.reduced_formula}: {int((counts < m).sum())} site(s) have fewer than "
            f"{m} neighbours within {params.radius} Å; padded as upstream CGCNN (consider a larger radius)",
            stacklevel=2,
        )
    numbers = np.array([site.specie.Z for site in structure], dtype=np.int64)
    return Graph(numbers, nbr_dist, nbr_idx)


class _GraphCache:
    """Graphs of one run, bounded in bytes, least recently used dropped first."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[int, Graph] = OrderedDict()

    def get(self, key: int) -> Graph | None:
        graph = self._data.get(key)
        if graph is not None:
            self._data.move_to_end(key)
        return graph

    def put(self, key: int, graph: Graph) -> None:
        if graph.nbytes > self.max_bytes:
            return
        self._data[key] = graph
        self.bytes += graph.nbytes
        while self.bytes > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self.bytes -= old.nbytes


CACHE_SUFFIX = ".graph"
_CACHE_MAGIC = b"cgcnn graph cache 1\n"


def write_cached_graph(file: Path, key: str, graph: Graph) -> None:
    """Store a graph in the on-disk cache, atomically (temporary file, then rename).

    Layout: a magic line, the entry's key (SHA-256 hex of the CIF's bytes and the graph
    parameters), the SHA-256 hex of the payload, then the payload: ``graph.to_array()``
    in ``.npy`` format.  Raises ``OSError`` if the file cannot be written.
    """
    buf = io.BytesIO()
    np.save(buf, graph.to_array(), allow_pickle=False)
    payload = buf.getvalue()
    header = _CACHE_MAGIC + key.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(header + payload)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)


def read_cached_graph(file: Path, key: str, max_num_nbr: int) -> Graph | None:
    """A graph from the on-disk cache, or None if the entry is missing or not to be trusted:
    empty, truncated or damaged (checksum), written for another key (another crystal or other
    graph parameters), or of another number of neighbours.  Such an entry is rebuilt."""
    try:
        data = file.read_bytes()
    except OSError:
        return None
    if not data.startswith(_CACHE_MAGIC):
        return None
    lines = data[len(_CACHE_MAGIC):].split(b"\n", 2)
    if len(lines) != 3 or lines[0] != key.encode() or lines[1] != hashlib.sha256(lines[2]).hexdigest().encode():
        return None
    try:
        graph = Graph.from_array(np.load(io.BytesIO(lines[2]), allow_pickle=False))
    except (OSError, ValueError):
        return None
    if graph.nbr_fea_idx.shape[1] != max_num_nbr:
        return None
    return graph


def _cache_folder(cache_dir: str | os.PathLike) -> Path:
    """The graph cache folder, created if needed.  Raises InputError if it names a file,
    cannot be created, or cannot be written to."""
    folder = Path(cache_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: graph cache folder (--cache-dir) is an existing file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{folder}: cannot write to the graph cache folder (--cache-dir): {exc.strerror}") from None
    return folder


class CIFData(torch.utils.data.Dataset):
    """A CGCNN data folder as a dataset of crystal graphs.

    ``dataset[i]`` is ``((atom_fea, nbr_fea, nbr_fea_idx), target, cif_id)`` with
    N sites and M = ``max_num_nbr``:

    - atom_fea: torch.Tensor shape (N, orig_atom_fea_len), float32
    - nbr_fea: torch.Tensor shape (N, M, nbr_fea_len), float32
    - nbr_fea_idx: torch.LongTensor shape (N, M)
    - target: torch.Tensor shape (1,), float32 (NaN when the folder has no targets)

    Graphs are built once per run and kept in compact form (about 200 bytes per
    site) in a cache bounded by ``cache_bytes``; with ``cache_dir`` they are also
    stored on disk, keyed by the CIF's content and the graph parameters; each entry
    holds its key and a checksum, and one that fails either (or is empty) is rebuilt
    (:func:`read_cached_graph`).

    Parameters
    ----------
    root : path
        The data folder.
    params : GraphParams
        Radius, neighbours and Gaussian basis.
    atom_init : path or dict, optional
        ``atom_init.json`` to use instead of ``root/atom_init.json``, or the table
        itself (atomic number to feature list, e.g. the one a checkpoint stores).
    cache_dir : path, optional
        Folder for graphs cached across runs (created if needed).
    cache_bytes : int
        Bound on the in-memory graph cache (default 512 MiB).
    max_sites : int, optional
        Largest crystal accepted, in sites per cell (default :data:`MAX_SITES`);
        a larger one raises :class:`InputError` on access.

    Raises
    ------
    InputError
        For the folder and ``atom_init.json`` faults of :func:`read_id_prop` and
        :func:`load_atom_init`, and a ``cache_dir`` that is a file or cannot be
        written; on access, for a bad CIF (:func:`read_structure`), a crystal too
        dense for its graph (:func:`check_neighbour_count`) or an element missing
        from ``atom_init.json``.

    References
    ----------
    T. Xie, J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018); upstream ``CIFData``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        params: GraphParams = GraphParams(),
        atom_init: str | os.PathLike | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_bytes: int = 512 * 2**20,
        max_sites: int | None = None,
    ):
        self.root = Path(root)
        self.params = params
        self.max_sites = max_sites
        self.ids, self.targets = read_id_prop(self.root)
        if isinstance(atom_init, dict):
            self.atom_init_path = None
            self.atom_init = _atom_table_from_dict(atom_init)
        else:
            self.atom_init_path = Path(atom_init) if atom_init is not None else self.root / "atom_init.json"
            self.atom_init = load_atom_init(self.atom_init_path)
        self.orig_atom_fea_len = len(next(iter(self.atom_init.values())))
        zmax = max(self.atom_init)
        self._atom_table = np.full((zmax + 1, self.orig_atom_fea_len), np.nan, dtype=np.float32)
        for z, vec in self.atom_init.items():
            if z >= 0:
                self._atom_table[z] = vec
        self.gdf = GaussianDistance(params.dmin, params.radius, params.step)
        self.cache_dir = _cache_folder(cache_dir) if cache_dir is not None else None
        self._cache = _GraphCache(cache_bytes)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def atom_init_source(self) -> str:
        """Where the atom features come from, for messages."""
        return str(self.atom_init_path) if self.atom_init_path is not None else "the given atom feature table"

    @property
    def has_targets(self) -> bool:
        return self.targets is not None

    def cif_path(self, idx: int) -> Path:
        """The CIF of row ``idx`` (:func:`cif_file`: ``<cif_id>.cif``, else ``<cif_id>.CIF``)."""
        return cif_file(self.root, self.ids[idx])

    def _disk_key(self, path: Path) -> str:
        h = hashlib.sha256(path.read_bytes())
        h.update(json.dumps(self.params.as_dict(), sort_keys=True).encode())
        return h.hexdigest()

    def graph(self, idx: int) -> Graph:
        """The compact graph of row ``idx`` (built, or taken from a cache)."""
        graph = self._cache.get(idx)
        if graph is not None:
            return graph
        path = self.cif_path(idx)
        disk = key = None
        if self.cache_dir is not None:
            key = self._disk_key(path)
            disk = self.cache_dir / f"{key}{CACHE_SUFFIX}"
            graph = read_cached_graph(disk, key, self.params.max_num_nbr)
        if graph is None:
            structure = read_structure(path, self.max_sites)
            check_neighbour_count(structure, self.params.radius, path)
            graph = build_graph(structure, self.params, name=self.ids[idx])
            if disk is not None:
                try:
                    write_cached_graph(disk, key, graph)
                except OSError as exc:  # e.g. disk full: carry on without the disk cache
                    warnings.warn(f"{self.cache_dir}: cannot write graph cache ({exc.strerror}); not caching",
                                  stacklevel=2)
                    self.cache_dir = None
        self._check_elements(idx, graph.numbers)
        self._cache.put(idx, graph)
        return graph

    def _check_elements(self, idx: int, numbers: np.ndarray) -> None:
        bad = numbers >= len(self._atom_table)
        if not bad.any():
            bad = np.isnan(self._atom_table[numbers, 0])
        if bad.any():
            from pymatgen.core.periodic_table import Element

            missing = sorted({Element.from_Z(int(z)).symbol for z in numbers[bad]})
            raise InputError(
                f"{self.cif_path(idx)}: element(s) {', '.join(missing)} not in {self.atom_init_source}"
            )

    def __getitem__(self, idx: int):
        graph = self.graph(idx)
        atom_fea = torch.from_numpy(self._atom_table[graph.numbers])
        nbr_fea = torch.from_numpy(self.gdf.expand(graph.nbr_dist).astype(np.float32))
        nbr_fea_idx = torch.from_numpy(graph.nbr_fea_idx)
        target = float(self.targets[idx]) if self.targets is not None else float("nan")
        return (atom_fea, nbr_fea, nbr_fea_idx), torch.tensor([target], dtype=torch.float32), self.ids[idx]


def collate_pool(dataset_list: Sequence):
    """Collate crystals into one batch (upstream ``collate_pool``).

    Parameters
    ----------
    dataset_list : list of ``((atom_fea, nbr_fea, nbr_fea_idx), target, cif_id)``

    Returns
    -------
    (batch_atom_fea, batch_nbr_fea, batch_nbr_fea_idx, crystal_atom_idx), batch_target, batch_cif_ids
        batch_atom_fea: shape (N, orig_atom_fea_len) with N the total sites of the batch;
        batch_nbr_fea: shape (N, M, nbr_fea_len); batch_nbr_fea_idx: shape (N, M), offset
        per crystal; crystal_atom_idx: list of B LongTensors mapping crystals to sites;
        batch_target: shape (B, 1); batch_cif_ids: list of B ids.
    """
    atom_feas, nbr_feas, nbr_idxs, crystal_atom_idx, targets, cif_ids = [], [], [], [], [], []
    base = 0
    for (atom_fea, nbr_fea, nbr_fea_idx), target, cif_id in dataset_list:
        n = atom_fea.shape[0]
        atom_feas.append(atom_fea)
        nbr_feas.append(nbr_fea)
        nbr_idxs.append(nbr_fea_idx + base)
        crystal_atom_idx.append(torch.arange(base, base + n, dtype=torch.long))
        targets.append(target)
        cif_ids.append(cif_id)
        base += n
    return (
        (torch.cat(atom_feas, 0), torch.cat(nbr_feas, 0), torch.cat(nbr_idxs, 0), crystal_atom_idx),
        torch.stack(targets, 0),
        cif_ids,
    )


# --------------------------------------------------------------------------------------------------
# graphs built in parallel (a pool of processes, all cores by default)

_POOL_DATA: CIFData | None = None  # the dataset, in a pool process


def _pool_start(data: CIFData) -> None:
    """Initializer of a graph-building process: keep the dataset, no in-memory cache (graphs go back
    to the parent), one torch thread, and Ctrl-C left to the parent (which stops the pool)."""
    import signal

    global _POOL_DATA
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    data._cache = _GraphCache(0)
    _POOL_DATA = data


def _pool_graphs(rows: list[int]) -> list[Graph]:
    """Graphs of some rows of the pool's dataset (run in a pool process)."""
    return [_POOL_DATA.graph(row) for row in rows]


def build_graphs(data, positions: Sequence[int] | None = None, workers: int | None = None,
                 chunk_size: int | None = None, ahead: int = 1024):
    """Yield the compact graphs of a dataset in order, building them in a pool of processes.

    Each graph is also put in the dataset's in-memory cache, so that ``data[i]`` next
    finds it; graphs already there are not built again.  Graphs and errors are those of
    :meth:`CIFData.graph` in one process: the same numbers, the same one-line
    :class:`InputError` (re-raised here for the first faulty row in order).

    Parameters
    ----------
    data : CIFData or torch.utils.data.Subset of one
    positions : sequence of int, optional
        Items of ``data`` (default: all, in order).
    workers : int, optional
        Processes building graphs: None for all cores (:func:`cgcnn.available_cores`),
        0 to build them in this process.  The pool starts by ``fork`` where the platform
        has it (cheap: nothing is pickled but row numbers and graphs), ``spawn`` elsewhere.
    chunk_size : int, optional
        Rows per task (default: up to 32, at least four tasks per process).
    ahead : int
        Rows built ahead of the one yielded (bounds the graphs waiting in memory).

    Yields
    ------
    Graph
        The graph of each position, in order.

    Raises
    ------
    InputError
        The faults of :meth:`CIFData.graph`.
    """
    import multiprocessing
    import sys
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    from cgcnn import available_cores

    positions = range(len(data)) if positions is None else positions
    rows = list(positions)
    while isinstance(data, torch.utils.data.Subset):
        rows = [int(data.indices[r]) for r in rows]
        data = data.dataset
    workers = available_cores() if workers is None else workers
    missing = sum(1 for r in rows if r not in data._cache._data)
    chunk_size = chunk_size or max(1, min(32, missing // (4 * max(workers, 1))))
    # a daemonic process (itself a pool's worker) may not start processes: build here
    if workers < 1 or missing <= chunk_size or multiprocessing.current_process().daemon:
        for row in rows:
            yield data.graph(row)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    pool = ProcessPoolExecutor(min(workers, -(-missing // chunk_size)), mp_context=multiprocessing.get_context(method),
                               initializer=_pool_start, initargs=(data,))
    chunks = iter([rows[i:i + chunk_size] for i in range(0, len(rows), chunk_size)])
    pending: deque = deque()

    def submit() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            todo = [r for r in chunk if r not in data._cache._data]
            pending.append((chunk, todo, pool.submit(_pool_graphs, todo) if todo else None))

    try:
        for _ in range(max(1, ahead // chunk_size)):
            submit()
        while pending:
            chunk, todo, future = pending.popleft()
            built = dict(zip(todo, future.result())) if future is not None else {}
            submit()
            for row in chunk:
                graph = built.get(row)
                if graph is None:
                    graph = data.graph(row)
                else:
                    data._cache.put(row, graph)
                yield graph
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
