"""Crystals to screen, read in order and in chunks: a folder of structure files, or a ``.tar``,
``.tar.gz`` (``.tgz``, ``.tar.bz2``, ``.tar.xz``) or ``.zip`` archive of them read
without unpacking.

Structure files, by name (:func:`cgcnn.crystals.structure_format`): CIFs (``*.cif``), POSCARs
(``POSCAR*``, ``CONTCAR*``, ``*.vasp``), pymatgen JSON (``*.json``, not ``atom_init.json``) and
extended XYZ (``*.extxyz``, ``*.xyz``), whose every frame is one crystal (:mod:`cgcnn.crystals.frames`).

A folder follows the CGCNN convention (:func:`cgcnn.crystals.read_id_prop`): the rows of
``id_prop.csv`` in file order (targets when it has them), else every single-crystal file sorted
by ``cif_id``, then the extxyz frames.  An archive gives its structure members in archive order
(``tar --sort=name`` makes that the folder's order), each member's file name without ``.cif``,
``.vasp`` or ``.json`` being its ``cif_id`` (a ``POSCAR*``/``CONTCAR*`` member: its name; one named
just ``POSCAR`` or ``CONTCAR``: its folder's name), an extxyz member giving its frames (read once
more when the archive is opened, for their ids); other members (folders, ``id_prop.csv``,
``atom_init.json``) are passed over, and an archive has no targets.  A compressed tar is read as one stream (never
seeked, never listed in memory as a whole), so 10⁶ members cost one pass per read.
Members that are links (what ``tar`` writes for hard-linked files, and symbolic links) are
read as the member they lead to, within the archive; each CIF is read with a bound
(:data:`cgcnn.crystals.members.MAX_CIF_BYTES`); a member that cannot be read (a link leading
outside, an encrypted or oddly compressed zip member, one too large) is a crystal that cannot be
read, with its reason (:mod:`cgcnn.crystals.members`).

Nothing here parses a single-crystal file: a :class:`CrystalText` carries a crystal's bytes and
format, or the reason it could not be read, to whatever builds its graph (:func:`read_structure_text`
turns the bytes into a checked ``Structure``); an extxyz frame is read here, in the main process, and
carried as its checked ``Structure``.
"""

from __future__ import annotations

import hashlib
import lzma
import math
import os
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cgcnn import InputError
from cgcnn.crystals.folder import locate, read_id_prop
from cgcnn.crystals.formats import structure_from_object
from cgcnn.crystals.frames import file_frames, frame_source, read_frame
from cgcnn.crystals.members import MemberError, TarLinks, list_tar, read_cif_bytes, tar_members, zip_reader
from cgcnn.crystals.names import structure_format, structure_id
from cgcnn.crystals.structure import structure_from_bytes
from cgcnn.outputs import missing_reason

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["ARCHIVE_SUFFIXES", "CrystalText", "CrystalInput", "open_input", "read_structure_text"]

#: Archive file names read as archives (any case).
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")


@dataclass
class CrystalText:
    """One crystal as read from its input, before any parsing.

    Attributes
    ----------
    cif_id : str
    source : str
        What names it in messages: the file's path, or ``archive.tar.gz:member.cif``; a frame's
        ``FILE:ID`` or ``FILE:INDEX``.
    data : bytes or None
        The file's bytes (None when it could not be read, or for a ``structure`` already read).
    error : str or None
        Why it could not be read (a one-line message naming ``source``).
    target : float
        log10 κ_L from ``id_prop.csv``, NaN when the input has none.
    structure : Structure or None
        The crystal already read and checked (:func:`cgcnn.crystals.check_structure`): a structure of a
        Python session or an extxyz frame; then ``data`` is None.
    fmt : str
        The format of ``data`` (:data:`cgcnn.crystals.STRUCTURE_FORMATS`); graphs are cached on disk for
        CIFs only (keyed on their bytes).
    """

    cif_id: str
    source: str
    data: bytes | None
    error: str | None = None
    target: float = math.nan
    structure: Any = None
    fmt: str = "cif"


