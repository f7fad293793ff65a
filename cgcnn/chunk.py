"""A chunk's crystals made ready for the networks: read from their CIF bytes and turned into graphs
(and structure descriptors) in any process, then read as the dataset each model expects.

:func:`_prepare_one` is what :meth:`cgcnn.dataset.CIFData.graph` does, from a crystal's bytes
(:class:`cgcnn.archive.CrystalText`), with the same on-disk graph cache
(:mod:`cgcnn.graphcache`); it runs in this process, in a pool of graph-building processes
(:func:`_pool_start`, :func:`_pool_prepare`) or in a Dask worker.  :class:`_ChunkData` then
gives the items of :class:`cgcnn.dataset.CIFData` for one model's graph parameters and atom
feature table (:class:`_AtomTable`).  Used by :mod:`cgcnn.screener`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.archive import CrystalText, read_structure_text
from cgcnn.folder import _atom_table_from_dict, atom_table_array, missing_elements
from cgcnn.graph import GaussianDistance, Graph, GraphParams, build_graph, check_neighbour_count, graph_to_follow
from cgcnn.graphcache import CACHE_SUFFIX, graph_cache_key, read_cached_graph, write_cached_graph

# --------------------------------------------------------------------------------------------------
# graphs of a chunk, built anywhere (pool process, Dask worker, this process)


@dataclass
class _Prepared:
    """A crystal ready for the networks: one graph per distinct GraphParams, the structure
    descriptors (shape (5,), or None), or the error that stopped it."""

    graphs: list | None = None
    desc: np.ndarray | None = None
    error: str | None = None
    notes: tuple = ()  # warnings raised while preparing it (re-issued by the main process)


@dataclass(frozen=True)
class _PrepSpec:
    params: tuple  # of GraphParams
    structure_desc: bool
    max_sites: int | None
    cache_dir: str | None


def _prepare_one(spec: _PrepSpec, crystal: CrystalText) -> _Prepared:
    """Read, check and turn one crystal into its graphs (what :meth:`CIFData.graph` does, from bytes).

    Warnings (e.g. a crystal with fewer neighbours than ``max_num_nbr``) are recorded in
    ``notes``, so that they reach the user from a graph-building process too.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = _prepare_quietly(spec, crystal)
    prepared.notes = tuple(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    return prepared


def _prepare_quietly(spec: _PrepSpec, crystal: CrystalText) -> _Prepared:
    if crystal.error is not None:
        return _Prepared(error=crystal.error)
    try:
        graphs, structure = [], None
        for params in spec.params:
            graph = disk = key = None
            if spec.cache_dir is not None:
                key = graph_cache_key(crystal.data, params)
                disk = Path(spec.cache_dir) / f"{key}{CACHE_SUFFIX}"
                graph = read_cached_graph(disk, key, params.max_num_nbr)
            if graph is None:
                if structure is None:
                    with graph_to_follow(params.radius):  # one neighbour search for the check and the graph
                        structure = read_structure_text(crystal.data, crystal.source, spec.max_sites)
                check_neighbour_count(structure, params.radius, crystal.source)
                graph = build_graph(structure, params, name=crystal.cif_id)
                if disk is not None:
                    with contextlib.suppress(OSError):
                        write_cached_graph(disk, key, graph)
            graphs.append(graph)
        desc = None
        if spec.structure_desc:
            from cgcnn.descriptors import structure_descriptors

            if structure is None:
                structure = read_structure_text(crystal.data, crystal.source, spec.max_sites)
            desc = structure_descriptors([structure])[0]
        return _Prepared(graphs=graphs, desc=desc)
    except InputError as exc:
        return _Prepared(error=" ".join(str(exc).split("\n")))


_POOL_SPEC: _PrepSpec | None = None


def _pool_start(spec: _PrepSpec) -> None:
    """Initializer of a graph-building process: Ctrl-C left to the parent (which stops the pool),
    SIGTERM back to its default, one torch thread, and an exit as soon as the parent is gone (a
    SIGKILLed run leaves no process behind: a forked worker holds its own queue open and would
    wait for ever)."""
    global _POOL_SPEC
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if "torch" in sys.modules:  # forked after torch was imported (else this process never needs it)
        sys.modules["torch"].set_num_threads(1)
    _POOL_SPEC = spec
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _pool_prepare(crystals: list[CrystalText]) -> list[_Prepared]:
    return [_prepare_one(_POOL_SPEC, c) for c in crystals]


# --------------------------------------------------------------------------------------------------
# a chunk's crystals as the dataset the networks read


class _AtomTable:
    """A model's atom feature table as :class:`cgcnn.data.CIFData` holds it."""

    def __init__(self, table: dict, source: str):
        self.atom_init = _atom_table_from_dict(table, source)
        self.source = source
        self.array = atom_table_array(self.atom_init)
        self.orig_atom_fea_len = self.array.shape[1]

    def missing(self, numbers: np.ndarray) -> list[str]:
        """Element symbols of ``numbers`` (atomic numbers) the table lacks."""
        return missing_elements(self.array, numbers)


class _GraphsCache:
    def __init__(self, n):
        self._data = dict.fromkeys(range(n))  # build_graphs: every row present, nothing to build


class _ChunkData:
    """The crystals of a chunk as one model reads them: ``data[i]`` is what
    :class:`cgcnn.data.CIFData` gives, ``((atom_fea (N, orig_atom_fea_len), nbr_fea (N, M,
    nbr_fea_len), nbr_fea_idx (N, M)), target (1,), cif_id)``."""

    def __init__(self, params: GraphParams, table: _AtomTable, graphs: list[Graph], ids: list[str], targets):
        self.params = params
        self.atom_init = table.atom_init
        self.atom_init_source = table.source
        self.orig_atom_fea_len = table.orig_atom_fea_len
        self._table = table.array
        self._graphs = graphs
        self.ids = ids
        self.targets = targets
        self.gdf = GaussianDistance(params.dmin, params.radius, params.step)
        self._cache = _GraphsCache(len(graphs))

    def __len__(self) -> int:
        return len(self._graphs)

    def graph(self, idx: int) -> Graph:
        return self._graphs[idx]

    def __getitem__(self, idx: int):
        import torch

        graph = self._graphs[idx]
        atom_fea = torch.from_numpy(self._table[graph.numbers])
        nbr_fea = torch.from_numpy(self.gdf.expand(graph.nbr_dist).astype(np.float32))
        nbr_fea_idx = torch.from_numpy(graph.nbr_fea_idx)
        target = float(self.targets[idx]) if self.targets is not None else float("nan")
        return (atom_fea, nbr_fea, nbr_fea_idx), torch.tensor([target], dtype=torch.float32), self.ids[idx]
