"""Data folders written: a CGCNN ``id_prop.csv`` (:func:`save_id_prop`) and a whole data folder
made from a table of values and a folder of CIFs (:func:`write_data_folder`).

Both write through :mod:`cgcnn.outputs.files`' atomic writer.  Nothing here imports torch or pymatgen.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from cgcnn import InputError
from cgcnn.data.atom_features import PACKAGE_ATOM_INIT
from cgcnn.outputs import save_text

__all__ = ["save_id_prop", "write_data_folder"]



def save_id_prop(path: str | os.PathLike, rows: Iterable[tuple[str, float | None]], decimals: int = 6) -> int:
    """Write a CGCNN ``id_prop.csv``: no header, one ``cif_id,target`` line per row.

    Parameters
    ----------
    path : path
        The file (usually ``<folder>/id_prop.csv``).
    rows : iterable of (str, float or None)
        ``(cif_id, target)`` in the order to keep; a None target writes ``cif_id`` alone
        (a folder to predict).
    decimals : int
        Decimals of the target (fixed-point, as the bundled folders).

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    InputError
        The cases of :func:`save_atomic`.
    """
    lines = [cif_id if value is None else f"{cif_id},{value:.{decimals}f}" for cif_id, value in rows]
    save_text("".join(line + "\n" for line in lines), path)
    return len(lines)

def write_data_folder(table, cif_dir: str | os.PathLike, out: str | os.PathLike, column: str,
                      id_column: str = "id", transform: str = "log10", rows=None,
                      atom_init: str | os.PathLike = PACKAGE_ATOM_INIT) -> Path:
    """Make a CGCNN data folder from a table of values and a folder of ``<id>.cif`` files.

    ``out`` receives a symbolic link to each CIF (a copy where links are not possible),
    ``id_prop.csv`` with the (transformed) value of each kept row, and a copy of
    ``atom_init``.  Rows whose value is not finite, or not positive for ``log10``, are
    left out.  Used for the AFLOW-AGL source
    folders (``models/train_source.py``) and the evaluation folders of
    ``benchmarks/shared_folders.py``.

    Parameters
    ----------
    table : path or pandas.DataFrame
        A CSV with ``id_column`` and ``column`` (e.g. ``kappa.csv`` of the AFLOW-AGL set,
        κ_L in W m⁻¹ K⁻¹), or the frame itself.
    cif_dir : path
        Folder of ``<id>.cif``.
    out : path
        The data folder (created when absent).
    column, id_column : str
        The value and id columns.
    transform : {"log10", "none"}
        Applied to the values (targets of the bundled models are log10 of the property).
    rows : sequence of int, optional
        Row positions of the table to keep, in that order (default: all, in file order).
    atom_init : path
        The atom feature table to copy (default: the package's).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        If the table or a CIF of a kept row is missing, or a column is absent.
    """
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        if not Path(table).is_file():
            raise InputError(f"{table}: not found")
        table = pd.read_csv(table)
    for name in (id_column, column):
        if name not in table.columns:
            raise InputError(f"table has no column {name!r} (columns: {', '.join(map(str, table.columns))})")
    if transform not in ("log10", "none"):
        raise InputError(f"unknown transform {transform!r}; choose log10 or none")
    if rows is not None:
        table = table.iloc[rows]
    cif_dir, out = Path(cif_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kept = []
    for cif_id, value in zip(table[id_column], table[column]):
        src = cif_dir / f"{cif_id}.cif"
        if not src.is_file():
            raise InputError(f"{src}: not found")
        if not math.isfinite(value) or (transform == "log10" and value <= 0):
            continue
        dst = out / f"{cif_id}.cif"
        if not dst.exists():
            try:
                os.symlink(os.path.relpath(src, out), dst)
            except OSError:
                shutil.copyfile(src, dst)
        kept.append((str(cif_id), math.log10(value) if transform == "log10" else float(value)))
    save_id_prop(out / "id_prop.csv", kept)
    shutil.copyfile(atom_init, out / "atom_init.json")
    return out
