"""Screening a structure database with a fitted last layer: streaming, in bounded memory,
resumable, on one machine or on a ``dask.distributed`` cluster.

The crystals of the input (:mod:`cgcnn.archive`: a folder or an archive of CIFs) are
cut into chunks of ``chunk_size`` crystals, a multiple of ``batch_size``.  Each chunk is
screened on its own: graphs built (by a pool of processes, or inside a Dask worker), the
source and property networks run batch by batch, descriptors and the last layer
(:class:`cgcnn.lastlayer.LastLayer`) applied.  Its rows go to a *shard*, four files in the
work folder ``<results>.parts/`` renamed into place one after the other, the ``.json``
last (a chunk is done when its ``.json`` exists).  Memory holds a chunk or two, whatever
the number of crystals.  At the end the shards are concatenated, in input order, into
``results.csv``, ``test_results.csv`` and (with ``on_error="skip"``) ``skipped.csv``, all
renamed together (:class:`cgcnn.files.OutputSet`), and the work folder is removed.

Results do not depend on the chunking, the resumption or the machines: a chunk starts at
a multiple of ``batch_size``, so every network sees the batches it sees on the whole
folder (:func:`cgcnn.transfer.compute_features`), and the CSV files are byte for byte
those of one pass.

Interrupted (SIGTERM, SIGKILL, a crash), a run leaves its shards; run again with
``resume=True`` it screens only the chunks without a shard.  The work folder's
``manifest.json`` records the source models, property models, last layer, input and
options; resuming with any of them changed is refused.  A bad input (one line,
:class:`~cgcnn.InputError`) without ``on_error="skip"`` removes the work folder: nothing
is written, as before streaming.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cgcnn import InputError, available_cores
from cgcnn.archive import CrystalInput, CrystalText, read_structure_text
from cgcnn.data import GaussianDistance, Graph, GraphParams, atom_init_digest, build_graph, check_neighbour_count

__all__ = ["ON_ERROR", "ScreenSettings", "Screener", "Shard", "ScreenSummary", "atom_tables", "screen", "work_folder",
           "RESULT_COLUMNS", "TEST_COLUMNS", "SKIPPED_COLUMNS"]

#: Choices of ``--on-error``.
ON_ERROR = ("stop", "skip")
RESULT_COLUMNS = ("cif_id", "target", "prediction", "kappa", "prediction_low", "prediction_high",
                  "kappa_low", "kappa_high", "in_domain", "domain_distance")
TEST_COLUMNS = ("cif_id", "target", "prediction")
SKIPPED_COLUMNS = ("cif_id", "reason")
_FLOAT_FORMAT = "%.8g"  # as OutputSet.write_csv
_MANIFEST_FORMAT = "cgcnn-kappa screen 1"
_PARTS = ("results", "test", "skipped")


@dataclass
class ScreenSettings:
    """How a screening run goes (none of it changes a prediction).

    Parameters
    ----------
    batch_size : int
        Crystals per batch of the networks.
    chunk_size : int, optional
        Crystals per chunk (shard), a multiple of ``batch_size`` (default 4 x ``batch_size``).
    on_error : {"stop", "skip"}
        ``stop``: the first crystal that cannot be read or turned into a graph ends the run
        with its one-line error, nothing written; ``skip``: it goes to ``skipped.csv``.
    resume : bool
        Continue from the shards of an interrupted run of the same inputs.
    dask : str, optional
        ``"local"`` (a ``LocalCluster`` of this machine's cores) or a scheduler address;
        None: this process, with ``workers`` graph-building processes.
    workers : int, optional
        Graph-building processes without Dask (None: all cores; 0: none).
    level : float, optional
        Interval level (None: the last layer's own).
    progress : bool
        A progress line (crystals/s, time left) on stderr after each chunk.
    cache_dir : path, optional
        Graph cache folder, shared with :class:`cgcnn.data.CIFData`.
    max_sites : int, optional
        Largest crystal (default :data:`cgcnn.data.MAX_SITES`).
    """

    batch_size: int = 500
    chunk_size: int | None = None
    on_error: str = "stop"
    resume: bool = False
    dask: str | None = None
    workers: int | None = None
    level: float | None = None
    progress: bool = True
    cache_dir: str | os.PathLike | None = None
    max_sites: int | None = None

    @property
    def chunk(self) -> int:
        """The chunk size in use."""
        return self.chunk_size or 4 * self.batch_size

    def check(self) -> None:
        """Raises :class:`InputError` for an option out of range, naming it."""
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.chunk < 1 or self.chunk % self.batch_size:
            raise InputError(f"--chunk-size must be a positive multiple of --batch-size ({self.batch_size}), "
                             f"not {self.chunk} (batches must not straddle chunks for the results to be those of "
                             "one pass)")
        if self.on_error not in ON_ERROR:
            raise InputError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {self.on_error!r}")


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
    from cgcnn.data import CACHE_SUFFIX, read_cached_graph, write_cached_graph

    if crystal.error is not None:
        return _Prepared(error=crystal.error)
    try:
        graphs, structure = [], None
        for params in spec.params:
            graph = disk = key = None
            if spec.cache_dir is not None:
                h = hashlib.sha256(crystal.data)
                h.update(json.dumps(params.as_dict(), sort_keys=True).encode())
                key = h.hexdigest()
                disk = Path(spec.cache_dir) / f"{key}{CACHE_SUFFIX}"
                graph = read_cached_graph(disk, key, params.max_num_nbr)
            if graph is None:
                if structure is None:
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
    torch.set_num_threads(1)
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
        from cgcnn.data import _atom_table_from_dict

        self.atom_init = _atom_table_from_dict(table, source)
        self.source = source
        self.orig_atom_fea_len = len(next(iter(self.atom_init.values())))
        zmax = max(self.atom_init)
        self.array = np.full((zmax + 1, self.orig_atom_fea_len), np.nan, dtype=np.float32)
        for z, vec in self.atom_init.items():
            if z >= 0:
                self.array[z] = vec

    def missing(self, numbers: np.ndarray) -> list[str]:
        """Element symbols of ``numbers`` (atomic numbers) the table lacks."""
        bad = numbers >= len(self.array)
        if not bad.any():
            bad = np.isnan(self.array[numbers, 0])
        if not bad.any():
            return []
        from pymatgen.core.periodic_table import Element

        return sorted({Element.from_Z(int(z)).symbol for z in numbers[bad]})


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
        graph = self._graphs[idx]
        atom_fea = torch.from_numpy(self._table[graph.numbers])
        nbr_fea = torch.from_numpy(self.gdf.expand(graph.nbr_dist).astype(np.float32))
        nbr_fea_idx = torch.from_numpy(graph.nbr_fea_idx)
        target = float(self.targets[idx]) if self.targets is not None else float("nan")
        return (atom_fea, nbr_fea, nbr_fea_idx), torch.tensor([target], dtype=torch.float32), self.ids[idx]


# --------------------------------------------------------------------------------------------------
# a chunk's results


@dataclass
class Shard:
    """The results of one chunk: CSV rows without header (``results``, ``test``, ``skipped``,
    in input order) and the figures of the final summary (``stats``)."""

    index: int
    results: str
    test: str
    skipped: str
    stats: dict = field(default_factory=dict)


def _csv_rows(frame, float_format: str | None = _FLOAT_FORMAT) -> str:
    return frame.to_csv(index=False, header=False, na_rep="", float_format=float_format) if len(frame) else ""


def _csv_header(columns: Sequence[str]) -> str:
    import pandas as pd

    return pd.DataFrame(columns=list(columns)).to_csv(index=False)


class Screener:
    """The models of a screening run, applied chunk by chunk.

    Parameters
    ----------
    sources : list of SourceModel
        The κ source models (in the last layer's order).
    property_models : dict or None
        Role → SourceModel (:func:`cgcnn.transfer.load_property_models`), for ``slack``.
    descriptors : {"none", "structure", "slack"}
    layer : LastLayer or None
        None: the source model's own predictions (``python -m cgcnn.predict``): one source
        model, no descriptors, rows ``cif_id,target,prediction`` at full precision.
    tables : list of dict
        Each model's atom feature table (atomic number → float32 vector of shape
        (orig_atom_fea_len,)), sources then property models, with ``table_sources`` naming them.
    settings : ScreenSettings
    """

    def __init__(self, sources, property_models, descriptors: str, layer, tables: list, table_sources: list[str],
                 settings: ScreenSettings):
        self.sources = list(sources)
        self.property_models = property_models
        self.descriptors = descriptors
        self.models = self.sources + (list(property_models.values()) if descriptors == "slack" else [])
        self.layer = layer
        self.settings = settings
        self.columns = RESULT_COLUMNS if layer is not None else TEST_COLUMNS
        self.float_format = _FLOAT_FORMAT if layer is not None else None
        self.tables = [_AtomTable(t, s) for t, s in zip(tables, table_sources)]
        params = []
        for model in self.models:
            if model.params not in params:
                params.append(model.params)
        self.params = params
        self.prep = _PrepSpec(tuple(params), descriptors != "none", settings.max_sites,
                              str(settings.cache_dir) if settings.cache_dir is not None else None)
        for model, table in zip(self.models, self.tables):
            model.check_data(_ChunkData(model.params, table, [], [], None))

    def record(self) -> dict:
        """What the last layer's inputs are (:func:`cgcnn.transfer.inputs_record`), from no crystal."""
        from cgcnn.transfer import Features, inputs_record

        n_crys = sum(m.crys_fea_len for m in self.models)
        names = [f"{m.path.name}:crys_fea[{j}]" for m in self.models for j in range(m.crys_fea_len)]
        n_desc = 0
        if self.descriptors != "none":
            from cgcnn.descriptors import SLACK_DESCRIPTORS, STRUCTURE_DESCRIPTORS

            extra = list(STRUCTURE_DESCRIPTORS) + (list(SLACK_DESCRIPTORS) if self.descriptors == "slack" else [])
            names += extra
            n_desc = len(extra)
        feats = Features([], None, np.zeros((0, n_crys), np.float32), np.zeros((0, len(self.sources))),
                         np.zeros((0, n_desc)), names, [atom_init_digest(t.atom_init) for t in self.tables])
        record = inputs_record(self.sources, feats, self.descriptors, self.property_models)
        record.update(n_features=n_crys + n_desc, groups=[n_crys, n_desc])  # Features.groups needs a row
        return record

    def prepare(self, crystals: Sequence[CrystalText]) -> list[_Prepared]:
        """Graphs of ``crystals`` built in this process."""
        return [_prepare_one(self.prep, c) for c in crystals]

    def finish(self, index: int, crystals: Sequence[CrystalText], prepared: Sequence[_Prepared]) -> Shard:
        """Run the networks and the last layer on a chunk whose graphs are built.

        Raises
        ------
        InputError
            With ``on_error="stop"``, the first crystal of the chunk that cannot be read or
            turned into a graph, or has an element missing from an atom table.
        """
        import pandas as pd

        from cgcnn.transfer import features_from_datasets

        for p in prepared:
            for note in p.notes:
                warnings.warn(note, UserWarning, stacklevel=2)

        keep, skipped = [], []
        for i, (crystal, prep) in enumerate(zip(crystals, prepared)):
            error = prep.error
            if error is None:
                for model, table in zip(self.models, self.tables):
                    missing = table.missing(prep.graphs[self.params.index(model.params)].numbers)
                    if missing:
                        error = f"{crystal.source}: element(s) {', '.join(missing)} not in {table.source}"
                        break
            if error is not None:
                if self.settings.on_error == "stop":
                    raise InputError(error)
                skipped.append((crystal.cif_id, error))
            else:
                keep.append(i)
        ids = [crystals[i].cif_id for i in keep]
        targets = np.array([crystals[i].target for i in keep], dtype=np.float64)
        has_targets = bool(len(targets)) and not np.isnan(targets).all()
        stats = {"n": len(keep), "skipped": len(skipped)}
        results = test = ""
        if keep:
            datasets = [_ChunkData(m.params, t, [prepared[i].graphs[self.params.index(m.params)] for i in keep],
                                   ids, targets if has_targets else None)
                        for m, t in zip(self.models, self.tables)]
            desc = np.stack([prepared[i].desc for i in keep]) if self.descriptors != "none" else None
            feats = features_from_datasets(self.models, datasets, len(self.sources), self.descriptors, desc,
                                           self.settings.batch_size)
            known = ~np.isnan(targets)
            if self.layer is None:  # the source model's predictions, as cgcnn.predict writes them
                prediction = feats.source_prediction[:, 0]
                frame = pd.DataFrame({"cif_id": ids, "target": targets, "prediction": prediction})
                stats.update(n_targets=int(known.sum()), abs_err=float(np.abs(prediction - targets)[known].sum()))
                return Shard(index, _csv_rows(frame, None), "", self._skipped(skipped), stats)
            pred = self.layer.predict(feats.X, self.settings.level)
            frame = pd.DataFrame({
                "cif_id": ids, "target": targets, "prediction": pred.prediction, "kappa": 10.0 ** pred.prediction,
                "prediction_low": pred.low, "prediction_high": pred.high,
                "kappa_low": 10.0 ** pred.low, "kappa_high": 10.0 ** pred.high,
                "in_domain": pred.in_domain, "domain_distance": pred.distance,
            })
            results = _csv_rows(frame)
            test = _csv_rows(pd.DataFrame({"cif_id": ids, "target": targets,
                                           "prediction": feats.source_prediction[:, 0]}))
            err = pred.prediction[known] - targets[known]
            stats.update(level=float(pred.level), out_of_domain=int((~pred.in_domain).sum()),
                         with_interval=int(np.isfinite(pred.low).sum()), n_targets=int(known.sum()),
                         abs_err=float(np.abs(err).sum()), sq_err=float((err ** 2).sum()),
                         sum_y=float(targets[known].sum()), sum_y2=float((targets[known] ** 2).sum()),
                         inside=int(((targets >= pred.low) & (targets <= pred.high))[known].sum()))
        return Shard(index, results, test, self._skipped(skipped), stats)

    @staticmethod
    def _skipped(skipped: list) -> str:
        import pandas as pd

        return _csv_rows(pd.DataFrame(skipped, columns=list(SKIPPED_COLUMNS))) if skipped else ""


# --------------------------------------------------------------------------------------------------
# the work folder: manifest and shards


def atom_tables(models: Sequence, data: CrystalInput, atom_init=None) -> tuple[list[dict], list[str]]:
    """Each model's atom feature table for ``data``, chosen as :meth:`SourceModel.dataset` chooses it:
    ``atom_init`` (``--atom-init``) when given, else the folder's ``atom_init.json``, else the
    table stored in the checkpoint.

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
        checkpoint and an archive without ``--atom-init``).
    """
    from cgcnn.data import load_atom_init

    tables, sources = [], []
    for model in models:
        path = atom_init if atom_init is not None else data.atom_init
        if path is not None:
            tables.append(load_atom_init(path))
            sources.append(str(path))
        elif model.atom_init is not None:
            tables.append(model.atom_init)
            sources.append("the given atom feature table")
        elif data.kind == "folder":
            tables.append(load_atom_init(data.path / "atom_init.json"))  # raises: not found
            sources.append(str(data.path / "atom_init.json"))
        else:
            raise InputError(f"{model.path}: stores no atom feature table; give --atom-init for the archive "
                             f"{data.path}")
    return tables, sources


def work_folder(results: str | os.PathLike) -> Path:
    """The folder of an unfinished run's shards: ``<results>.parts`` beside the results file."""
    results = Path(results)
    return results.with_name(results.name + ".parts")


class _Work:
    """The shards of one run (see the module docstring)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def shard_file(self, index: int, part: str) -> Path:
        suffix = "json" if part == "stats" else f"{part}.csv"
        return self.folder / f"{index:07d}.{suffix}"

    def done(self) -> set[int]:
        return {int(p.name.split(".")[0]) for p in self.folder.glob("*.json")
                if p.name != "manifest.json" and p.name.split(".")[0].isdigit()}

    def write(self, shard: Shard) -> None:
        from cgcnn.files import save_text

        for part in _PARTS:
            save_text(getattr(shard, part), self.shard_file(shard.index, part))
        save_text(json.dumps({"index": shard.index, "stats": shard.stats}), self.shard_file(shard.index, "stats"))

    def stats(self, index: int) -> dict:
        return json.loads(self.shard_file(index, "stats").read_text())["stats"]

    def writer(self, part: str, header: str, n_chunks: int) -> Callable:
        """A saver for :meth:`OutputSet.save` that writes ``header`` then every shard's ``part``."""
        def save(_, f):
            f.write(header.encode("utf-8"))
            for index in range(n_chunks):
                with open(self.shard_file(index, part), "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
        return save


def _manifest(screener: Screener, data: CrystalInput, settings: ScreenSettings, layer_sha: str) -> dict:
    return {
        "format": _MANIFEST_FORMAT,
        "source model": [s.sha256 for s in screener.sources],
        "property models": [m.sha256 for m in screener.models[len(screener.sources):]],
        "last layer": layer_sha,  # None for cgcnn.predict
        "input": {"path": str(data.path.resolve()), "crystals": len(data), "sha256": data.fingerprint()},
        "atom_init": [atom_init_digest(t.atom_init) for t in screener.tables],
        "options": {"--descriptors": screener.descriptors, "--batch-size": settings.batch_size,
                    "--chunk-size": settings.chunk, "--on-error": settings.on_error,
                    "--interval": settings.level, "--max-sites": settings.max_sites},
    }


def _check_manifest(folder: Path, saved: dict, now: dict) -> None:
    what = {"format": "another version of this tool", "source model": "another source model",
            "property models": "other property models", "last layer": "another last layer",
            "input": "another input (or the input has changed)", "atom_init": "another atom_init.json"}
    for key, text in what.items():
        if saved.get(key) != now[key]:
            raise InputError(f"{folder}: the interrupted run was made with {text}; --resume continues only the "
                             "same run (remove the folder to start again)")
    for option, value in now["options"].items():
        if saved.get("options", {}).get(option) != value:
            raise InputError(f"{folder}: the interrupted run was made with {option} "
                             f"{saved.get('options', {}).get(option)}, not {value}; give the same options to "
                             "--resume (or remove the folder to start again)")


# --------------------------------------------------------------------------------------------------
# progress


class _Progress:
    def __init__(self, total: int, already: int, show: bool):
        self.total, self.done, self.show = total, already, show
        self.start_done, self.t0 = already, time.monotonic()
        self.skipped = 0
        self.last = 0.0

    def update(self, n: int, skipped: int) -> None:
        self.done += n
        self.skipped += skipped
        now = time.monotonic()
        if not self.show or (now - self.last < 2 and self.done < self.total):
            return
        self.last = now
        elapsed = now - self.t0
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else float("nan")
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        skip = f", {self.skipped} skipped" if self.skipped else ""
        print(f"screened {self.done:,} of {self.total:,} crystals ({self.done / max(self.total, 1):.0%}), "
              f"{rate:.1f} crystals/s, {_duration(left)} left{skip}", file=sys.stderr, flush=True)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.t0
        return (self.done - self.start_done) / elapsed if elapsed > 0 else float("nan")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "? "
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# --------------------------------------------------------------------------------------------------
# running the chunks


def _local_chunks(screener: Screener, chunks, settings: ScreenSettings):
    """Yield each chunk's Shard, in order; graphs built by a pool of processes one chunk ahead."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = available_cores() if settings.workers is None else settings.workers
    if workers < 1:
        for index, crystals in chunks:
            yield screener.finish(index, crystals, screener.prepare(crystals))
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_pool_start,
                               initargs=(screener.prep,))
    pending: deque = deque()
    task = max(1, min(32, settings.chunk // (4 * workers)))

    def submit() -> None:
        item = next(chunks, None)
        if item is not None:
            index, crystals = item
            pending.append((index, crystals, [pool.submit(_pool_prepare, crystals[i:i + task])
                                              for i in range(0, len(crystals), task)]))

    try:
        for _ in range(2):
            submit()
        while pending:
            index, crystals, futures = pending.popleft()
            prepared = [p for f in futures for p in f.result()]
            submit()
            yield screener.finish(index, crystals, prepared)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_WORKER_SCREENERS: dict = {}


def _dask_screen_chunk(spec: dict, index: int, crystals: list[CrystalText]) -> Shard:
    """A Dask task: the Shard of one chunk, the models loaded once per worker from ``spec``'s bytes."""
    screener = _WORKER_SCREENERS.get(spec["key"])
    if screener is None:
        screener = _screener_from_spec(spec)
        _WORKER_SCREENERS.clear()
        _WORKER_SCREENERS[spec["key"]] = screener
    torch.set_num_threads(1)
    try:
        return screener.finish(index, crystals, screener.prepare(crystals))
    except InputError as exc:  # returned, not raised: the client raises it as one line, no worker log
        return exc


def _screener_from_spec(spec: dict) -> Screener:
    from cgcnn.lastlayer import LastLayer
    from cgcnn.source import SourceModel
    from cgcnn.transfer import load_property_models

    folder = Path(tempfile.mkdtemp(prefix="cgcnn-screen-"))
    paths = {}
    for name, data in spec["files"].items():
        sub = folder / str(len(paths))
        sub.mkdir()
        (sub / name.split("/", 1)[1]).write_bytes(data)
        paths[name] = sub / name.split("/", 1)[1]
    device = spec["device"]
    kwargs = {"device": device} if device else {}
    layer = LastLayer.load(paths[spec["layer"]], trust_pickle=spec["trust_pickle"]) if spec["layer"] else None
    sources = [SourceModel.load(paths[k], require_regression=layer is not None, **kwargs) for k in spec["sources"]]
    props = load_property_models([paths[k] for k in spec["props"]], device=device) if spec["props"] else None
    return Screener(sources, props, spec["descriptors"], layer, spec["tables"], spec["table_sources"],
                    spec["settings"])


def _dask_spec(screener: Screener, layer_path: Path, trust_pickle: bool, device) -> dict:
    files = {}
    sources, props = [], []
    for i, model in enumerate(screener.models):
        key = f"{i}/{model.path.name}"
        files[key] = model.path.read_bytes()
        (sources if i < len(screener.sources) else props).append(key)
    if layer_path is not None:
        files[f"layer/{layer_path.name}"] = layer_path.read_bytes()
    h = hashlib.sha256()
    for k in sorted(files):
        h.update(k.encode() + hashlib.sha256(files[k]).digest())
    return {"key": h.hexdigest(), "files": files, "sources": sources, "props": props,
            "layer": f"layer/{layer_path.name}" if layer_path is not None else None,
            "trust_pickle": trust_pickle, "device": None if device is None else str(device),
            "descriptors": screener.descriptors, "tables": [t.atom_init for t in screener.tables],
            "table_sources": [t.source for t in screener.tables], "settings": screener.settings}


def _dask_client(address: str, log):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--dask needs dask.distributed: pip install \"dask[distributed]\"") from None
    if address == "local":
        cores = available_cores()
        log(f"starting a Dask LocalCluster of {cores} worker process(es), one thread each")
        cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.CRITICAL)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=30), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--dask {address}: cannot reach a Dask scheduler there ({exc})") from None


