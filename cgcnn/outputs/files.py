"""Files the project writes, one at a time: the one atomic writer, output checks, and facts
about files (why a path cannot be opened, a file's digest).

Every output (checkpoints, ``last_layer.sav``, CSV files, ``atom_init.json``, data
folders' ``id_prop.csv``) goes through :func:`save_atomic`: it is written to a
temporary file beside its destination and renamed over it, so an interrupted or
failed run leaves any earlier file intact.  A run that writes several files uses an
:class:`~cgcnn.outputs.outputset.OutputSet` (:mod:`cgcnn.outputs.outputset`): every file is first written
to a temporary file and all are renamed at the end, so the outputs of one run are replaced
together or not at all; the set also refuses, before any work, an output that is one of the
run's inputs or another output.  The ``id_prop.csv`` and data-folder writers live in
:mod:`cgcnn.data.datafolder`.  Nothing here imports torch or pymatgen.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cgcnn import InputError

__all__ = ["check_output", "check_output_dir", "save_atomic", "save_text", "save_csv", "file_sha256",
           "missing_reason"]


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
        reason = missing_reason(folder) if os.path.lexists(folder) else "does not exist"
        raise InputError(f"{path}: folder {folder} {reason}")
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
            if out.exists():
                what = "is not a folder"
            elif os.path.lexists(out):
                what = f"output folder {missing_reason(out)}"
            else:
                what = "output folder does not exist"
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


def _write_temp(obj: Any, path: Path, saver: Callable[[Any, Any], Any]) -> Path:
    """Write ``obj`` with ``saver`` to a new temporary file (``.<name>.*.tmp``) beside the file
    ``path`` writes (where its symbolic links lead), with the permissions ``open()`` would give.

    Any failure or interruption removes the temporary file.  Raises :class:`InputError` for
    an ``OSError`` (naming ``path``); other exceptions of ``saver`` propagate unchanged.
    """
    dest = _destination(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from None
    with _removed_on_failure(tmp, path):
        with os.fdopen(fd, "wb") as f:
            saver(obj, f)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the permissions open() would
    return Path(tmp)


@contextlib.contextmanager
def _removed_on_failure(tmp, path: Path):
    """Remove the temporary file ``tmp`` unless the block completes (any exception, interrupts
    included); an ``OSError`` becomes an :class:`InputError` naming ``path``."""
    done = False
    try:
        yield
        done = True
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def save_atomic(obj: Any, path: str | os.PathLike, saver: Callable[[Any, Any], Any] | None = None) -> None:
    """Write ``obj`` with ``saver(obj, file)`` to a temporary file, then rename it over ``path``.

    The one atomic writer of the project.  The temporary file (``.<name>.*.tmp``) lies in
    the destination's folder and gets the permissions ``open()`` would give; a symbolic
    link at ``path`` is written through (the file it leads to is replaced, the link kept).
    Any failure or interruption, ``KeyboardInterrupt`` and ``SystemExit`` included,
    removes the temporary file and leaves any earlier file at ``path`` intact.  For
    several files replaced together, use :class:`OutputSet`.

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
    tmp = _write_temp(obj, path, _torch_save if saver is None else saver)
    with _removed_on_failure(tmp, path):
        os.replace(tmp, _destination(path))


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


def missing_reason(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be opened, for messages: ``"not found"``, ``"is a symbolic link loop"``
    or ``"is a broken symbolic link (to <target>)"``."""
    path = Path(path)
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:
            return "is a symbolic link loop"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "is a symbolic link loop"
            return f"is a broken symbolic link (to {os.readlink(path)})"
    else:
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "lies under a symbolic link loop"
    return "not found"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest (64 characters) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
