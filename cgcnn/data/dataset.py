"""A CGCNN data folder as a dataset of crystal graphs (:class:`CIFData`), its batches
(:func:`collate_pool`), and its graphs built in parallel (:func:`build_graphs`).

The folder's files are read by :mod:`cgcnn.crystals.folder`, each CIF by
:func:`cgcnn.crystals.read_structure`, its graph built by :func:`cgcnn.data.graph.build_graph`
and kept in memory (bounded) and, optionally, on disk (:mod:`cgcnn.data.graphcache`).
Rows keep their ``id_prop.csv`` order everywhere.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cgcnn import InputError
from cgcnn.crystals import (
    locate,
    read_cif_bytes,
    read_crystal,
    read_frame,
    read_id_prop,
    read_structure,
    structure_format,
)
from cgcnn.crystals.frames import frame_source
from cgcnn.data.atom_features import atom_table_array, atom_table_from_dict, load_atom_init, missing_elements
from cgcnn.data.graph import GaussianDistance, Graph, GraphParams, build_graph, check_neighbour_count
from cgcnn.data.graphcache import (
    CACHE_SUFFIX,
    CifNumbers,
    cache_folder,
    graph_cache_key,
    load_cached_graph,
    write_cached_graph,
)

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["CIFData", "collate_pool", "build_graphs"]


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
    structure_info : callable, optional
        A module-level function of a pymatgen ``Structure`` (e.g. the structure descriptors of
        :mod:`cgcnn.transfer`) computed from the structure read to build each graph, so that a
        run parses each CIF once; :meth:`info` gives it.

    Raises
    ------
    InputError
        For the folder and ``atom_init.json`` faults of :func:`read_id_prop` and
        :func:`load_atom_init`, and a ``cache_dir`` that is a file or cannot be
        written; on access, for a bad CIF (:func:`cgcnn.crystals.read_structure`), a crystal too
        dense for its graph (:func:`check_neighbour_count`) or an element missing
        from ``atom_init.json``.

    References
    ----------
    T. Xie, J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018); upstream ``CIFData``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        params: GraphParams = GraphParams(),  # noqa: B008 (a frozen dataclass)
        atom_init: str | os.PathLike | dict | None = None,
        cache_dir: str | os.PathLike | None = None,
        cache_bytes: int = 512 * 2**20,
        max_sites: int | None = None,
        structure_info: Callable[[Structure], Any] | None = None,
    ):
        self.root = Path(root)
        self.structure_info = structure_info
        self._info: dict[int, Any] = {}
        self.params = params
        self.max_sites = max_sites
        self.ids, self.targets = read_id_prop(self.root)
        if isinstance(atom_init, dict):
            self.atom_init_path = None
            self.atom_init = atom_table_from_dict(atom_init)
        else:
            self.atom_init_path = Path(atom_init) if atom_init is not None else self.root / "atom_init.json"
            self.atom_init = load_atom_init(self.atom_init_path)
        self._atom_table = atom_table_array(self.atom_init)
        self.orig_atom_fea_len = self._atom_table.shape[1]
        self.gdf = GaussianDistance(params.dmin, params.radius, params.step)
        self.cache_dir = cache_folder(cache_dir) if cache_dir is not None else None
        self._cache = _GraphCache(cache_bytes)

    def for_worker(self) -> CIFData:
        """This dataset as a graph-building process keeps it (:mod:`cgcnn.data.pool`): no in-memory
        cache, since its graphs go back to the parent."""
        self._cache = _GraphCache(0)
        return self

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
        """The structure file of row ``idx`` (:func:`cgcnn.crystals.cif_file`: ``<cif_id>.cif``, else
        ``<cif_id>.CIF``, a POSCAR, a pymatgen JSON; an extxyz frame's file: :func:`cgcnn.crystals.locate`)."""
        path, _ = locate(self.root, self.ids[idx])
        return path

    def source(self, idx: int) -> str:
        """What names row ``idx``'s crystal in messages: its file, or ``FILE:ID`` for an extxyz frame."""
        path, frame = locate(self.root, self.ids[idx])
        return str(path) if frame is None else frame_source(path, frame)

    def _disk_key(self, path: Path) -> str:
        return graph_cache_key(read_cif_bytes(path), self.params)

    def graph(self, idx: int) -> Graph:
        """The compact graph of row ``idx`` (built, or taken from a cache)."""
        graph = self._cache.get(idx)
        if graph is not None:
            return graph
        path, frame = locate(self.root, self.ids[idx])
        disk = key = structure = None
        if frame is not None:  # an extxyz frame: no file of its own, no graph cached on disk
            structure = read_frame(path, frame, self.max_sites)
            path = frame_source(path, frame)
        elif self.cache_dir is not None and structure_format(path) == "cif":
            cif = path.read_bytes()
            key = graph_cache_key(cif, self.params)
            disk = self.cache_dir / f"{key}{CACHE_SUFFIX}"
            check = CifNumbers(cif, lambda: read_structure(path, self.max_sites))
            graph = load_cached_graph(disk, key, self.params, check, str(path))
            structure = check.structure
        if graph is None:
            if structure is None:
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
        if structure is not None and self.structure_info is not None:
            self._info[idx] = self.structure_info(structure)
        self._check_elements(idx, graph.numbers)
        self._cache.put(idx, graph)
        return graph

    def info(self, idx: int) -> Any:
        """``structure_info`` of row ``idx``'s structure: kept from when its graph was built, else (a graph
        taken from the disk cache) from its CIF, read now.

        Raises
        ------
        ValueError
            The dataset has no ``structure_info``.
        InputError
            The faults of :func:`cgcnn.crystals.read_structure`.
        """
        if self.structure_info is None:
            raise ValueError("this dataset computes no structure_info")
        if idx not in self._info:
            self._info[idx] = self.structure_info(read_crystal(self.root, self.ids[idx], self.max_sites))
        return self._info[idx]

    def _check_elements(self, idx: int, numbers: np.ndarray) -> None:
        missing = missing_elements(self._atom_table, numbers)
        if missing:
            raise InputError(
                f"{self.source(idx)}: element(s) {', '.join(missing)} not in {self.atom_init_source}"
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

def _graph_of(data: CIFData, row: int) -> tuple[Graph, Any]:
    """The graph of one row of the pool's dataset and its ``structure_info`` (run in a pool process)."""
    return data.graph(row), data._info.pop(row, None)


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
    from collections import deque

    from cgcnn import available_cores
    from cgcnn.data.pool import run_tasks, start_pool

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
    pool = start_pool(min(workers, -(-missing // chunk_size)), data)
    chunks = iter([rows[i:i + chunk_size] for i in range(0, len(rows), chunk_size)])
    pending: deque = deque()

    def submit() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            todo = [r for r in chunk if r not in data._cache._data]
            pending.append((chunk, todo, pool.submit(run_tasks, _graph_of, todo) if todo else None))

    try:
        for _ in range(max(1, ahead // chunk_size)):
            submit()
        while pending:
            chunk, todo, future = pending.popleft()
            built = dict(zip(todo, future.result())) if future is not None else {}
            submit()
            for row in chunk:
                graph, info = built.get(row, (None, None))
                if graph is None:
                    graph = data.graph(row)
                else:
                    data._cache.put(row, graph)
                    if info is not None:
                        data._info[row] = info
                yield graph
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
