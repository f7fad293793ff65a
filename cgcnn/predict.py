"""Predict with a trained CGCNN (upstream ``predict.py``).

    python -m cgcnn.predict MODELPATH CIFPATH [--out test_results.csv]
    python -m cgcnn.predict MODELPATH db.tar.gz --on-error skip --resume [--dask local]

CIFPATH is a CGCNN data folder (``id_prop.csv``, with or without targets, or
none at all; one ``<cif_id>.cif`` per crystal; ``atom_init.json``), or a ``.tar``,
``.tar.gz`` or ``.zip`` archive of CIFs (read without unpacking, in archive order).
The command line screens it chunk by chunk (:mod:`cgcnn.screening.run`: bounded memory,
``--on-error skip`` with ``skipped.csv`` beside ``--out``, ``--resume``, ``--dask``);
:func:`predict` returns a whole folder's predictions as one table.  The output
CSV has the header ``cif_id,target,prediction``, one row per crystal in
``id_prop.csv`` order (upstream shuffled them); ``target`` is empty where the
folder has none, and for a classification model ``prediction`` is the
probability of class 1.  When targets exist the mean absolute error is printed.

Reference: T. Xie, J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cgcnn import available_cores
from cgcnn.cli import (
    add_compat_options,
    add_graph_options,
    add_loader_options,
    add_quiet_option,
    add_screen_options,
    check_counts,
    check_options,
    document_ranges,
    run_main,
)
from cgcnn.outputs import OutputSet

if TYPE_CHECKING:  # numpy, pandas and torch (with the source model) are imported by predict(), not by --help
    import pandas as pd

__all__ = ["predict", "main"]


def predict(
    model_path: str | os.PathLike,
    cif_path: str | os.PathLike,
    atom_init: str | os.PathLike | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device: str | None = None,
) -> pd.DataFrame:
    """Predictions of a CGCNN checkpoint for every crystal of a data folder.

    Parameters
    ----------
    model_path : path
        A CGCNN checkpoint (upstream or this project's).
    cif_path : path
        The data folder.
    atom_init : path, optional
        ``atom_init.json`` to use.  By default ``cif_path/atom_init.json``; when the
        folder has none and the checkpoint stores its own table, that table (nothing
        is written into the folder).
    batch_size : int
        Crystals per batch.
    workers : int, optional
        Graph-building processes: None (default) for all cores, 0 for none.
    cache_dir : path, optional
        Folder for crystal graphs cached across runs.
    progress : bool
        Show a progress bar.
    device : str, optional
        Where the network runs: ``"cuda"`` when torch sees a GPU, else ``"cpu"`` (default);
        ``"cpu"`` forces the CPU (``--disable-cuda``).

    Returns
    -------
    pandas.DataFrame
        Columns ``cif_id``, ``target`` (NaN where unknown) and ``prediction``
        (de-normalized; probability of class 1 for classification), in
        ``id_prop.csv`` order.

    Raises
    ------
    InputError
        A missing or unusable checkpoint or data folder, or data that do not fit the model.
    """
    import numpy as np
    import pandas as pd

    from cgcnn.model import SourceModel

    model = SourceModel.load(model_path, device=device)
    data = model.dataset(cif_path, atom_init=atom_init, cache_dir=cache_dir)
    _, prediction = model.run(data, batch_size=batch_size, workers=workers, progress=progress)
    target = data.targets if data.has_targets else np.full(len(data), np.nan)
    return pd.DataFrame({"cif_id": data.ids, "target": target, "prediction": prediction})


def main(argv: list[str] | None = None) -> int:
    """``python -m cgcnn.predict``: parse, predict, write ``--out``; 0 on success (faults raise
    :class:`~cgcnn.InputError`)."""
    parser = argparse.ArgumentParser(
        prog="python -m cgcnn.predict",
        description="Predict crystal properties with a trained CGCNN (Xie & Grossman, PRL 120, 145301, 2018).",
    )
    parser.add_argument("modelpath", help="path to the trained model checkpoint")
    parser.add_argument("cifpath", help="data folder: id_prop.csv (optional), CIF files, atom_init.json")
    add_loader_options(parser, batch_size=256, batch_help="mini-batch size")
    parser.set_defaults(workers=available_cores())  # -j: graph-building processes, all cores by default
    add_compat_options(parser)
    parser.add_argument("--out", default="test_results.csv", help="output CSV (default: test_results.csv)")
    add_graph_options(parser)
    add_quiet_option(parser)
    add_screen_options(parser, output="--out")
    args = document_ranges(parser).parse_args(argv)
    check_options(args)  # every numeric option in its range, before any work
    check_counts(args, at_least_one=("batch_size", "chunk_size"))
    from cgcnn.crystals import data_folder_inputs, open_input  # the engine imports numpy and torch: not at import
    from cgcnn.data import single_threaded
    from cgcnn.model import SourceModel
    from cgcnn.screening import Screener, ScreenSettings, atom_tables, dask_log, screen

    settings = ScreenSettings(batch_size=args.batch_size, chunk_size=args.chunk_size, on_error=args.on_error,
                              resume=args.resume, dask=args.dask, workers=args.workers, progress=not args.quiet,
                              cache_dir=args.cache_dir)
    settings.check()
    data = open_input(args.cifpath)
    out = Path(args.out)
    skipped = out.with_name("skipped.csv") if args.on_error == "skip" else None
    inputs = {"model": args.modelpath, "--atom-init": args.atom_init}
    if data.kind == "folder":
        inputs.update(data_folder_inputs(data.path, args.atom_init))  # id_prop.csv, atom_init.json, every CIF
    else:
        inputs["CIFPATH"] = data.path
    outs = OutputSet({"--out": out, "skipped.csv": skipped, "Dask log": dask_log(out) if args.dask else None},
                     inputs=inputs)  # checked before the long part

    device = "cpu" if args.disable_cuda else None
    model = SourceModel.load(args.modelpath, device=device)
    tables, sources = atom_tables([model], data, args.atom_init)
    screener = Screener([model], None, "none", None, tables, sources, settings)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    with single_threaded():  # the pool's processes (-j) hold the cores
        summary = screen(screener, data, outs, out, None, skipped, None, device=device, log=log)
    if summary.n_targets:
        print(f"MAE {summary.mae:.4f} over {summary.n_targets} crystals")
    print(f"{summary.n} predictions written to {out}")
    if skipped is not None:
        print(f"skipped {summary.skipped} of {summary.n + summary.skipped} crystals -> {skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
