"""A chunk's crystals made ready for the last layer: read from their files' bytes and turned into graphs
(and structure descriptors) in any process, read as the dataset each model expects, and run through
the networks batch by batch (:class:`BatchMaker`), in a graph-building process where the networks run
on a CPU.

:func:`prepare_crystal` is what :meth:`cgcnn.data.dataset.CIFData.graph` does, from a crystal's bytes
(:class:`cgcnn.crystals.archive.CrystalText`), with the same on-disk graph cache
(:mod:`cgcnn.data.graphcache`); it runs in this process, in a pool of graph-building processes
(:mod:`cgcnn.data.pool`) or in a Dask worker.  :class:`ChunkData` then
gives the items of :class:`cgcnn.data.dataset.CIFData` for one model's graph parameters and atom
feature table (:class:`AtomTable`; each model's table for a run: :func:`atom_tables`); :class:`BatchMaker`
makes one batch of crystals into a :class:`BatchOut`.  Used by :mod:`cgcnn.screening.screener`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.crystals import CrystalInput, CrystalText, read_structure_text
from cgcnn.data import (
    CACHE_SUFFIX,
    CifNumbers,
    GaussianDistance,
    Graph,
    GraphParams,
    atom_init_digest,
    atom_table_array,
    atom_table_from_dict,
    build_graph,
    check_neighbour_count,
    collate_pool,
    graph_cache_key,
    load_atom_init,
    load_cached_graph,
    missing_elements,
    write_cached_graph,
)

# --------------------------------------------------------------------------------------------------
__all__ = ["Prepared", "PrepSpec", "prepare_crystal", "AtomTable", "atom_tables", "ChunkData", "BatchMaker", "BatchOut"]


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


# --------------------------------------------------------------------------------------------------
# a batch of crystals made ready for the last layer


@dataclass
class BatchOut:
    """One batch of crystals made ready for the last layer (by :meth:`BatchMaker.make`).

    Attributes
    ----------
    errors : list of str or None
        Per crystal of the batch: None, or the one-line reason it cannot be screened.
    notes : list of tuple of str
        Per crystal: the warnings raised while preparing it.
    desc : ndarray of shape (n_ok, 5) or None
        Structure descriptors of the crystals without error (None without descriptors).
    feas, preds : list of ndarray, or None
        Per model, ``crys_fea`` (n_ok, h_fea_len) float32 and predictions (n_ok,) float64 of the
        crystals without error; None where the networks run in the main process (on a GPU).
    inputs : dict or None
        Then, input key → the batch collated (:func:`cgcnn.data.collate_pool`) as NumPy arrays
        ``(atom_fea, nbr_fea, nbr_fea_idx, atoms per crystal)``, for the main process to copy and run.
    """

    errors: list
    notes: list
    desc: np.ndarray | None = None
    feas: list | None = None
    preds: list | None = None
    inputs: dict | None = None


class BatchMaker:
    """What becomes of a batch of crystals before the last layer, in any process: graphs, structure
    descriptors, the atom-table check and, where the networks run on a CPU, every model's ``crys_fea``
    and predictions, with :data:`cgcnn.model.NETWORK_THREADS` torch threads.

    What it is given is a block of a batch (:meth:`cgcnn.screening.screener.Screener.blocks`: at most
    :data:`cgcnn.model.SLICE_CRYSTALS` crystals from a multiple of it from the start of a batch of
    ``batch_size``, chunks starting at multiples of ``batch_size``); its networks run on its crystals
    without error, the same block wherever it is made (a pool's process, this process with ``-j 0``, a
    Dask worker), so results do not depend on where.

    Parameters
    ----------
    prep : PrepSpec
    models : sequence of :class:`cgcnn.model.SourceModel`
        Source models, then property models.
    tables : sequence of AtomTable
        Each model's atom feature table.
    networks : bool
        Run the networks here (the models are on the CPU); else collate each input for the main process.
    """

    def __init__(self, prep: PrepSpec, models, tables, networks: bool):
        self.prep = prep
        self.keys = [(m.params, atom_init_digest(t.atom_init)) for m, t in zip(models, tables)]
        self.inputs = list(dict.fromkeys(self.keys))
        self.graph_index = {key: prep.params.index(key[0]) for key in self.inputs}
        self.tables = {key: tables[self.keys.index(key)] for key in self.inputs}
        self.model_set = None
        if networks:
            from cgcnn.model import ModelSet

            self.model_set = ModelSet(models, self.keys)

    def make(self, crystals) -> BatchOut:
        """The :class:`BatchOut` of a batch of :class:`cgcnn.crystals.CrystalText`."""
        prepared = [prepare_crystal(self.prep, c) for c in crystals]
        errors = []
        for crystal, prep in zip(crystals, prepared):
            error = prep.error
            if error is None:
                for key in self.inputs:
                    table = self.tables[key]
                    missing = table.missing(prep.graphs[self.graph_index[key]].numbers)
                    if missing:
                        error = f"{crystal.source}: element(s) {', '.join(missing)} not in {table.source}"
                        break
            errors.append(error)
        ok = [i for i, e in enumerate(errors) if e is None]
        out = BatchOut(errors, [p.notes for p in prepared])
        if not ok:
            return out
        if self.prep.structure_desc:
            out.desc = np.stack([prepared[i].desc for i in ok])
        batch = {}
        for key in self.inputs:
            graphs = [prepared[i].graphs[self.graph_index[key]] for i in ok]
            data = ChunkData(key[0], self.tables[key], graphs, [crystals[i].cif_id for i in ok], None)
            batch[key] = collate_pool([data[j] for j in range(len(ok))])[0]
        if self.model_set is None:
            out.inputs = {key: (a.numpy(), n.numpy(), i.numpy(), [len(c) for c in idx])
                          for key, (a, n, i, idx) in batch.items()}
            return out
        from cgcnn.model import network_threads

        with network_threads():
            out.feas, out.preds = self.model_set.run(batch)
        return out


def make_batch(maker: BatchMaker, crystals) -> BatchOut:
    """:meth:`BatchMaker.make` as a pool task (:func:`cgcnn.data.run_tasks`)."""
    return maker.make(crystals)


def collated(inputs: tuple) -> tuple:
    """A batch of :attr:`BatchOut.inputs` as :func:`cgcnn.data.collate_pool` gives it (torch tensors)."""
    import torch

    atom_fea, nbr_fea, nbr_fea_idx, lengths = inputs
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(int)
    return (torch.from_numpy(atom_fea), torch.from_numpy(nbr_fea), torch.from_numpy(nbr_fea_idx),
            [torch.arange(s, s + n, dtype=torch.long) for s, n in zip(starts.tolist(), lengths)])


def atom_tables(models: Sequence, data: CrystalInput | None = None, atom_init=None,
                option: str = "--atom-init") -> tuple[list[dict], list[str]]:
    """Each model's atom feature table for ``data``, chosen as :meth:`SourceModel.dataset` chooses it:
    ``atom_init`` (``--atom-init``) when given, else the folder's ``atom_init.json``, else the
    table stored in the checkpoint.

    Parameters
    ----------
    models : sequence of SourceModel
    data : CrystalInput, optional
        The input (a folder's ``atom_init.json`` counts); None for crystals of a Python session.
    atom_init : path, optional
        The table given.
    option : str
        How the user gives ``atom_init``, for the message (``--atom-init``, or ``atom_init=`` in Python).

    Returns
    -------
    tables : list of dict
        Atomic number → float32 vector, one per model.
    sources : list of str
        Where each comes from, for messages.

    Raises
    ------
    InputError
        The faults of :func:`cgcnn.data.load_atom_init`; no table at all (an upstream
        checkpoint and an archive, or crystals of a Python session, without ``option``).
    """
    tables, sources = [], []
    for model in models:
        path = atom_init if atom_init is not None else (data.atom_init if data is not None else None)
        if path is not None:
            tables.append(load_atom_init(path))
            sources.append(str(path))
        elif model.atom_init is not None:
            tables.append(model.atom_init)
            sources.append("the given atom feature table")
        elif data is not None and data.kind == "folder":
            tables.append(load_atom_init(data.path / "atom_init.json"))  # raises: not found
            sources.append(str(data.path / "atom_init.json"))
        else:
            where = f"the archive {data.path}" if data is not None else "these crystals"
            raise InputError(f"{model.path}: stores no atom feature table; give {option} for {where}")
    return tables, sources
