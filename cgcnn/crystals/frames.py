"""The frames of extended XYZ files (``*.extxyz``, ``*.xyz``), each frame one crystal: listed by their ids
(:func:`file_frames`, :func:`folder_frames`) and read one by one (:func:`read_frame`).

A frame's ``cif_id`` is its own (``info``'s ``cif_id``, ``material_id``, ``id`` or ``name``), else
``STEM:INDEX`` (the file's name without its suffix, 0-based index); it is named in messages as
``FILE:ID`` or ``FILE:INDEX`` (:func:`cgcnn.crystals.formats.frame_name`).  Files are read by ASE
(:func:`cgcnn.crystals.formats.read_frames`), at most :data:`cgcnn.crystals.MAX_CIF_BYTES` each, whole: a
frame is read from its file's parsed frames, kept for the last file read (one file at a time per process),
so that the frames of a file, read in order, cost one parse.  An extxyz file that cannot be read at all
is one crystal (its stem) that cannot be read, with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgcnn import InputError
from cgcnn.crystals.formats import frame_name, read_frames, structure_from_object
from cgcnn.crystals.members import not_utf8, read_cif_bytes
from cgcnn.crystals.names import structure_format

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["frames_text", "file_frames", "folder_frames", "frame_source", "read_frame"]

_PARSED: dict[tuple, list] = {}  # the last file's frames: (path, size, mtime) -> [(cif_id, source, Atoms)]
_LISTED: dict[tuple, dict] = {}  # the last folder's frames: (folder, stamps) -> {cif_id: (file name, index)}


def frames_text(data: bytes, source: str) -> str:
    """An extxyz file's bytes as text (UTF-8, bad bytes replaced).

    Raises
    ------
    InputError
        An empty file, UTF-16/UTF-32 text or NUL bytes, naming ``source``.
    """
    if not data:
        raise InputError(f"{source}: empty file")
    problem = not_utf8(data)
    if problem:
        raise InputError(f"{source}: {problem}")
    return data.decode("utf-8", errors="replace")


def file_frames(data: bytes, file_name: str, source: str) -> list[tuple[str, str, Any]]:
    """The frames of one extxyz file, unchecked: ``(cif_id, source, ase.Atoms)`` each, in file order.

    Parameters
    ----------
    data : bytes
        The file.
    file_name : str
        Its name (the stem of ``STEM:INDEX`` ids).
    source : str
        What names it in messages (a path, or ``archive:member``).

    Raises
    ------
    InputError
        The file cannot be read (:func:`frames_text`, :func:`cgcnn.crystals.formats.read_frames`).
    """
    return [(*frame_name(file_name, source, suffix), atoms)
            for suffix, atoms in read_frames(frames_text(data, source), source)]


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
        return str(path), st.st_size, st.st_mtime_ns
    except OSError:
        return str(path), None, None


def _parsed(path: Path) -> list[tuple[str, str, Any]]:
    key = _stamp(path)
    if key not in _PARSED:
        _PARSED.clear()
        _PARSED[key] = file_frames(read_cif_bytes(path), path.name, str(path))
    return _PARSED[key]


def folder_frames(folder: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """The frames of every extxyz file of a data folder (files sorted by name, frames in file order).

    Returns
    -------
    dict
        ``cif_id`` → ``(file name, frame index)``; a file that cannot be read gives its stem →
        ``(file name, -1)`` (:func:`read_frame` then raises its reason). Empty for a folder without
        extxyz files (or one that cannot be listed).

    Raises
    ------
    InputError
        One ``cif_id`` in two frames (of one file or two).
    """
    folder = Path(folder)
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if structure_format(e.name) == "extxyz" and e.is_file())
    except OSError:
        return {}
    if not names:
        return {}
    key = (str(folder), tuple(_stamp(folder / n) for n in names))
    if key in _LISTED:
        return _LISTED[key]
    out: dict[str, tuple[str, int]] = {}
    for name in names:
        try:
            frames = [(cif_id, k) for k, (cif_id, _, _) in enumerate(_parsed(folder / name))]
        except InputError:
            frames = [(name.rsplit(".", 1)[0], -1)]
        for cif_id, k in frames:
            if cif_id in out:
                raise InputError(f"{folder}: cif_id {cif_id!r} in two frames ({out[cif_id][0]} and {name}); "
                                 "each crystal needs its own id")
            out[cif_id] = (name, k)
    _LISTED.clear()
    _LISTED[key] = out
    return out


def read_frame(path: str | os.PathLike, index: int, max_sites: int | None = None) -> Structure:
    """Frame ``index`` of the extxyz file ``path`` as a checked, sorted ``Structure``
    (:func:`cgcnn.crystals.structure_from_object`, named ``FILE:ID`` or ``FILE:INDEX``).

    Raises
    ------
    InputError
        The file cannot be read (``index`` -1: its reason), has no frame ``index`` (it changed), or the
        frame fails the checks (:func:`cgcnn.crystals.check_structure`: no lattice, overlapping atoms, ...).
    """
    path = Path(path)
    frames = _parsed(path)
    if not 0 <= index < len(frames):
        raise InputError(f"{path}: no frame {index} (the file changed while it was read?)")
    _, source, atoms = frames[index]
    return structure_from_object(atoms, source, max_sites)


def frame_source(path: str | os.PathLike, index: int) -> str:
    """What names frame ``index`` of the extxyz file ``path`` in messages (``FILE:ID`` or ``FILE:INDEX``);
    ``path`` itself for a file that cannot be read or has no such frame."""
    try:
        frames = _parsed(Path(path))
    except InputError:
        return str(path)
    return frames[index][1] if 0 <= index < len(frames) else str(path)
