"""The on-disk graph cache (``--cache-dir``): crystal graphs kept across runs, keyed by the CIF's
bytes and the graph parameters, each entry checked before it is used.

One file per graph, ``<key>.graph``: a magic line, the key (SHA-256 hex of the CIF's bytes
and the graph parameters), the SHA-256 hex of the payload, then the payload
(:meth:`cgcnn.data.graph.Graph.to_array` in ``.npy`` format).

The checksum only finds damage: whoever can write the folder can write an entry with its
own checksum.  So an entry is trusted only once it has passed checks that do not come
from the entry (:func:`load_cached_graph`):

- its array is a graph of these parameters: float64 of shape (N, 1 + 2M), M neighbours,
  atomic numbers 1 … 118, neighbour indices 0 … N − 1, distances finite, 0 < d ≤ radius + 1,
  each site's sorted as they are built;
- its atomic numbers are those of the CIF it claims to be, site for site: from the CIF's
  own symmetry expansion (:func:`cgcnn.crystals.cif_fast.site_numbers`, gemmi, about
  0.1 ms), else from the structure read from the CIF.

An entry that is empty, damaged, written for another key or that fails a check is rebuilt
by its reader (:class:`cgcnn.data.dataset.CIFData`, :mod:`cgcnn.screening.chunk`), with a
warning naming the CIF; one that is merely missing is built silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cgcnn import InputError
from cgcnn.crystals import site_numbers
from cgcnn.data.atom_features import MAX_ATOMIC_NUMBER
from cgcnn.data.graph import Graph, GraphParams

__all__ = ["CACHE_SUFFIX", "CifNumbers", "cache_folder", "graph_cache_key", "write_cached_graph", "read_cached_graph",
           "check_graph_array", "load_cached_graph"]


CACHE_SUFFIX = ".graph"
_CACHE_MAGIC = b"cgcnn graph cache 1\n"


def graph_cache_key(cif: bytes, params) -> str:
    """The cache key of a graph: SHA-256 (hex) of the CIF's bytes and of its
    :class:`cgcnn.data.graph.GraphParams` (as sorted JSON), so that a changed file or radius misses."""
    h = hashlib.sha256(cif)
    h.update(json.dumps(params.as_dict(), sort_keys=True).encode())
    return h.hexdigest()


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


def check_graph_array(arr: np.ndarray, params: GraphParams) -> str | None:
    """Why ``arr`` is not a graph of ``params`` as :meth:`Graph.to_array` writes it, or None.

    Checks: float64, shape (N, 1 + 2M) with N ≥ 1 and M = ``params.max_num_nbr``; atomic numbers
    integers 1 … 118; neighbour indices integers 0 … N − 1; distances finite with
    0 < d ≤ radius + 1 (Å), non-decreasing along each site's row (the order they are built in).
    """
    m = params.max_num_nbr
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.ndim != 2:
        return "not a float64 table"
    if arr.shape[0] < 1 or arr.shape[1] != 1 + 2 * m:
        return f"shape {arr.shape}, not (N, {1 + 2 * m})"
    numbers, dist, idx = arr[:, 0], arr[:, 1:1 + m], arr[:, 1 + m:]
    if not (np.isfinite(numbers).all() and (numbers == np.round(numbers)).all()
            and numbers.min() >= 1 and numbers.max() <= MAX_ATOMIC_NUMBER):
        return f"atomic numbers outside 1 to {MAX_ATOMIC_NUMBER}"
    if not (np.isfinite(idx).all() and (idx == np.round(idx)).all() and idx.min() >= 0
            and idx.max() <= len(arr) - 1):
        return f"neighbour indices outside 0 to {len(arr) - 1}"
    if not (np.isfinite(dist).all() and (dist > 0).all() and (dist <= params.radius + 1.0).all()):
        return f"distances not finite or outside (0, {params.radius + 1.0:g}] Å"
    if m > 1 and (np.diff(dist, axis=1) < 0).any():
        return "neighbours not sorted by distance"
    return None


def _npy_array(payload: bytes) -> np.ndarray | None:
    """The array of ``.npy`` bytes, or None: read by numpy's own header reader, and only when the
    header's shape and dtype account for exactly the bytes that follow it (so that a forged header
    cannot make numpy allocate more than the file holds)."""
    from numpy.lib import format as npy

    f = io.BytesIO(payload)
    try:
        version = npy.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return None
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject or len(payload) - f.tell() != dtype.itemsize * int(np.prod(shape, dtype=object)):
            return None
        arr = np.frombuffer(payload, dtype=dtype, offset=f.tell()).reshape(shape, order="F" if fortran else "C")
    except Exception:  # numpy raises many types on a bad header
        return None
    return arr


def read_cached_graph(file: Path, key: str, params: GraphParams) -> tuple[Graph | None, str | None]:
    """A graph from the on-disk cache, checked as a file (no CIF needed).

    Returns
    -------
    (Graph, None)
        A sound entry (still to be checked against its CIF: :func:`load_cached_graph`).
    (None, None)
        No entry.
    (None, str)
        An entry not to be used, and why: empty, truncated or damaged (checksum), not of this
        cache, written for another key (another crystal or other graph parameters), or a
        payload that fails :func:`check_graph_array`.
    """
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    if not data.startswith(_CACHE_MAGIC):
        return None, "not a graph cache entry"
    lines = data[len(_CACHE_MAGIC):].split(b"\n", 2)
    if len(lines) != 3 or lines[0] != key.encode():
        return None, "written for another crystal or other graph parameters"
    if lines[1] != hashlib.sha256(lines[2]).hexdigest().encode():
        return None, "damaged (checksum)"
    arr = _npy_array(lines[2])
    if arr is None:
        return None, "damaged (unreadable array)"
    why = check_graph_array(arr, params)
    if why is not None:
        return None, why
    return Graph.from_array(arr), None


class CifNumbers:
    """The atomic numbers, site by site, of the crystal a CIF holds: what a cached graph of it must have.

    Taken from the CIF's own symmetry expansion (:func:`cgcnn.crystals.site_numbers`, gemmi, about
    0.1 ms) where that is sure to match, else from the structure ``read()`` gives (a pymatgen
    ``Structure``, then kept as :attr:`structure` so that the caller does not read it again).
    Computed once, on first use.

    Parameters
    ----------
    cif : bytes
        The CIF file.
    read : callable
        Reads the crystal's checked structure (raises :class:`InputError` for a CIF that does not parse).
    """

    def __init__(self, cif: bytes, read: Callable[[], Any]):
        self.cif = cif
        self.read = read
        self.structure = None
        self._numbers: np.ndarray | None = None

    def numbers(self) -> np.ndarray:
        """Atomic numbers, int64 of shape (N,)."""
        if self._numbers is None:
            numbers = site_numbers(self.cif.decode("utf-8", errors="replace"))
            self._numbers = numbers if numbers is not None else self.exact()
        return self._numbers

    def exact(self) -> np.ndarray:
        """Atomic numbers of the structure itself (read now if not yet), int64 of shape (N,)."""
        if self.structure is None:
            self.structure = self.read()
        self._numbers = np.array([site.specie.Z for site in self.structure], dtype=np.int64)
        return self._numbers

    def matches(self, numbers: np.ndarray) -> bool:
        """Whether ``numbers`` are the crystal's; a disagreement of the cheap reading is confirmed on
        the structure, so that a sound entry is never taken for an altered one."""
        if np.array_equal(self.numbers(), numbers):
            return True
        return self.structure is None and np.array_equal(self.exact(), numbers)


def load_cached_graph(file: Path, key: str, params: GraphParams, cif: CifNumbers, source: str) -> Graph | None:
    """The cached graph of a crystal, used only when it is sound (:func:`read_cached_graph`) and its
    atomic numbers are those of its CIF (``cif``); else None, with a warning naming ``source`` when an
    entry was there (it is to be rebuilt).

    Raises
    ------
    InputError
        From ``cif.read`` (a CIF that does not parse), when the CIF's expansion cannot tell.
    """
    graph, why = read_cached_graph(file, key, params)
    if graph is not None and not cif.matches(graph.numbers):
        graph, why = None, "its atomic numbers are not those of the CIF"
    if why is not None:
        warnings.warn(f"{source}: cached graph {file.name} is damaged or altered ({why}); rebuilt from the CIF",
                      stacklevel=2)
    return graph


def cache_folder(cache_dir: str | os.PathLike) -> Path:
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
