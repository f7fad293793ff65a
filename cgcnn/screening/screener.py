"""The models of a screening run applied to one chunk of crystals (:class:`Screener`), giving its
rows (:class:`Shard`); how the run goes (:class:`ScreenSettings`).

A chunk's graphs are built by :mod:`cgcnn.screening.chunk`, anywhere; :meth:`Screener.finish` runs the
source and property networks batch by batch, the descriptors and the last layer
(:class:`cgcnn.transfer.lastlayer.LastLayer`) on them, and gives the chunk's CSV rows, in input order,
with the figures of the final summary.  The run itself (chunks, shards, resumption, Dask) is
:func:`cgcnn.screen.screen`.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cgcnn import InputError
from cgcnn.crystals import CrystalText
from cgcnn.data import atom_init_digest
from cgcnn.screening.chunk import AtomTable, BatchMaker, BatchOut, ChunkData, PrepSpec, collated

__all__ = ["ON_ERROR", "ScreenSettings", "Screener", "Shard", "RESULT_COLUMNS", "TEST_COLUMNS",
           "SKIPPED_COLUMNS"]

#: Choices of ``--on-error``.
ON_ERROR = ("stop", "skip")
RESULT_COLUMNS = ("cif_id", "target", "prediction", "kappa", "prediction_low", "prediction_high",
                  "kappa_low", "kappa_high", "in_domain", "domain_distance")
TEST_COLUMNS = ("cif_id", "target", "prediction")
SKIPPED_COLUMNS = ("cif_id", "reason")
_FLOAT_FORMAT = "%.8g"  # as OutputSet.write_csv


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
        Largest crystal (default :data:`cgcnn.crystals.MAX_SITES`).
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


def _csv_column(values, float_format: str | None) -> list[str]:
    """One column's fields as pandas's ``to_csv(na_rep="", float_format=float_format)`` writes them."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        if float_format is None:  # numpy's shortest repr of the column's own precision, as pandas
            fields = array.astype(str).tolist()
        else:
            fields = [float_format % v for v in array.tolist()]
        for i in np.flatnonzero(np.isnan(array)).tolist():
            fields[i] = ""
        return fields
    if array.dtype.kind == "b":
        return ["True" if v else "False" for v in array.tolist()]
    return ["" if v is None else str(v) for v in values]


def _csv_rows(columns: dict, float_format: str | None = _FLOAT_FORMAT) -> str:
    """CSV rows without header, byte for byte pandas's ``DataFrame(columns).to_csv(index=False,
    header=False, na_rep="", float_format=float_format)`` (without importing pandas): floats
    formatted with ``float_format`` (None: shortest repr), NaN empty, booleans True/False,
    text quoted where needed (``csv.QUOTE_MINIMAL``), lines ending in ``\n``."""
    fields = [_csv_column(values, float_format) for values in columns.values()]
    if not fields or not fields[0]:
        return ""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(zip(*fields))
    return out.getvalue()


def _csv_header(columns: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(columns))
    return out.getvalue()


def prep_spec(models: Sequence, descriptors: str, settings: ScreenSettings) -> PrepSpec:
    """What the graph-building processes make of each crystal for these models (source models, then
    property models with ``slack``): one graph per distinct GraphParams, in order, and the structure
    descriptors unless ``descriptors`` is ``none``."""
    return spec_from_params([model.params for model in models], descriptors, settings)


def spec_from_params(params: Sequence, descriptors: str, settings: ScreenSettings) -> PrepSpec:
    """:func:`prep_spec` from the models' GraphParams, in the models' order (no torch needed)."""
    distinct = []
    for p in params:
        if p not in distinct:
            distinct.append(p)
    return PrepSpec(tuple(distinct), descriptors != "none", settings.max_sites,
                     str(settings.cache_dir) if settings.cache_dir is not None else None)


