"""The bytes of one CIF, read with a bound: from a file, or from a member of a ``.tar`` or ``.zip``
archive, links included.

Every CIF is read through here, at most :data:`MAX_CIF_BYTES` of it: a larger one is refused by
its size (the file's, or the archive header's) before it is read, and a read never takes more
than the bound plus one byte, so a small archive that expands to gigabytes costs no memory.

Links in archives: ``tar`` writes a hard-linked file as a *hard link* member naming an earlier
member, and a symbolic link as a *symlink* member; zip archives made with ``zip -y`` hold
symbolic links as small members whose text is the target.  A link member named ``*.cif`` is a
crystal: it is read as the regular member it leads to (through further links, up to
:data:`MAX_LINK_HOPS`) when that lies in the archive; a link that leads outside the archive
(an absolute path, ``..``), to no member, to a folder or device, or round in a loop, is a crystal
that cannot be read, with that reason (``--on-error skip`` lists it in ``skipped.csv``).  A tar
archive is read as one stream: the bytes of a member that a later link leads to are kept (up to
:data:`MAX_KEPT_BYTES` in all) until that link is read; a link to a later member, or to one not
kept, is read by a further pass over the archive (at most :data:`MAX_LINK_PASSES` per run).
"""

from __future__ import annotations

import lzma
import os
import posixpath
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from cgcnn import InputError

__all__ = ["MAX_CIF_BYTES", "MAX_KEPT_BYTES", "MAX_LINK_HOPS", "MAX_LINK_PASSES", "MemberError", "read_cif_bytes",
           "TarLinks", "list_tar", "not_utf8", "tar_members", "zip_reader"]

MAX_CIF_BYTES = 50_000_000
"""Largest CIF, in bytes (50 MB), read from a file or an archive member.

A 5000-site crystal (:data:`cgcnn.crystals.MAX_SITES`) takes about 0.5 MB of CIF text; a
larger file is a mistake (a trajectory, a structure-factor listing) or a decompression bomb,
and is refused in one line with its size and this limit, without being read."""

MAX_LINK_HOPS = 32
"""Most links followed from one archive member to the file it leads to."""

MAX_KEPT_BYTES = 4 * MAX_CIF_BYTES
"""Most bytes of tar members kept in memory for links later in the archive (200 MB)."""

MAX_LINK_PASSES = 8
"""Most further passes over a tar archive, for links to later members or to members not kept."""


class MemberError(Exception):
    """A CIF that cannot be read; its message is one line naming it (the crystal is skipped with
    ``--on-error skip``, or ends the run)."""


def _too_large(source, size: int) -> str:
    return (f"{source}: {size:,} bytes, more than the limit of {MAX_CIF_BYTES:,} bytes per CIF "
            "(cgcnn.crystals.MAX_CIF_BYTES); not read")


def _read_bounded(f, source) -> bytes:
    """At most :data:`MAX_CIF_BYTES` of ``f``; :class:`MemberError` if there is more."""
    data = f.read(MAX_CIF_BYTES + 1)
    if len(data) > MAX_CIF_BYTES:
        raise MemberError(f"{source}: more than {MAX_CIF_BYTES:,} bytes, the limit per CIF "
                          "(cgcnn.crystals.MAX_CIF_BYTES); not read")
    return data


def not_utf8(data: bytes) -> str | None:
    """What a file's bytes are when they are plainly not UTF-8 or ASCII text: UTF-16 or UTF-32
    (a byte-order mark) or NUL bytes (UTF-16 without one, or binary); None otherwise."""
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            return f"is {name} text (it starts with a {name} byte-order mark); save it as UTF-8"
    if b"\x00" in data:
        return "holds NUL bytes (UTF-16 text without a byte-order mark, or not text); save it as UTF-8"
    return None