def _member_key(name: str) -> str | None:
    """The ``cif_id`` of an archive member holding one crystal, ``"\\0" + name`` for an extxyz member (its
    frames' ids are read when the archive is opened), None for a member that is no structure file."""
    fmt = structure_format(name)
    if fmt is None:
        return None
    if fmt == "extxyz":
        return "\0" + name
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if parts and parts[-1] in ("POSCAR", "CONTCAR") and len(parts) > 1:  # run/POSCAR: the run's crystal
        return parts[-2]
    return structure_id(name)


def _read_member(read, source: str) -> tuple[bytes | None, str | None]:
    """A member's bytes, or None and why they cannot be read (one line naming ``source``)."""
    try:
        return read(), None
    except MemberError as exc:
        return None, str(exc)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
        return None, f"{source}: cannot read ({exc})"


def _frame_crystals(data: bytes, name: str, source: str) -> list[CrystalText]:
    """The frames of an extxyz file, each a :class:`CrystalText` with its checked structure or its error."""
    out = []
    for cif_id, frame, atoms in file_frames(data, name, source):
        try:
            out.append(CrystalText(cif_id, frame, None, structure=structure_from_object(atoms, frame), fmt="extxyz"))
        except InputError as exc:
            out.append(CrystalText(cif_id, frame, None, error=str(exc), fmt="extxyz"))
    return out


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a file read as an archive (by its suffix, :data:`ARCHIVE_SUFFIXES`)."""
    name = str(path).lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


class CrystalInput:
    """The crystals of a folder or an archive, in order, read chunk by chunk.

    Use :func:`open_input`.  Attributes: ``path`` (Path), ``kind`` (``folder``, ``tar``
    or ``zip``), ``ids`` (list of str, in order), ``targets`` (ndarray of shape (n,) or
    None), ``atom_init`` (the folder's ``atom_init.json`` when it has one, else None).
    Memory: the ids (about 100 bytes each); a chunk's bytes while it is read (and the frames of
    the extxyz file being read).
    """

    def __init__(self, path: Path, kind: str, ids: list[str], targets=None, files: list[str] | None = None,
                 links: TarLinks | None = None, frames: dict | None = None, keys: list[str] | None = None):
        self.path = path
        self.kind = kind
        self.ids = ids
        self.targets = targets
        self._files = files  # a folder's structure file names (str: a tenth of a Path's memory)
        self._links = links or TarLinks()  # what a tar archive's link members lead to
        # a folder: crystal position -> frame index; an archive: extxyz member key -> (frame ids, error)
        self._frames = frames or {}
        self._keys = keys if keys is not None else ids  # an archive's members, by key (_member_key)
        folder_init = path / "atom_init.json" if kind == "folder" else None
        self.atom_init = folder_init if folder_init is not None and folder_init.exists() else None

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """SHA-256 that changes when the input does: for a folder, of every ``cif_id``, target,
        and structure file's size and modification time (and ``atom_init.json``'s); for an archive, of
        its bytes.  What ``--resume`` compares."""
        h = hashlib.sha256(f"{self.kind}\n".encode())
        if self.kind == "folder":
            extra = [self.atom_init.name] if self.atom_init is not None else []
            for i, name in enumerate(self._files + extra):
                path = self.path / name
                try:
                    st = path.stat()
                    stamp = f"{st.st_size} {st.st_mtime_ns}"
                except OSError:
                    stamp = "missing"
                target = repr(float(self.targets[i])) if self.targets is not None and i < len(self.ids) else ""
                h.update(f"{path.name}\t{target}\t{stamp}\n".encode())
        else:
            with open(self.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()

    def chunks(self, chunk_size: int, done: set[int] = frozenset()) -> Iterator[tuple[int, list[CrystalText]]]:
        """Yield ``(index, crystals)`` for the chunks of ``chunk_size`` crystals in order, the
        last one shorter; chunks whose index is in ``done`` are passed over (an archive is still
        read through them, its bytes dropped).

        Raises
        ------
        InputError
            An archive that cannot be read any more (damaged stream), or that changed since
            it was opened.
        """
        if self.kind == "folder":
            yield from self._folder_chunks(chunk_size, done)
            return
        batch: list[CrystalText | None] = []
        index = 0
        for crystal in self._archive_crystals(lambda i: i // chunk_size in done):
            batch.append(crystal)  # None: a crystal of a chunk done, kept to count
            if len(batch) == chunk_size:
                if index not in done:
                    yield index, batch
                batch, index = [], index + 1
        if batch and index not in done:
            yield index, batch

    def _archive_crystals(self, skip) -> Iterator[CrystalText | None]:
        """Every crystal of the archive in order, None for those ``skip(position)`` passes over (unread)."""
        members = self._tar_members() if self.kind == "tar" else self._zip_members()
        i = 0
        for key, source, read in members:
            name = source[len(str(self.path)) + 1:]
            if not key.startswith("\0"):  # one crystal
                if skip(i):
                    yield None
                else:
                    data, error = _read_member(read, source)
                    yield CrystalText(key, source, data, error, fmt=structure_format(name))
                i += 1
                continue
            ids, error = self._frames[key]
            if all(skip(i + k) for k in range(len(ids))):
                yield from [None] * len(ids)
            elif error is not None:  # a file that could not be read when the archive was opened
                yield CrystalText(ids[0], source, None, error, fmt="extxyz")
            else:
                data, error = _read_member(read, source)
                try:
                    crystals = _frame_crystals(data, name, source) if error is None else []
                except InputError:
                    crystals = []
                if [c.cif_id for c in crystals] != ids:
                    raise InputError(f"{self.path}: the archive changed while it was read ({source}); run again")
                yield from (None if skip(i + k) else c for k, c in enumerate(crystals))
            i += len(ids)

    def _folder_chunks(self, chunk_size, done):
        n = len(self.ids)
        for index, start in enumerate(range(0, n, chunk_size)):
            if index in done:
                continue
            out = []
            for i in range(start, min(start + chunk_size, n)):
                path = self.path / self._files[i]
                target = float(self.targets[i]) if self.targets is not None else math.nan
                frame = self._frames.get(i)
                if frame is not None:  # an extxyz frame, read here
                    source = frame_source(path, frame)
                    try:
                        structure, error = read_frame(path, frame), None
                    except InputError as exc:
                        structure, error = None, str(exc)
                    out.append(CrystalText(self.ids[i], source, None, error, target, structure, "extxyz"))
                    continue
                try:
                    data, error = read_cif_bytes(path), None
                except InputError as exc:
                    data, error = None, str(exc)
                fmt = structure_format(path) or "cif"
                out.append(CrystalText(self.ids[i], str(path), data, error, target, fmt=fmt))
            yield index, out

    def _tar_members(self):
        return tar_members(self.path, self._keys, self._links, _member_key)

    def _zip_members(self):
        try:
            zf = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{self.path}: cannot read the archive ({exc})") from None
        with zf:
            infos = [i for i in zf.infolist() if not i.is_dir() and _member_key(i.filename) is not None]
            for info in infos:
                yield _member_key(info.filename), f"{self.path}:{info.filename}", zip_reader(zf, self.path, info)


def _list_archive(path: Path) -> tuple[str, list[str], TarLinks | None]:
    """The kind (``tar`` or ``zip``), the key of every structure member of an archive (:func:`_member_key`),
    in order, and (tar) what its link members lead to."""
    keys: list[str] = []
    if path.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                keys = [key for i in zf.infolist() if not i.is_dir()
                        for key in [_member_key(i.filename)] if key is not None]
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not a readable zip archive ({exc})") from None
        return "zip", keys, None
    keys, links = list_tar(path, _member_key)
    return "tar", keys, links


def _archive_frames(data: CrystalInput) -> dict:
    """The frames' ids of an archive's extxyz members (one more pass over it), by member key:
    ``(ids, None)``, or ``([stem], reason)`` for a member that cannot be read."""
    frames = {}
    members = data._tar_members() if data.kind == "tar" else data._zip_members()
    for key, source, read in members:
        if not key.startswith("\0"):
            continue
        name = key[1:]
        raw, error = _read_member(read, source)
        try:
            ids = [c.cif_id for c in _frame_crystals(raw, name, source)] if error is None else []
        except InputError as exc:
            error = str(exc)
        if error is not None:
            base = name.replace("\\", "/").rsplit("/", 1)[-1]
            ids = [base.rsplit(".", 1)[0]]
        frames[key] = (ids, error)
    return frames


def open_input(path: str | os.PathLike) -> CrystalInput:
    """The crystals of a data folder or an archive of structure files (module docstring).

    Reads the folder's ``id_prop.csv`` (or its listing), or lists the archive's members
    once (twice when it holds extxyz files, whose frames are read for their ids); files are read
    later, chunk by chunk (:meth:`CrystalInput.chunks`).

    Raises
    ------
    InputError
        The folder faults of :func:`cgcnn.crystals.read_id_prop`; an archive that cannot be
        read, holds no structure member, or two crystals of one ``cif_id``; a path that is
        neither a folder nor an archive.
    """
    path = Path(path)
    if path.is_dir() or not path.exists():
        if not path.exists() and is_archive(path):
            raise InputError(f"{path}: archive {missing_reason(path)}")
        ids, targets = read_id_prop(path)
        files, frames = [], {}
        for i, cif_id in enumerate(ids):
            file, frame = locate(path, cif_id)
            files.append(file.name)
            if frame is not None:
                frames[i] = frame
        return CrystalInput(path, "folder", ids, targets, files, frames=frames)
    if not is_archive(path):
        raise InputError(f"{path}: neither a data folder nor an archive of structure files "
                         f"({', '.join(ARCHIVE_SUFFIXES)})")
    kind, keys, links = _list_archive(path)
    if not keys:
        raise InputError(f"{path}: no structure members in the archive (.cif, POSCAR/CONTCAR/.vasp, .json, "
                         ".extxyz/.xyz)")
    data = CrystalInput(path, kind, keys, links=links, keys=keys)
    if any(k.startswith("\0") for k in keys):
        data._frames = _archive_frames(data)
        data.ids = [i for k in keys for i in (data._frames[k][0] if k.startswith("\0") else [k])]
    seen: set[str] = set()
    for cif_id in data.ids:
        if cif_id in seen:
            raise InputError(f"{path}: two members give the cif_id {cif_id!r} ({cif_id}.cif, ...); each cif_id "
                             "must be unique")
        seen.add(cif_id)
    return data


def read_structure_text(data: bytes, source: str, max_sites: int | None = None, fmt: str = "cif") -> Structure:
    """A structure file's bytes to the checked, ordered ``Structure`` :func:`cgcnn.crystals.read_structure`
    gives for the same file (same parser, same checks, same messages, naming ``source``).

    Parameters
    ----------
    data : bytes
        The file (UTF-8; bad bytes replaced, line ends made ``\\n``; UTF-16/UTF-32 refused).
    source : str
        What names the crystal in messages (a path, or ``archive:member``).
    max_sites : int, optional
        Largest number of sites (default :data:`cgcnn.crystals.MAX_SITES`).
    fmt : str
        Its format (:data:`cgcnn.crystals.STRUCTURE_FORMATS`; ``extxyz``: a file of one frame).

    Raises
    ------
    InputError
        The cases of :func:`cgcnn.crystals.read_structure`.
    """
    return structure_from_bytes(data, source, max_sites, fmt)