def _dask_chunks(client, chunks, spec: dict):
    """Yield each chunk's Shard as the cluster finishes it (any order), at most two per worker thread
    in flight."""
    from dask.distributed import wait

    running: set = set()
    try:
        threads = max(1, sum(client.nthreads().values()))
        spec_future = client.scatter(spec, broadcast=True, hash=False)
        exhausted = False
        while running or not exhausted:
            while not exhausted and len(running) < 2 * threads:
                item = next(chunks, None)
                if item is None:
                    exhausted = True
                    break
                running.add(client.submit(_dask_screen_chunk, spec_future, item[0], item[1], pure=False))
            if not running:
                break
            done, running = wait(running, return_when="FIRST_COMPLETED")
            running = set(running)
            for future in done:
                shard = future.result()
                if isinstance(shard, InputError):
                    raise shard
                yield shard
    finally:
        for future in running:
            future.cancel()


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class ScreenSummary:
    """What a finished run reports: crystals predicted and skipped, the figures of the
    printed summary, and the throughput of this run (crystals/s, resumed chunks excluded)."""

    n: int
    skipped: int
    level: float
    out_of_domain: int
    with_interval: int
    n_targets: int
    mae: float
    r2: float
    coverage: float
    rate: float
    resumed: int


def screen(screener: Screener, data: CrystalInput, outputs, results: Path, test_results: Path | None,
           skipped_csv: Path | None, layer_path: Path | None, trust_pickle: bool = False, device=None,
           log: Callable[[str], None] = lambda msg: None) -> ScreenSummary:
    """Screen every crystal of ``data``; write ``results``, ``test_results`` and ``skipped_csv``.

    Parameters
    ----------
    screener : Screener
    data : CrystalInput
    outputs : cgcnn.files.OutputSet
        Holding ``results``, ``test_results`` and ``skipped_csv`` (checked before any work).
    results, test_results : Path
        The CSV files (columns :data:`RESULT_COLUMNS`, :data:`TEST_COLUMNS`); without a last
        layer, ``results`` has the columns :data:`TEST_COLUMNS` and ``test_results`` is None.
    skipped_csv : Path or None
        ``cif_id,reason`` of the crystals left out (``on_error="skip"``; None otherwise).
    layer_path : Path or None
        The last layer's file (None without one) (its SHA-256 goes into the manifest; Dask workers load it).
    trust_pickle, device
        As the last layer and source models were loaded (for Dask workers).
    log : callable
        Gets one-line messages (resumption, Dask).

    Returns
    -------
    ScreenSummary

    Raises
    ------
    InputError
        A crystal that cannot be screened (``on_error="stop"``), a work folder of another run
        (or one left by an interrupted run without ``resume``), an unreachable scheduler.
    KeyboardInterrupt
        On Ctrl-C, with a message on how to resume; SIGTERM raises ``SystemExit(143)``.
        Shards already written are kept in both cases.
    """
    from cgcnn.files import file_sha256, save_text

    settings = screener.settings
    settings.check()
    chunk = settings.chunk
    n_chunks = -(-len(data) // chunk)
    folder = work_folder(results)
    manifest = _manifest(screener, data, settings, file_sha256(layer_path) if layer_path is not None else None)
    work = _Work(folder)
    done: set[int] = set()
    if folder.exists():
        if not settings.resume:
            raise InputError(f"{folder}: left by an interrupted run; add --resume to continue it, or remove the "
                             "folder to start again")
        try:
            saved = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            raise InputError(f"{folder}: no readable manifest.json; not the work folder of a run of this tool "
                             "(remove it to start again)") from None
        _check_manifest(folder, saved, manifest)
        done = {i for i in work.done() if i < n_chunks}
        log(f"resuming: {len(done)} of {n_chunks} chunks already done in {folder}")
    else:
        if settings.resume:
            log(f"nothing to resume ({folder} does not exist); starting")
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise InputError(f"{folder}: cannot make the work folder ({exc.strerror})") from None
        save_text(json.dumps(manifest, indent=1), folder / "manifest.json")

    client = cluster = None
    if settings.dask:
        client, cluster = _dask_client(settings.dask, log)
    already = sum(min(chunk, len(data) - i * chunk) for i in done)
    progress = _Progress(len(data), already, settings.progress)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def terminate(signum, frame):
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, terminate)
    kept = f"the finished chunks are kept in {folder}: run the same command with --resume to continue"
    shards = None
    try:
        chunks = data.chunks(chunk, done)
        if client is not None:
            shards = _dask_chunks(client, chunks, _dask_spec(screener, layer_path, trust_pickle, device))
        else:
            shards = _local_chunks(screener, chunks, settings)
        for shard in shards:
            work.write(shard)
            progress.update(shard.stats["n"] + shard.stats["skipped"], shard.stats["skipped"])
    except InputError:
        shutil.rmtree(folder, ignore_errors=True)  # a bad input: nothing written, nothing to resume
        raise
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; {kept}") from None
    except BaseException:
        print(f"stopped; {kept}", file=sys.stderr)
        raise
    finally:
        if shards is not None:
            shards.close()  # stops the pool or cancels the cluster's tasks at once
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()

    totals: dict = {}
    for index in range(n_chunks):
        for key, value in work.stats(index).items():
            totals[key] = value if key == "level" else totals.get(key, 0) + value
    with outputs:
        outputs.save(results, None, saver=work.writer("results", _csv_header(screener.columns), n_chunks))
        if test_results is not None:
            outputs.save(test_results, None, saver=work.writer("test", _csv_header(TEST_COLUMNS), n_chunks))
        if skipped_csv is not None:
            outputs.save(skipped_csv, None, saver=work.writer("skipped", _csv_header(SKIPPED_COLUMNS), n_chunks))
    shutil.rmtree(folder, ignore_errors=True)
    n_t = totals.get("n_targets", 0)
    mae = totals["abs_err"] / n_t if n_t else math.nan
    ss_tot = totals["sum_y2"] - totals["sum_y"] ** 2 / n_t if n_t and "sum_y2" in totals else math.nan
    r2 = 1 - totals["sq_err"] / ss_tot if n_t > 1 and ss_tot > 0 else math.nan
    return ScreenSummary(
        n=totals.get("n", 0), skipped=totals.get("skipped", 0), level=totals.get("level", math.nan),
        out_of_domain=totals.get("out_of_domain", 0), with_interval=totals.get("with_interval", 0), n_targets=n_t,
        mae=mae, r2=r2, coverage=totals.get("inside", 0) / n_t if n_t else math.nan, rate=progress.rate,
        resumed=len(done))
