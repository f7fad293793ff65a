"""Files the project writes: the one atomic writer, sets of outputs replaced together,
CSV and ``id_prop.csv`` writers, output checks, and file digests.

Every output (checkpoints, ``last_layer.sav``, CSV files, ``atom_init.json``, data
folders' ``id_prop.csv``) goes through :func:`save_atomic`: it is written to a
temporary file beside its destination and renamed over it, so an interrupted or
failed run leaves any earlier file intact.  A run that writes several files uses an
:class:`OutputSet`: every file is first written to a temporary file and all are renamed
at the end, so the outputs of one run are replaced together or not at all; the set also
refuses, before any work, an output that is one of the run's inputs or another output.
Nothing here imports torch or pymatgen.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cgcnn import InputError

__all__ = [
    "PACKAGE_ATOM_INIT", "check_output", "check_output_dir", "check_outputs", "OutputSet", "save_atomic",
    "save_text", "save_csv", "save_id_prop", "file_sha256", "missing_reason", "write_data_folder",
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


# --------------------------------------------------------------------------------------------------
# the outputs of a run, replaced together


def _labelled(paths, default: str) -> list[tuple[str, Path]]:
    """``(label, path)`` pairs of a mapping ``label -> path`` or an iterable of paths; None skipped."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    items = paths.items() if isinstance(paths, Mapping) else ((None, p) for p in paths)
    return [(label or default, Path(p)) for label, p in items if p is not None]


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same path once symbolic links are followed,
    or (both existing) the same inode, which also catches hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs, inputs=()) -> list[tuple[str, Path]]:
    """Refuse, before any work, outputs that would destroy an input or each other.

    Paths are compared once symbolic links are followed (a link to an input counts as the
    input) and by inode (hard links).  Each output is also checked as :func:`check_output`.

    Parameters
    ----------
    outputs : mapping of str to path, or iterable of paths
        The run's output files; a mapping gives each a label for messages (e.g. the
        option, ``{"--results": path}``).  None values are skipped.
    inputs : mapping of str to path, or iterable of paths
        Files the run reads (model checkpoints, the data folder's ``id_prop.csv``, a
        ``last_layer.sav`` that is read, ``atom_init.json``), labelled the same way.
        None values and paths that do not exist are skipped.

    Returns
    -------
    list of (str, Path)
        The outputs as ``(label, path)``.

    Raises
    ------
    InputError
        Naming the output: it is an input, or it is the same file as another output,
        or a case of :func:`check_output`.
    """
    outs = _labelled(outputs, "output")
    ins = [(label, p) for label, p in _labelled(inputs, "input") if os.path.lexists(p)]
    for i, (label, path) in enumerate(outs):
        for in_label, in_path in ins:
            if _same_file(path, in_path):
                what = f"{in_label} {in_path}" if str(in_path) != str(path) else in_label
                raise InputError(f"{path}: output {label} is the same file as the input {what}; "
                                 "give another output path")
        for other_label, other in outs[:i]:
            if _same_file(path, other):
                raise InputError(f"{path}: outputs {other_label} ({other}) and {label} are the same file; "
                                 "give them different paths")
        check_output(path)
    return outs


