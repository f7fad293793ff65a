"""``KappaModel``: the transfer tool in a few lines of Python, for notebooks and workflows.

    from cgcnn import KappaModel
    model = KappaModel.fit("data/sample")                 # as --train 1 (the recommended route)
    model.save("last_layer.sav")
    table = model.predict(structures)                     # as --train 0: results.csv's columns
    model = KappaModel.load("last_layer.sav", source="models/source.pth.tar")

It runs the machinery of the command line, nothing of its own: the route of
:func:`cgcnn.api.fit_route`, the features of :func:`cgcnn.transfer.compute_features` (a data folder) or
of the screening chunks (:meth:`cgcnn.screening.Screener.chunk_features`, the same numbers), the last layer
of :class:`cgcnn.transfer.LastLayer` (T. Zhu et al., Energy Environ. Sci. 14, 3559 (2021); intervals and
domain as documented there) and the screening engine's rows (:meth:`cgcnn.screening.Screener.finish`), so
that a table from :meth:`KappaModel.predict` holds the values of ``results.csv``.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cgcnn import InputError
from cgcnn.api.crystals import crystals_of, open_structures
from cgcnn.api.routes import Route, fit_route, predict_route

__all__ = ["KappaModel"]


class KappaModel:
    """A fitted last layer with its source models: κ_L of any crystal, log10 κ_L in W m⁻¹ K⁻¹.

    Make one with :meth:`fit` or :meth:`load`.  Attributes after :meth:`fit` (as ``--train 1`` prints
    them): ``chosen`` (the last-layer type), ``cv_mae`` (cross-validated MAE, log10 κ_L; None without
    cross-validation), ``cv_mae_constant`` (that of predicting the mean), ``cv_table`` (type → CV MAE of
    ``auto``'s candidates), ``coverage`` and ``width`` (cross-validated coverage and mean width of the
    interval), ``train_mae``, ``note``; ``layer`` is the :class:`cgcnn.transfer.LastLayer`.
    """

    def __init__(self, layer, route: Route, sources, property_models, *, batch_size: int = 500,
                 workers: int | None = 0, atom_init=None, device=None):
        self.layer = layer
        self.route = route
        self.sources = sources
        self.property_models = property_models
        self.batch_size = batch_size
        self.workers = workers
        self.atom_init = atom_init
        self.device = device
        self.note = route.note

    # ------------------------------------------------------------------------------------------
    # what --train 1 prints

    @property
    def chosen(self) -> str:
        return self.layer.kind

    @property
    def cv_mae(self) -> float | None:
        return self.layer.cv.get("mae")

    @property
    def cv_mae_constant(self) -> float | None:
        return self.layer.cv.get("mae_constant")

    @property
    def cv_table(self) -> dict:
        return dict(self.layer.cv.get("table") or {})

    @property
    def coverage(self) -> float | None:
        return self.layer.interval.get("cv_coverage")

    @property
    def width(self) -> float | None:
        return self.layer.interval.get("cv_width")

    @property
    def train_mae(self) -> float:
        return self.layer.train_mae

    # ------------------------------------------------------------------------------------------

    @classmethod
    def fit(cls, structures_or_folder, log10_kappa=None, source: str | os.PathLike = "models/source.pth.tar", *,
            last_layer_type: str | None = None, descriptors: str | None = None, property_models: str | None = None,
            members: str = "auto", original: bool = False, seed: int = 0, cv_folds: int = 5,
            interval: float | None = None, ids=None, batch_size: int = 500, workers: int | None = 0, atom_init=None,
            cache_dir=None, device=None, progress: bool = False, bte=None, bte_mode: str = "stack") -> KappaModel:
        """Fit the last layer, with the options and defaults of ``transfer_learning_kappa.py --train 1``.

        Parameters
        ----------
        structures_or_folder : path or iterable
            A CGCNN data folder (``id_prop.csv`` with targets, ``<cif_id>.cif``), or crystals: pymatgen
            ``Structure``, ASE ``Atoms`` or structure files (:func:`cgcnn.api.crystals_of`).
        log10_kappa : sequence of float, optional
            log10 κ_L (W m⁻¹ K⁻¹) of each crystal; needed with crystals, not with a folder.
        source : path
            The κ source model (several comma-separated; ``MODELPATH``).
        last_layer_type, descriptors, property_models, members, original, seed, cv_folds, interval
            As ``--last-layer-type`` (default ``auto``), ``--descriptors`` (default ``slack``),
            ``--property-models``, ``--members``, ``--original``, ``--seed``, ``--cv-folds`` and ``--interval``
            (default 0.9; as there, a level given is checked against the number of crystals, the default
            gives no interval where the crystals are too few).
        ids : sequence of str, optional
            ``cif_id`` of the crystals (default: their own ids, else their positions).
        batch_size, workers, atom_init, cache_dir, device, progress
            As ``-b``, ``-j`` (default here 0: graphs built in this process), ``--atom-init``,
            ``--cache-dir``, ``--disable-cuda`` (``device="cpu"``) and ``-q``.
        bte, bte_mode
            As ``--bte`` and ``--bte-mode``: BTE values of the crystals (a ``refined.csv`` of
            ``python -m cgcnn.refine``, or a mapping ``cif_id`` → log10 κ_L, :meth:`cgcnn.transfer.BTEValues.of`);
            the last layer then also holds the BTE model (:func:`cgcnn.transfer.fit_bte`).  A data folder
            whose ``compounds.csv`` has a ``log10_kappa_bte`` column uses it, as ``--train 1`` does.

        Raises
        ------
        InputError
            As ``--train 1``: a crystal, folder, model or option at fault, targets that are not log10 κ_L, BTE
            values that cannot be read or that too few crystals have.
        """
        from cgcnn.data import check_log10_kappa
        from cgcnn.options import BTE_MODES, check_values
        from cgcnn.transfer import (
            BTEValues,
            LastLayer,
            check_level,
            compute_features,
            fit_bte,
            folder_bte,
            inputs_record,
        )

        check_values({"seed": seed, "cv_folds": cv_folds, "interval": interval, "batch_size": batch_size,
                      "workers": workers}, prefix="")
        if bte_mode not in BTE_MODES:
            raise InputError(f"bte_mode {bte_mode!r}: choose one of {', '.join(BTE_MODES)}")
        bte = BTEValues.of(bte)
        route = fit_route(str(source), last_layer_type, descriptors, property_models, members, original)
        sources, props = route.load_models(device)
        given = Path(structures_or_folder) if isinstance(structures_or_folder, str | os.PathLike) else None
        if given is not None and (given.is_dir() or not given.exists()):  # a data folder (or none: said so)
            if log10_kappa is not None:
                raise InputError("log10_kappa goes with crystals; a data folder's targets are in its id_prop.csv")
            folder = Path(structures_or_folder)
            feats = compute_features(sources, folder, batch_size=batch_size, workers=workers, atom_init=atom_init,
                                     cache_dir=cache_dir, progress=progress, descriptors=route.descriptors,
                                     property_models=props)
            where = str(folder / "id_prop.csv")
            targets = feats.targets
            if bte is None:
                bte, _ = folder_bte(None, folder)
            if targets is None:
                raise InputError(f"{where}: fitting needs targets (cif_id,log10 κ_L rows)")
        else:
            if log10_kappa is None:
                raise InputError("KappaModel.fit: give log10_kappa, the log10 κ_L of each crystal")
            model = cls(None, route, sources, props, batch_size=batch_size, workers=workers, atom_init=atom_init,
                        device=device)
            targets = np.asarray(list(log10_kappa), dtype=np.float64)
            feats = model._features(structures_or_folder, ids, targets)
            where = "log10_kappa"
            if len(feats.ids) != len(targets):
                raise InputError(f"log10_kappa: {len(targets)} values for {len(feats.ids)} crystals")
        check_log10_kappa(targets, where, feats.ids)
        n = len(feats.ids)
        if n < 2:
            raise InputError(f"{where}: the last layer needs at least 2 crystals with targets, got {n}")
        if interval is not None:
            check_level(interval, n, where)
        level = 0.9 if interval is None else interval
        layer = LastLayer.fit(feats.X, targets, route.kind, seed, cv_folds, level=level,
                              inputs=inputs_record(sources, feats, route.descriptors, props), groups=feats.groups)
        if bte is not None:
            fit_bte(layer, feats.X, targets, feats.ids, bte, feats.groups, kind=route.kind, mode=bte_mode, seed=seed,
                    cv_folds=cv_folds, level=level)
        return cls(layer, route, sources, props, batch_size=batch_size, workers=workers, atom_init=atom_init,
                   device=device)

    def save(self, path: str | os.PathLike = "last_layer.sav") -> None:
        """Write ``last_layer.sav`` (the file ``--train 1`` writes; atomically), never over a model file it
        reads (:class:`cgcnn.outputs.OutputSet`, as the command line).

        Raises
        ------
        InputError
            ``path`` is one of the model files (or the atom feature table), or cannot be written.
        """
        from cgcnn.outputs import OutputSet

        inputs = self.route.model_files()
        inputs["atom_init"] = self.atom_init
        outs = OutputSet({"path": path}, inputs=inputs)
        with outs:
            self.layer.save_to(outs, path)

    @classmethod
    def load(cls, path: str | os.PathLike = "last_layer.sav", source: str | os.PathLike = "models/source.pth.tar", *,
             property_models: str | None = None, trust_pickle: bool = False, batch_size: int = 500,
             workers: int | None = 0, atom_init=None, device=None) -> KappaModel:
        """A ``last_layer.sav`` (safely, as ``--train 0`` reads it) with its source and property models
        (found as ``--train 0`` finds them; checked against the file's record when predicting).

        Raises
        ------
        InputError
            An unreadable or refused file; a missing model.
        """
        from cgcnn.options import check_values
        from cgcnn.transfer import LastLayer

        check_values({"batch_size": batch_size, "workers": workers}, prefix="")
        layer = LastLayer.load(path, trust_pickle=trust_pickle)
        route = predict_route(str(source), layer, property_models)
        sources, props = route.load_models(device)
        return cls(layer, route, sources, props, batch_size=batch_size, workers=workers, atom_init=atom_init,
                   device=device)

    # ------------------------------------------------------------------------------------------

    def _screener(self, layer, level: float | None = None, data=None, bte=None):
        """The screening engine for these models; ``data``: the :class:`cgcnn.crystals.CrystalInput` read (a
        folder's ``atom_init.json`` counts, as for the command line), None for crystals of a session."""
        from cgcnn.crystals import CrystalInput
        from cgcnn.screening import Screener, ScreenSettings, atom_tables

        models = self.sources + (list(self.property_models.values()) if self.route.descriptors == "slack" else [])
        data = data if isinstance(data, CrystalInput) else None
        tables, table_sources = atom_tables(models, data, self.atom_init, option="atom_init=")
        settings = ScreenSettings(batch_size=self.batch_size, workers=self.workers, level=level, progress=False)
        settings.check()
        return Screener(self.sources, self.property_models, self.route.descriptors, layer, tables, table_sources,
                        settings, bte=bte)

    def _chunks(self, structures, ids, targets, size: int) -> Iterator:
        crystals = crystals_of(structures, ids)
        if targets is not None:
            crystals = (_with_target(c, t) for c, t in zip(crystals, targets))
        for index in itertools.count():
            chunk = list(itertools.islice(crystals, size))
            if not chunk:
                return
            yield index, chunk

    def _features(self, structures, ids, targets=None):
        """:class:`cgcnn.transfer.Features` of crystals, chunk by chunk (rows in input order)."""
        from cgcnn.transfer import Features

        structures = open_structures(structures)
        screener = self._screener(None, data=structures)
        parts = []
        for _, chunk in self._chunks(structures, ids, targets, screener.settings.chunk):
            _, _, _, feats = screener.chunk_features(chunk, screener.batches(chunk))
            parts.append(feats)
        if not parts:
            raise InputError("no crystals given")
        first = parts[0]
        return Features(
            [i for f in parts for i in f.ids],
            np.concatenate([f.targets for f in parts]) if first.targets is not None else None,
            np.concatenate([f.crys_fea for f in parts]), np.concatenate([f.source_prediction for f in parts]),
            np.concatenate([f.descriptors for f in parts]), first.names, first.atom_init, first.members)

    def featurize(self, structures, ids=None):
        """The last-layer inputs of crystals (``crys_fea`` of each network and the descriptors), for users
        who bring their own regressor.

        Returns
        -------
        DataFrame
            One row per crystal (index ``cif_id``, input order), one named column per input
            (``<model file>:crys_fea[j]``, descriptor names; ``@k`` for ensemble member k).
        """
        import pandas as pd

        feats = self._features(structures, ids)
        return pd.DataFrame(feats.X, index=pd.Index(feats.ids, name="cif_id"), columns=feats.names)

    def predict(self, structures, interval: float | None = 0.9, ids=None, bte=None):
        """κ_L of crystals, with the last layer's interval and applicability-domain flag.

        Parameters
        ----------
        structures : iterable
            pymatgen ``Structure``, ASE ``Atoms`` or structure files (:func:`cgcnn.api.crystals_of`); read and
            predicted chunk by chunk, so memory stays bounded for a long iterable.
        interval : float or None
            Level of the prediction interval (None: the level stored at fitting).
        ids : sequence of str, optional
            ``cif_id`` of the crystals.
        bte : path or mapping, optional
            As ``--train 0 --bte``: BTE values of the crystals (:meth:`cgcnn.transfer.BTEValues.of`), for a last
            layer fit with them.

        Returns
        -------
        DataFrame
            The columns of ``results.csv`` (``target`` empty), index ``cif_id``, rows in input order:
            ``prediction``, ``prediction_low``, ``prediction_high`` in log10 κ_L; ``kappa*`` in W m⁻¹ K⁻¹.
            A last layer fit with BTE values (``--train 1 --bte``) adds the route columns
            (:data:`cgcnn.transfer.ROUTE_COLUMNS`): a crystal with a value in ``bte`` takes the BTE route,
            any other the plain one, and says why.

        Raises
        ------
        InputError
            A crystal that cannot be read or checked (naming it), models that differ from those the last
            layer was fit with, an interval level the training set does not allow, ``bte`` with a last layer
            fit without BTE values or values of another potential.
        """
        import pandas as pd

        from cgcnn.crystals import CrystalInput, check_log10_kappa
        from cgcnn.data import single_threaded
        from cgcnn.options import check_values
        from cgcnn.screening import local_shards
        from cgcnn.transfer import BTEValues, check_bte_use

        check_values({"interval": interval}, prefix="")
        bte = BTEValues.of(bte)
        check_bte_use(self.layer, bte, explicit=True)
        structures = open_structures(structures)
        if isinstance(structures, CrystalInput) and structures.targets is not None:  # as --train 0: log10 κ_L
            check_log10_kappa(structures.targets, structures.path / "id_prop.csv", structures.ids)
        screener = self._screener(self.layer, interval, data=structures, bte=bte)
        self.layer.check_inputs(screener.record())
        chunks = self._chunks(structures, ids, None, screener.settings.chunk)
        with single_threaded():  # the pool's processes hold the cores; the results are those of the command line
            rows = [shard.results for shard in local_shards(screener, chunks, screener.settings)]
        text = ",".join(screener.columns) + "\n" + "".join(rows)  # a last layer with a BTE model: its route columns
        table = pd.read_csv(io.StringIO(text), dtype={"cif_id": str}, keep_default_na=False, na_values=[""])
        return table.set_index("cif_id")


def _with_target(crystal, target: Any):
    crystal.target = float(target)
    return crystal
