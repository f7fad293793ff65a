"""Files the project writes: the one atomic writer, CSV and ``id_prop.csv`` writers,
output checks, and file digests.

Every output (checkpoints, ``last_layer.sav``, CSV files, ``atom_init.json``, data
folders' ``id_prop.csv``) goes through :func:`save_atomic`: it is written to a
temporary file beside its destination and renamed over it, so an interrupted or
failed run leaves any earlier file intact.  Nothing here imports torch or pymatgen.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cgcnn import InputError

__all__ = [
    "PACKAGE_ATOM_INIT", "check_output", "check_output_dir", "save_atomic", "save_text", "save_csv", "save_id_prop",
    "file_sha256", "write_data_folder",
]

#: The atom feature table shipped with the package (the bundled models were trained with it).
PACKAGE_ATOM_INIT = Path(__file__).resolve().parent / "atom_init.json"


def _destination(path: Path) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or where its symbolic links lead."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def check_output(path: str | os.PathLike) -> Path:
    """Check that a file can be written at ``path`` (before a long run, so it fails at once).

    A symbolic link named as output is written through: the checks apply to the file it
    leads to (which may not exist yet).

    Parameters
    ----------
    path : path
        The output file.

    Returns
    -------
    Path
        ``path`` as given (not resolved).

    Raises
    ------
    InputError
        If ``path`` is a folder or an existing file that is not a regular file (a device,
        a pipe, a socket), or its folder does not exist, is not a folder or is not writable.
    """
    path = Path(path)
    dest = _destination(path)
    folder = dest.parent
    if dest.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    if dest.exists() and not stat.S_ISREG(dest.stat().st_mode):
        raise InputError(f"{path}: is not a regular file (a device, pipe or socket); give a file name")
    if not folder.exists():
        raise InputError(f"{path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{path}: folder {folder} is not writable")
    return path


def check_output_dir(folder: str | os.PathLike, files: tuple[str, ...] = (), must_exist: bool = False) -> Path:
    """Check, creating nothing, that ``folder`` is (or can be made) a writable output folder.

    The one check of output folders (``--out-dir``), run before a long job so it fails at once.

    Parameters
    ----------
    folder : path
    files : tuple of str
        Names of files to be written in it; each is checked as :func:`check_output` when
        the folder exists.
    must_exist : bool
        Refuse a folder that does not exist yet (``python -m cgcnn.train``, as upstream);
        otherwise its nearest existing ancestor must be a writable folder.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    InputError
        Naming the folder: it does not exist (with ``must_exist``), is not a folder, or
        cannot be written or created.
    """
    out = Path(folder)
    if out.exists() or must_exist:
        if not out.is_dir():
            what = "is not a folder" if out.exists() else "output folder does not exist"
            raise InputError(f"{out}: {what}")
        if not os.access(out, os.W_OK | os.X_OK):
            raise InputError(f"{out}: output folder is not writable")
        for name in files:
            check_output(out / name)
        return out
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{out}: cannot create the output folder ({parent} is not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{out}: cannot create the output folder ({parent} is not writable)")
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _torch_save(obj: Any, f) -> None:
    import torch  # only when a checkpoint is written: atom_init.py and the CSV writers need no torch

    torch.save(obj, f)


def save_atomic(obj: Any, path: str | os.PathLike, saver: Callable[[Any, Any], Any] | None = None) -> None:
    """Write ``obj`` with ``saver(obj, file)`` to a temporary file, then rename it over ``path``.

    The one atomic writer of the project.  The temporary file (``.<name>.*.tmp``) lies in
    the destination's folder and gets the permissions ``open()`` would give; a symbolic
    link at ``path`` is written through (the file it leads to is replaced, the link kept).
    Any failure or interruption, ``KeyboardInterrupt`` and ``SystemExit`` included,
    removes the temporary file and leaves any earlier file at ``path`` intact.

    Parameters
    ----------
    obj : object
        What to write.
    path : path
        The output file.
    saver : callable, optional
        ``saver(obj, f)`` writes ``obj`` to the binary file object ``f``; default
        ``torch.save``.

    Raises
    ------
    InputError
        The cases of :func:`check_output`, and a failed write (``OSError``, e.g. a full disk).
        Other exceptions of ``saver`` propagate unchanged.
    """
    path = check_output(path)
    dest = _destination(path)
    saver = _torch_save if saver is None else saver
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from None
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            saver(obj, f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the permissions open() would
        os.replace(tmp, dest)
        done = True
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def save_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` as UTF-8 with :func:`save_atomic` (line ends as given).

    Raises
    ------
    InputError
        The cases of :func:`save_atomic`.
    """
    save_atomic(text, path, saver=lambda t, f: f.write(t.encode("utf-8")))


def save_csv(frame, path: str | os.PathLike, float_format: str | None = "%.8g") -> None:
    """Write a pandas DataFrame as CSV (header, no index, empty cells for NaN) with :func:`save_atomic`.

    Parameters
    ----------
    frame : pandas.DataFrame
    path : path
    float_format : str or None
        As pandas ``to_csv``; None writes full precision (``repr`` of each float).

    Raises
    ------
    InputError
        The cases of :func:`save_atomic`.
    """
    save_text(frame.to_csv(index=False, na_rep="", float_format=float_format), path)


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


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest (64 characters) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