def read_cif_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of the CIF file ``path``, at most :data:`MAX_CIF_BYTES`.

    Raises
    ------
    InputError
        The file cannot be read, or is larger than :data:`MAX_CIF_BYTES` (said from its size,
        before reading).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_CIF_BYTES:
                raise InputError(_too_large(path, size))
            return _read_bounded(f, path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except MemberError as exc:
        raise InputError(str(exc)) from None


# --------------------------------------------------------------------------------------------------
# tar


def _norm(name: str) -> str:
    return posixpath.normpath(name) if name else name


def _outside(name: str) -> bool:
    return name.startswith("/") or name == ".." or name.startswith("../")


def _link_target(member_name: str, kind: str, linkname: str) -> str | None:
    """The normalised archive name a link leads to, or None when it leads outside the archive."""
    if kind == "hard":  # an archive path
        target = _norm(linkname)
    else:  # a path relative to the link's folder
        if linkname.startswith("/"):
            return None
        target = _norm(posixpath.join(posixpath.dirname(member_name), linkname))
    return None if _outside(target) else target


def _kind(member: tarfile.TarInfo) -> str:
    if member.isfile():
        return "file"
    if member.islnk():
        return "hard"
    if member.issym():
        return "sym"
    return "a folder" if member.isdir() else "not a regular file"


class TarLinks:
    """What a tar archive's links lead to, from the listing passes (:func:`list_tar`).

    ``resolved`` maps a CIF link member's position (its index among all members) to
    ``(target position, target size)`` or to why it cannot be read (str, after the member's name); ``wanted`` maps
    the position of a member that later links lead to, to how many of them do.
    """

    def __init__(self):
        self.resolved: dict[int, tuple[int, int] | str] = {}
        self.wanted: dict[int, int] = {}


def _resolve(links: dict, by_name: dict, files: dict, others: dict) -> TarLinks:
    """Follow every CIF link member (``links``: position -> (name, kind, linkname, is_cif))."""
    out = TarLinks()
    for pos, (_name, kind, linkname, is_cif) in links.items():
        if not is_cif:
            continue
        what = "hard link" if kind == "hard" else "symbolic link"
        cur, seen, reason = pos, set(), None
        for _ in range(MAX_LINK_HOPS):
            seen.add(cur)
            cname, ckind, clink, _ = links[cur]
            target = _link_target(cname, ckind, clink)
            if target is None:
                reason = f"{what} to {clink!r}, outside the archive"
                break
            if target in files:
                before = [p for p in files[target][0] if p < pos]
                tpos = before[-1] if before else files[target][0][0]  # tar's rule: the last one before
                out.resolved[pos] = (tpos, files[target][1][files[target][0].index(tpos)])
                if tpos < pos:
                    out.wanted[tpos] = out.wanted.get(tpos, 0) + 1
                break
            if target in by_name:
                cur = by_name[target]
                if cur in seen:
                    reason = f"{what} to {linkname!r}, a loop of links"
                    break
                continue
            if target in others:
                reason = f"{what} to {target!r}, which is {others[target]}"
            else:
                reason = f"{what} to {clink!r}, which is not in the archive"
            break
        else:
            reason = f"{what} to {linkname!r}, more than {MAX_LINK_HOPS} links deep"
        if reason is not None:
            out.resolved[pos] = f"{reason}; not read"
    return out


def list_tar(path: Path, cif_member_id) -> tuple[list[str], TarLinks]:
    """The ``cif_id`` of every CIF member of a tar archive (regular files and links), in order, and
    what its CIF links lead to (a second pass, only when the archive holds links).

    Raises
    ------
    InputError
        The archive cannot be read.
    """
    ids: list[str] = []
    links: dict[int, tuple] = {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for pos, member in enumerate(tf):
                tf.members = []  # a stream's members are kept by tarfile; 10^6 of them would not fit
                kind = _kind(member)
                cif_id = cif_member_id(member.name) if kind in ("file", "hard", "sym") else None
                if cif_id is not None:
                    ids.append(cif_id)
                if kind in ("hard", "sym"):
                    links[pos] = (_norm(member.name), kind, member.linkname, cif_id is not None)
        if not links:
            return ids, TarLinks()
        by_name = {name: pos for pos, (name, *_) in links.items()}
        wanted = {t for name, kind, linkname, _ in links.values()
                  for t in [_link_target(name, kind, linkname)] if t is not None}
        files: dict[str, tuple[list[int], list[int]]] = {}
        others: dict[str, str] = {}
        with tarfile.open(path, "r|*") as tf:
            for pos, member in enumerate(tf):
                tf.members = []
                name = _norm(member.name)
                if name in wanted:
                    kind = _kind(member)
                    if kind == "file":
                        files.setdefault(name, ([], []))
                        files[name][0].append(pos)
                        files[name][1].append(member.size)
                    elif kind not in ("hard", "sym"):
                        others[name] = kind
    except (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
        raise InputError(f"{path}: not a readable tar archive ({exc})") from None
    return ids, _resolve(links, by_name, files, others)


def tar_members(path: Path, ids: list[str], links: TarLinks, cif_member_id):
    """Yield ``(cif_id, source, read)`` for every CIF member of a tar archive, in order; ``read()``
    gives its bytes (:class:`MemberError` when they cannot be read).

    Raises
    ------
    InputError
        The archive is damaged, or changed since :func:`list_tar`.
    """
    kept: dict[int, bytes] = {}
    kept_bytes = 0
    wanted = dict(links.wanted)  # links still to come, by the position they lead to
    passes = [0]

    def later_pass(tpos: int, size: int, source: str) -> bytes:
        if size > MAX_CIF_BYTES:
            raise MemberError(_too_large(source, size))
        if passes[0] >= MAX_LINK_PASSES:
            raise MemberError(f"{source}: a link to a member the reading did not keep (more than "
                              f"{MAX_LINK_PASSES} such links); unpack the archive, or replace the links by copies")
        passes[0] += 1
        try:
            with tarfile.open(path, "r|*") as again:
                for pos, member in enumerate(again):
                    again.members = []
                    if pos == tpos and member.isfile():
                        return _read_bounded(again.extractfile(member), source)
        except (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
            raise MemberError(f"{source}: cannot read the member it links to ({exc})") from None
        raise MemberError(f"{source}: the member it links to is gone; the archive changed while it was read")

    try:
        tf = tarfile.open(path, "r|*")
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"{path}: cannot read the archive ({exc})") from None
    seen = 0
    with tf:
        try:
            for pos, member in enumerate(tf):
                tf.members = []
                kind = _kind(member)
                source = f"{path}:{member.name}"
                own = None
                if pos in wanted and kind == "file":  # a later link leads here: keep it if it fits
                    if member.size <= MAX_CIF_BYTES and kept_bytes + member.size <= MAX_KEPT_BYTES:
                        own = kept[pos] = _read_bounded(tf.extractfile(member), source)
                        kept_bytes += len(own)
                cif_id = cif_member_id(member.name) if kind in ("file", "hard", "sym") else None
                if cif_id is None:
                    continue
                if seen >= len(ids) or ids[seen] != cif_id:
                    raise InputError(f"{path}: the archive changed while it was read; run again")
                seen += 1
                if kind == "file":
                    yield cif_id, source, _file_reader(tf, member, source, own)
                    continue
                target = links.resolved.get(pos, "a link the listing did not see; not read")
                if isinstance(target, str):
                    yield cif_id, source, _failing(f"{source}: {target}")
                    continue
                tpos, size = target
                if tpos in kept:
                    yield cif_id, source, lambda data=kept[tpos]: data
                else:
                    yield cif_id, source, lambda t=tpos, s=size, src=source: later_pass(t, s, src)
                if tpos < pos:
                    wanted[tpos] -= 1
                    if wanted[tpos] == 0 and tpos in kept:
                        kept_bytes -= len(kept.pop(tpos))
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError) as exc:
            raise InputError(f"{path}: damaged archive after {seen} CIFs ({exc})") from None


def _file_reader(tf, member, source, own):
    def read():
        if own is not None:
            return own
        if member.size > MAX_CIF_BYTES:
            raise MemberError(_too_large(source, member.size))
        return _read_bounded(tf.extractfile(member), source)
    return read


def _failing(message: str):
    def read():
        raise MemberError(message)
    return read


# --------------------------------------------------------------------------------------------------
# zip


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)  # made on Unix, mode S_IFLNK


def _zip_open(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    """A zip member's bytes, bounded, or :class:`MemberError` with why they cannot be read."""
    if info.flag_bits & 0x1:
        raise MemberError(f"{source}: encrypted (a password-protected archive); not read: unpack it, or make "
                          "the archive without a password")
    if info.file_size > MAX_CIF_BYTES:
        raise MemberError(_too_large(source, info.file_size))
    try:
        with zf.open(info) as f:
            return _read_bounded(f, source)
    except NotImplementedError:
        raise MemberError(f"{source}: compressed with a method (zip compression type {info.compress_type}) that "
                          "cannot be read here; make the archive with deflate (the default of zip)") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, lzma.LZMAError) as exc:
        raise MemberError(f"{source}: cannot read ({exc})") from None


def zip_reader(zf: zipfile.ZipFile, path: Path, info: zipfile.ZipInfo):
    """``read()`` of a zip member (symbolic links followed within the archive), bounded; it raises
    :class:`MemberError` for a member that cannot be read (encrypted, an unknown compression
    method, damaged, too large, a link leading outside the archive)."""
    source = f"{path}:{info.filename}"

    def read() -> bytes:
        current = info
        for _ in range(MAX_LINK_HOPS):
            if not _zip_is_link(current):
                return _zip_open(zf, current, source)
            text = _zip_open(zf, current, source).decode("utf-8", errors="replace")
            target = None if text.startswith("/") else _norm(posixpath.join(posixpath.dirname(current.filename),
                                                                            text))
            if target is None or _outside(target):
                raise MemberError(f"{source}: symbolic link to {text!r}, outside the archive; not read")
            try:
                current = zf.getinfo(target)
            except KeyError:
                raise MemberError(f"{source}: symbolic link to {text!r}, which is not in the archive; "
                                  "not read") from None
            if current.is_dir():
                raise MemberError(f"{source}: symbolic link to {text!r}, a folder; not read")
        raise MemberError(f"{source}: symbolic links more than {MAX_LINK_HOPS} deep (a loop?); not read")

    return read
