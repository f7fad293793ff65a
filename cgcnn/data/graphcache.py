"""The on-disk graph cache (``--cache-dir``): crystal graphs kept across runs, keyed by the CIF's
bytes and the graph parameters, each entry checked before it is trusted.

One file per graph, ``<key>.graph``: a magic line, the key (SHA-256 hex of the CIF's bytes
and the graph parameters), the SHA-256 hex of the payload, then the payload
(:meth:`cgcnn.data.graph.Graph.to_array` in ``.npy`` format).  An entry that is empty, damaged,
written for another key or of another number of neighbours is rebuilt by its reader
(:class:`cgcnn.data.dataset.CIFData`, :mod:`cgcnn.screening.chunk`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.data.graph import Graph

__all__ = ["CACHE_SUFFIX", "cache_folder", "graph_cache_key", "write_cached_graph", "read_cached_graph"]


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
