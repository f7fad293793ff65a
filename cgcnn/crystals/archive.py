"""Crystals to screen, read in order and in chunks: a folder of CIFs, or a ``.tar``,
``.tar.gz`` (``.tgz``, ``.tar.bz2``, ``.tar.xz``) or ``.zip`` archive of them read
without unpacking.

A folder follows the CGCNN convention (:func:`cgcnn.crystals.read_id_prop`): the rows of
``id_prop.csv`` in file order (targets when it has them), else every ``*.cif`` sorted
by name.  An archive gives its ``.cif`` members in archive order (``tar --sort=name``
makes that the folder's order), each member's file name without ``.cif`` being its
``cif_id``; other members (folders, ``id_prop.csv``, ``atom_init.json``) are passed
over, and an archive has no targets.  A compressed tar is read as one stream (never
seeked, never listed in memory as a whole), so 10⁶ members cost one pass per read.
Members that are links (what ``tar`` writes for hard-linked files, and symbolic links) are
read as the member they lead to, within the archive; each CIF is read with a bound
(:data:`cgcnn.crystals.members.MAX_CIF_BYTES`); a member that cannot be read (a link leading
outside, an encrypted or oddly compressed zip member, one too large) is a crystal that cannot be
read, with its reason (:mod:`cgcnn.crystals.members`).

Nothing here parses a CIF: a :class:`CrystalText` carries a crystal's bytes, or the
reason it could not be read, to whatever builds its graph
(:func:`read_structure_text` turns the bytes into a checked ``Structure``).
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
from cgcnn.crystals.folder import cif_file, read_id_prop
from cgcnn.crystals.members import MemberError, TarLinks, list_tar, read_cif_bytes, tar_members, zip_reader
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
        What names it in messages: the CIF's path, or ``archive.tar.gz:member.cif``.
    data : bytes or None
        The CIF file's bytes (None when it could not be read).
    error : str or None
        Why it could not be read (a one-line message naming ``source``).
    target : float
        log10 κ_L from ``id_prop.csv``, NaN when the input has none.
    structure : Structure or None
        The crystal already read and checked (:func:`cgcnn.crystals.check_structure`): a structure of a
        Python session or of a non-CIF file; then ``data`` is None and no graph is cached on disk.
    """

    cif_id: str
    source: str
    data: bytes | None
    error: str | None = None
    target: float = math.nan
    structure: Any = None


def _cif_member_id(name: str) -> str | None:
    """The ``cif_id`` of an archive member name, or None for a member that is no CIF."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if len(base) > 4 and base[-4:].lower() == ".cif" and not base.startswith("._"):  # ._x.cif: macOS metadata
        return base[:-4]
    return None


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a file read as an archive (by its suffix, :data:`ARCHIVE_SUFFIXES`)."""
    name = str(path).lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


class CrystalInput:
    """The crystals of a folder or an archive, in order, read chunk by chunk.

    Use :func:`open_input`.  Attributes: ``path`` (Path), ``kind`` (``folder``, ``tar``
    or ``zip``), ``ids`` (list of str, in order), ``targets`` (ndarray of shape (n,) or
    None), ``atom_init`` (the folder's ``atom_init.json`` when it has one, else None).
    Memory: the ids (about 100 bytes each); a chunk's bytes while it is read.
    """

    def __init__(self, path: Path, kind: str, ids: list[str], targets=None, files: list[str] | None = None,
                 links: TarLinks | None = None):
        self.path = path
        self.kind = kind
        self.ids = ids
        self.targets = targets
        self._files = files  # a folder's CIF file names (str: a tenth of a Path's memory)
        self._links = links or TarLinks()  # what a tar archive's link members lead to
        folder_init = path / "atom_init.json" if kind == "folder" else None
        self.atom_init = folder_init if folder_init is not None and folder_init.exists() else None

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """SHA-256 that changes when the input does: for a folder, of every ``cif_id``, target,
        and CIF's size and modification time (and ``atom_init.json``'s); for an archive, of its
        bytes.  What ``--resume`` compares."""
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
        members = self._tar_members() if self.kind == "tar" else self._zip_members()
        batch: list[CrystalText] = []
        index = 0
        for cif_id, source, read in members:
            if index not in done:
                try:
                    data, error = read(), None
                except MemberError as exc:
                    data, error = None, str(exc)
                except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
                    data, error = None, f"{source}: cannot read ({exc})"
                batch.append(CrystalText(cif_id, source, data, error))
            else:
                batch.append(None)  # placeholder, to count
            if len(batch) == chunk_size:
                if index not in done:
                    yield index, batch
                batch, index = [], index + 1
        if batch and index not in done:
            yield index, batch

    def _folder_chunks(self, chunk_size, done):
        n = len(self.ids)
        for index, start in enumerate(range(0, n, chunk_size)):
            if index in done:
                continue
            out = []
            for i in range(start, min(start + chunk_size, n)):
                path = self.path / self._files[i]
                target = float(self.targets[i]) if self.targets is not None else math.nan
                try:
                    data, error = read_cif_bytes(path), None
                except InputError as exc:
                    data, error = None, str(exc)
                out.append(CrystalText(self.ids[i], str(path), data, error, target))
            yield index, out

    def _tar_members(self):
        return tar_members(self.path, self.ids, self._links, _cif_member_id)

    def _zip_members(self):
        try:
            zf = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{self.path}: cannot read the archive ({exc})") from None
        with zf:
            infos = [i for i in zf.infolist() if not i.is_dir() and _cif_member_id(i.filename) is not None]
            for info in infos:
                yield _cif_member_id(info.filename), f"{self.path}:{info.filename}", zip_reader(zf, self.path, info)