class OutputSet:
    """The outputs of one run, written to temporary files and renamed together at the end.

    Construction checks every output (:func:`check_outputs`: none is an input or another
    output, each is writable) before the run does any work.  Inside ``with``, each
    ``write_*``/``save`` writes a complete temporary file (``.<name>.*.tmp``) beside its
    destination; writing the same output again replaces its temporary file (so a file
    rewritten every epoch is staged, atomically, each time).  When the block ends
    without an exception, every staged file is renamed over its output, one after the
    other with interrupts held back until all are renamed; outputs never written are
    left as they are.  On any exception, ``KeyboardInterrupt`` and ``SystemExit``
    included, every temporary file is removed and every earlier output is left intact.
    While the set is open, SIGTERM raises ``SystemExit(143)`` (the previous handler is
    restored after), so a terminated run cleans up too.  Symbolic links named as outputs
    are written through, as :func:`save_atomic` does.

    Parameters
    ----------
    outputs : mapping of str to path, or iterable of paths
        Every file the run may write (a mapping labels them for messages, e.g.
        ``{"--results": "results.csv", "--last-layer": "last_layer.sav"}``); None skipped.
    inputs : mapping of str to path, or iterable of paths
        Every file the run reads, labelled the same way (``{"model": ..., "id_prop.csv":
        folder / "id_prop.csv", "--last-layer": ...}`` when the last layer is read).

    Raises
    ------
    InputError
        At construction, the cases of :func:`check_outputs`; a failed write or rename
        (naming the file).  Writing a path that is not one of ``outputs`` is a
        ``ValueError`` (a programming error).

    Examples
    --------
    >>> outs = OutputSet({"--results": results, "--test-results": test_results},
    ...                  inputs={"model": model_path, "id_prop.csv": folder / "id_prop.csv"})
    >>> # ... the long part: read, fit, predict ...
    >>> with outs:
    ...     outs.write_csv(results, frame)
    ...     outs.save(last_layer, record, saver=joblib.dump)
    """

    def __init__(self, outputs, inputs=()):
        self._outputs = check_outputs(outputs, inputs)
        self._keys = {self._key(path): path for _, path in self._outputs}
        self._staged: dict[str, Path] = {}
        self._previous_handler = None
        self._open = False

    @staticmethod
    def _key(path: str | os.PathLike) -> str:
        return os.path.realpath(path)

    @property
    def paths(self) -> list[Path]:
        """The outputs, as given."""
        return [path for _, path in self._outputs]

    def __enter__(self) -> OutputSet:
        self._open = True
        if threading.current_thread() is threading.main_thread():
            def terminate(signum, frame):
                raise SystemExit(128 + signum)

            self._previous_handler = signal.signal(signal.SIGTERM, terminate)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.discard()
            self._open = False
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)
                self._previous_handler = None
        return False

    def _output(self, path: str | os.PathLike) -> Path:
        if not self._open:
            raise ValueError("OutputSet: write inside its 'with' block")
        try:
            return self._keys[self._key(path)]
        except KeyError:
            raise ValueError(f"{path} is not one of this set's outputs") from None

    def save(self, path: str | os.PathLike, obj: Any, saver: Callable[[Any, Any], Any] | None = None) -> Path:
        """Stage ``obj`` for ``path``, written with ``saver(obj, binary_file)`` (default ``torch.save``).

        Returns
        -------
        Path
            The temporary file (readable until the set ends, e.g. to reload a staged model).
        """
        out = self._output(path)
        tmp = _write_temp(obj, out, _torch_save if saver is None else saver)
        old = self._staged.get(self._key(out))
        self._staged[self._key(out)] = tmp
        if old is not None:
            with contextlib.suppress(OSError):
                os.unlink(old)
        return tmp

    def write_bytes(self, path: str | os.PathLike, data: bytes) -> Path:
        """Stage ``data`` for ``path``; returns the temporary file."""
        return self.save(path, data, saver=lambda d, f: f.write(d))

    def write_text(self, path: str | os.PathLike, text: str) -> Path:
        """Stage ``text`` as UTF-8 for ``path`` (line ends as given); returns the temporary file."""
        return self.write_bytes(path, text.encode("utf-8"))

    def write_csv(self, path: str | os.PathLike, frame, float_format: str | None = "%.8g") -> Path:
        """Stage a pandas DataFrame as CSV for ``path``, as :func:`save_csv` writes it."""
        return self.write_text(path, frame.to_csv(index=False, na_rep="", float_format=float_format))

    def staged(self, path: str | os.PathLike) -> Path | None:
        """The temporary file staged for ``path``, or None if nothing was written yet."""
        return self._staged.get(self._key(self._output(path)))

    def current(self, path: str | os.PathLike) -> Path | None:
        """What ``path`` will hold if the set ends now: its staged file, else the existing
        output, else None."""
        staged = self.staged(path)
        if staged is not None:
            return staged
        out = self._output(path)
        return out if out.exists() else None

    def commit(self) -> list[Path]:
        """Rename every staged file over its output (done by ``with`` on success).

        SIGINT and SIGTERM that arrive meanwhile are held back and raised once every file
        is renamed.  Returns the outputs replaced.
        """
        held: list[int] = []
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda s, f: held.append(s))
        done = []
        try:
            for key, tmp in list(self._staged.items()):
                out = self._keys[key]
                try:
                    os.replace(tmp, _destination(out))
                except OSError as exc:
                    raise InputError(f"{out}: cannot write ({exc.strerror or exc}); "
                                     f"already replaced: {', '.join(map(str, done)) or 'none'}") from None
                del self._staged[key]
                done.append(out)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if held:
            what = f"outputs written ({', '.join(map(str, done))})" if done else "no output changed"
            if signal.SIGINT in held:
                raise KeyboardInterrupt(f"interrupted after the run ended; {what}")
            raise SystemExit(128 + signal.SIGTERM)
        return done

    def discard(self) -> None:
        """Remove every staged file not yet renamed (done by ``with`` on any exception)."""
        for tmp in self._staged.values():
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged.clear()


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
