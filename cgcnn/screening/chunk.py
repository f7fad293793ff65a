"""A chunk's crystals made ready for the networks: read from their files' bytes and turned into graphs
(and structure descriptors) in any process, then read as the dataset each model expects.

:func:`prepare_crystal` is what :meth:`cgcnn.data.dataset.CIFData.graph` does, from a crystal's bytes
(:class:`cgcnn.crystals.archive.CrystalText`), with the same on-disk graph cache
(:mod:`cgcnn.data.graphcache`); it runs in this process, in a pool of graph-building processes
(:mod:`cgcnn.data.pool`) or in a Dask worker.  :class:`ChunkData` then
gives the items of :class:`cgcnn.data.dataset.CIFData` for one model's graph parameters and atom
feature table (:class:`AtomTable`).  Used by :mod:`cgcnn.screening.screener`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.crystals import CrystalText, read_structure_text
from cgcnn.data import (
    CACHE_SUFFIX,
    CifNumbers,
    GaussianDistance,
    Graph,
    GraphParams,
    atom_table_array,
    atom_table_from_dict,
    build_graph,
    check_neighbour_count,
    graph_cache_key,
    load_cached_graph,
    missing_elements,
    write_cached_graph,
)

# --------------------------------------------------------------------------------------------------
__all__ = ["Prepared", "PrepSpec", "prepare_crystal", "AtomTable", "ChunkData"]


# --------------------------------------------------------------------------------------------------
# graphs of a chunk, built anywhere (pool process, Dask worker, this process)


@dataclass
class Prepared:
    """A crystal ready for the networks: one graph per distinct GraphParams, the structure
    descriptors (shape (5,), or None), or the error that stopped it."""

    graphs: list | None = None
    desc: np.ndarray | None = None
    error: str | None = None
    notes: tuple = ()  # warnings raised while preparing it (re-issued by the main process)


@dataclass(frozen=True)
class PrepSpec:
    params: tuple  # of GraphParams
    structure_desc: bool
    max_sites: int | None
    cache_dir: str | None


def prepare_crystal(spec: PrepSpec, crystal: CrystalText) -> Prepared:
    """Read, check and turn one crystal into its graphs (what :meth:`CIFData.graph` does, from bytes).

    Warnings (e.g. a crystal with fewer neighbours than ``max_num_nbr``) are recorded in
    ``notes``, so that they reach the user from a graph-building process too.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = _prepare_quietly(spec, crystal)
    prepared.notes = tuple(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    return prepared


def _prepare_quietly(spec: PrepSpec, crystal: CrystalText) -> Prepared:
    if crystal.error is not None:
        return Prepared(error=crystal.error)
    try:
        graphs, structure = [], crystal.structure
        cif = crystal.data is not None and crystal.fmt == "cif"  # graphs are cached on disk for CIFs only
        check = (None if not cif else
                 CifNumbers(crystal.data, lambda: read_structure_text(crystal.data, crystal.source, spec.max_sites)))
        for params in spec.params:
            graph = disk = key = None
            if spec.cache_dir is not None and cif:
                key = graph_cache_key(crystal.data, params)
                disk = Path(spec.cache_dir) / f"{key}{CACHE_SUFFIX}"
                graph = load_cached_graph(disk, key, params, check, crystal.source)
                if structure is None:
                    structure = check.structure
            if graph is None:
                if structure is None:
                    structure = read_structure_text(crystal.data, crystal.source, spec.max_sites, crystal.fmt)
                check_neighbour_count(structure, params.radius, crystal.source)
                graph = build_graph(structure, params, name=crystal.cif_id)
                if disk is not None:
                    with contextlib.suppress(OSError):
                        write_cached_graph(disk, key, graph)
            graphs.append(graph)
        desc = None
        if spec.structure_desc:
            from cgcnn.transfer import structure_descriptors

            if structure is None:
                structure = read_structure_text(crystal.data, crystal.source, spec.max_sites, crystal.fmt)
            desc = structure_descriptors([structure])[0]
        return Prepared(graphs=graphs, desc=desc)
    except InputError as exc:
        return Prepared(error=" ".join(str(exc).split("\n")))


# --------------------------------------------------------------------------------------------------
# a chunk's crystals as the dataset the networks read


class AtomTable:
    """A model's atom feature table as :class:`cgcnn.data.CIFData` holds it."""

    def __init__(self, table: dict, source: str):
        self.atom_init = atom_table_from_dict(table, source)
        self.source = source
        self.array = atom_table_array(self.atom_init)
        self.orig_atom_fea_len = self.array.shape[1]

    def missing(self, numbers: np.ndarray) -> list[str]:
        """Element symbols of ``numbers`` (atomic numbers) the table lacks."""
        return missing_elements(self.array, numbers)


class _GraphsCache:
    def __init__(self, n):
        self._data = dict.fromkeys(range(n))  # build_graphs: every row present, nothing to build


class ChunkData:
    """The crystals of a chunk as one model reads them: ``data[i]`` is what
    :class:`cgcnn.data.CIFData` gives, ``((atom_fea (N, orig_atom_fea_len), nbr_fea (N, M,
    nbr_fea_len), nbr_fea_idx (N, M)), target (1,), cif_id)``."""

    def __init__(self, params: GraphParams, table: AtomTable, graphs: list[Graph], ids: list[str], targets):
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