def _list_archive(path: Path) -> tuple[str, list[str], TarLinks | None]:
    """The kind (``tar`` or ``zip``), the ``cif_id`` of every CIF member of an archive, in order, and
    (tar) what its link members lead to."""
    ids: list[str] = []
    if path.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                ids = [cid for i in zf.infolist() if not i.is_dir()
                       for cid in [_cif_member_id(i.filename)] if cid is not None]
        except (OSError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not a readable zip archive ({exc})") from None
        return "zip", ids, None
    ids, links = list_tar(path, _cif_member_id)
    return "tar", ids, links


def open_input(path: str | os.PathLike) -> CrystalInput:
    """The crystals of a data folder or an archive of CIFs (module docstring).

    Reads the folder's ``id_prop.csv`` (or its listing), or lists the archive's members
    once; CIFs are read later, chunk by chunk (:meth:`CrystalInput.chunks`).

    Raises
    ------
    InputError
        The folder faults of :func:`cgcnn.crystals.read_id_prop`; an archive that cannot be
        read, holds no ``.cif`` member, or two members of one ``cif_id``; a path that is
        neither a folder nor an archive.
    """
    path = Path(path)
    if path.is_dir() or not path.exists():
        if not path.exists() and is_archive(path):
            raise InputError(f"{path}: archive {missing_reason(path)}")
        ids, targets = read_id_prop(path)
        return CrystalInput(path, "folder", ids, targets, [cif_file(path, i).name for i in ids])
    if not is_archive(path):
        raise InputError(f"{path}: neither a data folder nor an archive of CIFs ({', '.join(ARCHIVE_SUFFIXES)})")
    kind, ids, links = _list_archive(path)
    if not ids:
        raise InputError(f"{path}: no .cif members in the archive")
    seen: set[str] = set()
    for cif_id in ids:
        if cif_id in seen:
            raise InputError(f"{path}: two members named {cif_id}.cif; each cif_id must be unique")
        seen.add(cif_id)
    return CrystalInput(path, kind, ids, links=links)


def read_structure_text(data: bytes, source: str, max_sites: int | None = None) -> Structure:
    """A CIF's bytes to the checked, ordered ``Structure`` :func:`cgcnn.crystals.read_structure`
    gives for the same file (same parser, same checks, same messages, naming ``source``).

    Parameters
    ----------
    data : bytes
        The CIF file (UTF-8; bad bytes replaced, line ends made ``\\n``; UTF-16/UTF-32 refused).
    source : str
        What names the crystal in messages (a path, or ``archive:member``).
    max_sites : int, optional
        Largest number of sites (default :data:`cgcnn.crystals.MAX_SITES`).

    Raises
    ------
    InputError
        The cases of :func:`cgcnn.crystals.read_structure`.
    """
    return structure_from_bytes(data, source, max_sites)
