"""Predict with a trained CGCNN (upstream ``predict.py``).

    python -m cgcnn.predict MODELPATH CIFPATH [--out test_results.csv]

CIFPATH is a CGCNN data folder (``id_prop.csv``, with or without targets, or
none at all; one ``<cif_id>.cif`` per crystal; ``atom_init.json``).  The output
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
    check_counts,
    run_main,
)
from cgcnn.files import OutputSet

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

    from cgcnn.source import SourceModel

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
    args = parser.parse_args(argv)
    check_counts(args)
    out = Path(args.out)
    folder = Path(args.cifpath)
    outs = OutputSet({"--out": out}, inputs={  # checked before the long part
        "model": args.modelpath, "id_prop.csv": folder / "id_prop.csv",
        "atom_init.json": args.atom_init or folder / "atom_init.json"})

    frame = predict(
        args.modelpath, args.cifpath, atom_init=args.atom_init, batch_size=args.batch_size,
        workers=args.workers, cache_dir=args.cache_dir, progress=not args.quiet,
        device="cpu" if args.disable_cuda else None,
    )
    with outs:
        outs.write_csv(out, frame, float_format=None)
    known = frame["target"].notna()
    if known.any():
        mae = float((frame.loc[known, "prediction"] - frame.loc[known, "target"]).abs().mean())
        print(f"MAE {mae:.4f} over {int(known.sum())} crystals")
    print(f"{len(frame)} predictions written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