class _Rows:
    """The rows of a chunk as :func:`cgcnn.transfer.assemble_features` reads them."""

    def __init__(self, ids):
        self.ids, self.targets = ids, None


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
    bte : cgcnn.transfer.BTEValues, optional
        BTE values for a last layer with a BTE model (:mod:`cgcnn.transfer.bte`): ``results`` then
        gets the columns :data:`cgcnn.transfer.ROUTE_COLUMNS`, with or without values.
    """

    def __init__(self, sources, property_models, descriptors: str, layer, tables: list, table_sources: list[str],
                 settings: ScreenSettings, bte=None):
        self.sources = list(sources)
        self.property_models = property_models
        self.descriptors = descriptors
        self.models = self.sources + (list(property_models.values()) if descriptors == "slack" else [])
        self.layer = layer
        self.settings = settings
        self.bte = bte
        self.routes = layer is not None and getattr(layer, "bte", None) is not None  # two models, a route each
        self.columns = RESULT_COLUMNS if layer is not None else TEST_COLUMNS
        if self.routes:
            from cgcnn.transfer import ROUTE_COLUMNS

            self.columns = RESULT_COLUMNS + ROUTE_COLUMNS
        self.float_format = _FLOAT_FORMAT if layer is not None else None
        self.tables = [AtomTable(t, s) for t, s in zip(tables, table_sources)]
        self.prep = prep_spec(self.models, descriptors, settings)
        self.params = list(self.prep.params)
        for model, table in zip(self.models, self.tables):
            model.check_data(ChunkData(model.params, table, [], [], None))
        here = all(m.device.type == "cpu" for m in self.models)  # else the networks run here, on the GPU
        self.maker = BatchMaker(self.prep, self.models, self.tables, networks=here)
        self.model_set = None
        if not here:
            from cgcnn.model import ModelSet

            self.model_set = ModelSet(self.models, self.maker.keys)

    def record(self) -> dict:
        """What the last layer's inputs are (:func:`cgcnn.transfer.inputs_record`), from no crystal."""
        from cgcnn.transfer import STRUCTURE_DESCRIPTORS, assemble_features, inputs_record

        class _NoRows:
            ids, targets = [], None

        feats = assemble_features(_NoRows, self.models,
                                  [np.zeros((0, m.crys_fea_len), np.float32) for m in self.models],
                                  [np.zeros(0) for _ in self.models],
                                  [atom_init_digest(t.atom_init) for t in self.tables],
                                  len(self.sources), self.descriptors, np.zeros((0, len(STRUCTURE_DESCRIPTORS))))
        return inputs_record(self.sources, feats, self.descriptors, self.property_models)

    def blocks(self, n: int) -> list[tuple[int, int]]:
        """(start, end) of the blocks of a chunk of ``n`` crystals: each batch of ``batch_size`` crystals
        cut into blocks of :data:`cgcnn.model.SLICE_CRYSTALS` from its start, the units the networks run
        on (:func:`cgcnn.model.stack._slices`) and the tasks of the pool."""
        from cgcnn.model import SLICE_CRYSTALS

        b = self.settings.batch_size
        return [(i, min(i + SLICE_CRYSTALS, start + b, n))
                for start in range(0, n, b) for i in range(start, min(start + b, n), SLICE_CRYSTALS)]

    def batches(self, crystals: Sequence[CrystalText]) -> list[BatchOut]:
        """A chunk's blocks (:meth:`blocks`) made in this process."""
        return [self.maker.make(crystals[i:j]) for i, j in self.blocks(len(crystals))]

    def chunk_features(self, crystals: Sequence[CrystalText], outs: Sequence[BatchOut]):
        """The last-layer inputs of a chunk's crystals whose batches are made (:meth:`batches`, or by a
        pool of processes), after the networks where they run in this process (on a GPU).

        Returns
        -------
        ids : list of str
            The ``cif_id`` of the crystals kept, in order.
        targets : ndarray of shape (n,)
            Their log10 κ_L (NaN where unknown).
        skipped : list of (cif_id, reason)
            The crystals left out (``on_error="skip"``).
        features : Features or None
            :func:`cgcnn.transfer.assemble_features` of the crystals kept (None when none is).

        Raises
        ------
        InputError
            With ``on_error="stop"``, the first crystal of the chunk that cannot be read or
            turned into a graph, or has an element missing from an atom table.
        """
        from cgcnn.transfer import STRUCTURE_DESCRIPTORS, assemble_features

        for out in outs:
            for notes in out.notes:
                for note in notes:
                    warnings.warn(note, UserWarning, stacklevel=2)
        errors = [error for out in outs for error in out.errors]
        keep, skipped = [], []
        for i, (crystal, error) in enumerate(zip(crystals, errors)):
            if error is not None:
                if self.settings.on_error == "stop":
                    raise InputError(error)
                skipped.append((crystal.cif_id, error))
            else:
                keep.append(i)
        ids = [crystals[i].cif_id for i in keep]
        targets = np.array([crystals[i].target for i in keep], dtype=np.float64)
        if not keep:
            return ids, targets, skipped, None
        runs = [self._networks(out) for out in outs if any(e is None for e in out.errors)]
        feas = [np.concatenate([r[0][m] for r in runs]) for m in range(len(self.models))]
        preds = [np.concatenate([r[1][m] for r in runs]) for m in range(len(self.models))]
        desc = None
        if self.descriptors != "none":
            desc = np.concatenate([out.desc for out in outs if out.desc is not None])
            desc = desc.reshape(-1, len(STRUCTURE_DESCRIPTORS))
        feats = assemble_features(_Rows(ids), self.models, feas, preds,
                                  [atom_init_digest(t.atom_init) for t in self.tables], len(self.sources),
                                  self.descriptors, desc)
        return ids, targets, skipped, feats

    def finish(self, index: int, crystals: Sequence[CrystalText], outs: Sequence[BatchOut]) -> Shard:
        """Run the last layer on a chunk whose batches are made (:meth:`chunk_features`).

        Raises
        ------
        InputError
            As :meth:`chunk_features`.
        """
        ids, targets, skipped, feats = self.chunk_features(crystals, outs)
        stats = {"n": len(ids), "skipped": len(skipped)}
        results = test = ""
        if feats is not None:
            known = ~np.isnan(targets)
            if self.layer is None:  # the source model's predictions, as cgcnn.predict writes them
                prediction = feats.source_prediction[:, 0]
                frame = {"cif_id": ids, "target": targets, "prediction": prediction}
                stats.update(n_targets=int(known.sum()), abs_err=float(np.abs(prediction - targets)[known].sum()))
                return Shard(index, _csv_rows(frame, None), "", self._skipped(skipped), stats)
            from threadpoolctl import threadpool_limits

            # one BLAS thread, as in a Dask worker (whose nanny sets one): the last digits of a Gaussian
            # process's prediction depend on the BLAS threads, and results must not depend on -j or --dask
            routes = {}
            with threadpool_limits(limits=1):
                if self.routes:
                    from cgcnn.transfer import predict_routes

                    pred, routes = predict_routes(self.layer, feats.X, ids, self.bte, feats.groups,
                                                  self.settings.level)
                else:
                    pred = self.layer.predict(feats.X, self.settings.level)
            frame = {
                "cif_id": ids, "target": targets, "prediction": pred.prediction, "kappa": 10.0 ** pred.prediction,
                "prediction_low": pred.low, "prediction_high": pred.high,
                "kappa_low": 10.0 ** pred.low, "kappa_high": 10.0 ** pred.high,
                "in_domain": pred.in_domain, "domain_distance": pred.distance, **routes,
            }
            results = _csv_rows(frame)
            test = _csv_rows({"cif_id": ids, "target": targets, "prediction": feats.source_prediction[:, 0]})
            err = pred.prediction[known] - targets[known]
            stats.update(level=float(pred.level), out_of_domain=int((~pred.in_domain).sum()),
                         with_interval=int(np.isfinite(pred.low).sum()), n_targets=int(known.sum()),
                         abs_err=float(np.abs(err).sum()), sq_err=float((err ** 2).sum()),
                         sum_y=float(targets[known].sum()), sum_y2=float((targets[known] ** 2).sum()),
                         inside=int(((targets >= pred.low) & (targets <= pred.high))[known].sum()))
            if routes:
                stats.update(route_bte=routes["route"].count("bte"), route_plain=routes["route"].count("plain"))
        return Shard(index, results, test, self._skipped(skipped), stats)

    def _networks(self, out: BatchOut) -> tuple[list, list]:
        """A batch's ``crys_fea`` and predictions: made with it, or computed here from its collated inputs."""
        if out.feas is not None:
            return out.feas, out.preds
        return self.model_set.run({key: collated(value) for key, value in out.inputs.items()})

    @staticmethod
    def _skipped(skipped: list) -> str:
        return _csv_rows({"cif_id": [s[0] for s in skipped], "reason": [s[1] for s in skipped]}) if skipped else ""
