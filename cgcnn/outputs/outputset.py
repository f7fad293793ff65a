"""The outputs of one run, checked before any work and replaced together at the end
(:class:`OutputSet`).

A run that writes several files uses an :class:`OutputSet`: every file is first written
to a temporary file (:mod:`cgcnn.outputs.files`' atomic writer) and all are renamed at the end,
so the outputs of one run are replaced together or not at all; the set also refuses,
before any work (:func:`check_outputs`), an output that is one of the run's inputs or
another output.  Nothing here imports torch or pymatgen.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cgcnn import InputError
from cgcnn.outputs.files import _destination, _torch_save, _write_temp, check_output

__all__ = ["check_outputs", "OutputSet"]


def _labelled(paths, default: str) -> list[tuple[str, Path]]:
    """``(label, path)`` pairs of a mapping ``label -> path`` (or ``label -> list of paths``: every
    file of a data folder's CIFs, say) or an iterable of paths; None skipped."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    items = paths.items() if isinstance(paths, Mapping) else ((None, p) for p in paths)
    out = []
    for label, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        out.extend((label or default, Path(p)) for p in values if p is not None)
    return out


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are one file: the same path once symbolic links are followed,
    or (both existing) the same inode, which also catches hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` leads to (symbolic links followed), or None."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def check_outputs(outputs, inputs=()) -> list[tuple[str, Path]]:
    """Refuse, before any work, outputs that would destroy an input or each other.

    An output is the same file as an input when it leads, symbolic links followed, to the same
    device and inode (the same path, a symbolic link to it, or a hard link of it), or (an input
    that is a broken symbolic link) to the same path.  Each output is also checked as
    :func:`check_output`.  Inputs are indexed once, so that every CIF of a large data folder may
    be given (one ``stat`` each).

    Parameters
    ----------
    outputs : mapping of str to path, or iterable of paths
        The run's output files; a mapping gives each a label for messages (e.g. the
        option, ``{"--results": path}``).  None values are skipped.
    inputs : mapping of str to path (or to a list of paths), or iterable of paths
        Every file the run reads (model checkpoints, the data folder's ``id_prop.csv``,
        ``atom_init.json`` and CIFs: :func:`cgcnn.crystals.data_folder_inputs`, an archive, a
        ``last_layer.sav`` that is read, ``--atom-init``), labelled the same way.  None values
        and paths that do not exist are skipped.

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
    by_id: dict[tuple[int, int], tuple[str, Path]] = {}
    by_path: dict[str, tuple[str, Path]] = {}
    for label, path in _labelled(inputs, "input"):
        file_id = _file_id(path)
        if file_id is not None:
            by_id.setdefault(file_id, (label, path))
        elif os.path.lexists(path):  # a broken symbolic link: its target may be about to be written
            by_path.setdefault(os.path.realpath(path), (label, path))
    for i, (label, path) in enumerate(outs):
        file_id = _file_id(path)
        hit = by_id.get(file_id) if file_id is not None else by_path.get(os.path.realpath(path))
        if hit is not None:
            in_label, in_path = hit
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
