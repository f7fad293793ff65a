"""A CGCNN data folder's own files: ``id_prop.csv`` read and checked, each crystal's file found
(its ``atom_init.json`` is read by :mod:`cgcnn.data.atom_features`).

A data folder follows the CGCNN convention: ``id_prop.csv`` (no header,
``cif_id,target``), one ``<cif_id>.cif`` per row and ``atom_init.json`` (keys are
atomic numbers as strings, values equal-length feature lists).  For prediction,
``id_prop.csv`` may hold ids only, or be absent (then every structure file is used: the
single-crystal files sorted by ``cif_id``, then the frames of the extxyz files).
``<cif_id>.CIF`` (any case of the suffix) is read where ``<cif_id>.cif`` is absent; a
``cif_id`` is a file name in the folder, never a path.

Other formats (:mod:`cgcnn.crystals.names`): a crystal's file may also be ``<cif_id>.vasp``,
``<cif_id>.json`` (pymatgen) or a file named ``<cif_id>`` that starts with ``POSCAR`` or ``CONTCAR``
(:func:`cif_file`); every frame of the folder's ``*.extxyz``/``*.xyz`` files is a crystal too, its
``cif_id`` the frame's own or ``STEM:INDEX`` (:mod:`cgcnn.crystals.frames`, :func:`locate`).

Rows keep their ``id_prop.csv`` order everywhere.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cgcnn import InputError
from cgcnn.crystals.frames import folder_frames
from cgcnn.crystals.members import not_utf8
from cgcnn.crystals.names import structure_format, structure_id
from cgcnn.outputs import missing_reason

__all__ = ["cif_file", "LOG10_KAPPA_RANGE", "check_log10_kappa", "data_folder_inputs", "locate",
           "read_id_prop"]


_HEADER_WORDS = {"id", "cif_id", "cif", "material_id", "name", "structure", "formula"}


def cif_file(folder: str | os.PathLike, cif_id: str) -> Path:
    """The file of the crystal ``cif_id`` in ``folder``: ``<cif_id>.cif``, else ``<cif_id>.CIF``, else
    ``<cif_id>.vasp``, ``<cif_id>.json``, a file named ``<cif_id>`` that starts with ``POSCAR`` or
    ``CONTCAR``, else another case of those suffixes; ``<cif_id>.cif`` (which does not exist) when there
    is none (an extxyz frame's ``cif_id`` has no file of its own: :func:`locate`)."""
    found = _find(Path(folder), cif_id)
    return found if found is not None else Path(folder) / f"{cif_id}.cif"


def _find(folder: Path, cif_id: str) -> Path | None:
    path = folder / f"{cif_id}.cif"
    if path.is_file():
        return path
    for other in (folder / f"{cif_id}.CIF", folder / f"{cif_id}.vasp", folder / f"{cif_id}.json", folder / cif_id):
        if structure_id(other.name) == cif_id and other.is_file():
            return other
    try:
        for other in folder.iterdir():
            if other.name.startswith(cif_id) and structure_id(other.name) == cif_id and other.is_file():
                return other
    except OSError:
        pass
    return None


def locate(folder: str | os.PathLike, cif_id: str) -> tuple[Path, int | None]:
    """Where the crystal ``cif_id`` of ``folder`` lies: ``(file, None)`` for a file of its own
    (:func:`cif_file`), ``(extxyz file, frame index)`` for a frame (index -1: a file that cannot be
    read; :func:`cgcnn.crystals.frames.folder_frames`); ``(<cif_id>.cif, None)`` when it lies nowhere.

    Raises
    ------
    InputError
        One ``cif_id`` in two frames of the folder.
    """
    found = _find(Path(folder), cif_id)
    if found is not None:
        return found, None
    frame = folder_frames(folder).get(cif_id)
    if frame is not None:
        return Path(folder) / frame[0], frame[1]
    return Path(folder) / f"{cif_id}.cif", None


def data_folder_inputs(folder: str | os.PathLike, atom_init: str | os.PathLike | None = None) -> dict:
    """The files a run may read from a data folder, labelled for :func:`cgcnn.outputs.check_outputs`:
    ``id_prop.csv``, ``atom_init.json`` (and ``--atom-init`` when given) and every structure file of the
    folder (``*.cif`` in any case, POSCARs, pymatgen JSON, extxyz: :func:`cgcnn.crystals.structure_format`),
    so that no output of the run can name one of them.

    Returns
    -------
    dict
        ``{"id_prop.csv": path, "atom_init.json": path, "--atom-init": path or None, "CIF": [paths]}``;
        an unreadable or missing folder gives no structure file (the run then fails on it with its own message).
    """
    folder = Path(folder)
    cifs: list[Path] = []
    try:
        with os.scandir(folder) as entries:
            cifs = [folder / e.name for e in entries if structure_format(e.name) is not None]
    except OSError:
        pass
    return {"id_prop.csv": folder / "id_prop.csv", "atom_init.json": folder / "atom_init.json",
            "--atom-init": atom_init, "CIF": cifs}


def _check_cif_id(cif_id: str, where: str) -> None:
    """Refuse a ``cif_id`` that is a path (it would read a file outside the data folder)."""
    if "/" in cif_id or "\\" in cif_id or "\0" in cif_id or cif_id in (".", "..") or os.path.isabs(cif_id):
        raise InputError(f"{where}: cif_id {cif_id!r} is a path, not a name; each CIF must lie in the data "
                         "folder itself, as <cif_id>.cif")


def _read_text_utf8(path: Path) -> str:
    """The text of ``id_prop.csv``, which must be UTF-8 (a byte-order mark is allowed).

    Raises :class:`InputError` naming the file and, where it can tell, the encoding found:
    UTF-16 or UTF-32 (a byte-order mark, or NUL bytes), or the first byte that is not
    UTF-8 with its line (Latin-1 or Windows-1252 text, usually).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    problem = not_utf8(data)
    if problem:
        raise InputError(f"{path}: {problem}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        byte = data[exc.start]
        guess = ""
        try:
            guess = f", {data[exc.start:exc.start + 1].decode('cp1252')!r} in Windows-1252"
        except UnicodeDecodeError:
            pass
        raise InputError(f"{path}, line {line}: byte 0x{byte:02x} is not UTF-8 (Latin-1 or Windows-1252 "
                         f"text{guess}?); save it as UTF-8") from None


#: Bounds of log10 κ_L (κ_L in W m-1 K-1), 10^-3 ... 10^4 W m-1 K-1: every lattice thermal
#: conductivity physically possible lies within (measured values run from about 0.05,
#: amorphous-like solids, to about 3000, diamond; computed sets reach lower, AFLOW-AGL
#: down to 0.0099, log10 -2.0).
LOG10_KAPPA_RANGE = (-3.0, 4.0)


def check_log10_kappa(targets, source: str | os.PathLike, ids: Sequence[str] | None = None) -> None:
    """Refuse targets that cannot be log10 κ_L (κ_L in W m-1 K-1).

    Every target must lie within :data:`LOG10_KAPPA_RANGE` (-3 ... 4, κ_L from 10^-3 to
    10^4 W m-1 K-1).  A column that looks like κ_L itself rather than its log10 (no value
    negative and some above 4, or a quarter of the values or more above 4: no log10 κ_L
    is above 4) is refused as such; otherwise the message names the first value outside
    and its crystal.  Not used by ``cgcnn.train``, whose targets may be any property.

    Parameters
    ----------
    targets : array-like of shape (n,)
    source : path or str
        Where the targets come from (usually the data folder's ``id_prop.csv``), for the message.
    ids : sequence of str, optional
        The crystals of ``targets``, to name the first one outside.

    Raises
    ------
    InputError
        One line naming ``source`` and what the values look like, e.g. ``values from 0.5 to
        420 (2 of 3 above 4, none negative) look like κ_L in W m-1 K-1, not log10 κ_L: take
        log10 of the second column``.
    """
    values = np.asarray(targets, dtype=np.float64).reshape(-1)
    if values.size == 0:
        return
    lo_ok, hi_ok = LOG10_KAPPA_RANGE
    outside = ~((values >= lo_ok) & (values <= hi_ok))
    if not outside.any():
        return
    fmt = lambda x: f"{x:.0f}" if 1e3 <= abs(x) < 1e15 else f"{x:.3g}"  # 4200, not 4.2e+03
    finite = values[np.isfinite(values)]
    span = f"values from {fmt(finite.min())} to {fmt(finite.max())}" if finite.size else "no finite values"
    above = int((finite > hi_ok).sum())
    if finite.size == values.size and above and ((finite >= 0).all() or 4 * above >= finite.size):
        negative = int((finite < 0).sum())
        how = f"{above} of {finite.size} above {hi_ok:g}, " + (f"{negative} negative" if negative else "none negative")
        raise InputError(f"{source}: {span} ({how}) look like κ_L in W m-1 K-1, not log10 κ_L: take log10 of "
                         "the second column")
    first = int(np.argmax(outside))
    who = f" ({ids[first]})" if ids is not None and first < len(ids) else ""
    raise InputError(f"{source}: target {values[first]:.4g}{who} lies outside {lo_ok:g} ... {hi_ok:g}, the log10 "
                     f"of every possible κ_L (10^{lo_ok:g} ... 10^{hi_ok:g} W m-1 K-1) ({span}); the second "
                     "column must be log10 of κ_L in W m-1 K-1")


def _extra_fields(row: list[str]) -> str:
    """What is wrong with a row of more than two fields (a decimal comma, usually)."""
    text = ",".join(row)
    hint = ""
    if len(row) == 3 and row[1].lstrip("+-").isdigit() and row[2].isdigit():
        hint = f" (a decimal comma? write {row[1]}.{row[2]})"
    return (f"{len(row)} fields in {text!r}; a row is cif_id,target or cif_id alone, with a point as "
            f"the decimal separator{hint}")


def read_id_prop(folder: str | os.PathLike) -> tuple[list[str], np.ndarray | None]:
    """Read the ids (and targets) of a CGCNN data folder, in file order.

    Accepts blank lines, Windows line endings, surrounding spaces, a header row
    (first row whose target is not a number and whose id has no CIF), and
    ``id_prop.csv`` with ids only.  Without ``id_prop.csv`` every single-crystal file of the
    folder (``*.cif``, POSCARs, pymatgen JSON), sorted by ``cif_id``, then every frame of its
    extxyz files (files sorted by name) is used, with no targets.  A row's ``cif_id`` is that of a
    file (:func:`cif_file`) or of an extxyz frame (:func:`locate`).

    Returns
    -------
    ids : list of str
    targets : ndarray of shape (n,) or None
        None when the folder has no targets.

    Raises
    ------
    InputError
        Missing or empty folder, a row without its CIF, duplicate ids, a target that is
        not a finite number, rows with and without targets mixed, a row of more than two
        fields (``NaCl,0,85``: a decimal comma; empty fields after the target are allowed).
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: data folder {missing_reason(folder)}")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    id_prop = folder / "id_prop.csv"
    if not id_prop.exists():
        if os.path.lexists(id_prop):  # a broken symbolic link or a loop: not "no id_prop.csv"
            raise InputError(f"{id_prop}: {missing_reason(id_prop)}")
        listing = list(folder.iterdir())
        files = sorted((p for p in listing if structure_id(p.name) is not None and p.is_file()), key=lambda p: p.name)
        extxyz = any(structure_format(p.name) == "extxyz" for p in listing)
        seen: dict[str, Path] = {}
        for p in files:
            stem = structure_id(p.name)
            if stem in seen:
                raise InputError(f"{folder}: both {seen[stem].name} and {p.name}; keep one (no id_prop.csv "
                                 "says which)")
            seen[stem] = p
        ids = sorted(seen)
        for cif_id, (name, _) in (folder_frames(folder) if extxyz else {}).items():
            if cif_id in seen:
                raise InputError(f"{folder}: both {seen[cif_id].name} and a frame of {name} are {cif_id!r}; keep one")
            ids.append(cif_id)
        if not ids:
            raise InputError(f"{folder}: no id_prop.csv and no structure files (.cif, POSCAR/CONTCAR/.vasp, "
                             ".json, .extxyz/.xyz)")
        return ids, None
    text = _read_text_utf8(id_prop)
    rows = [
        (lineno, [c.strip() for c in row])
        for lineno, row in enumerate(csv.reader(text.splitlines()), start=1)
        if row and any(c.strip() for c in row)
    ]
    if not rows:
        raise InputError(f"{id_prop}: no rows")
    # A header row: first row whose id has no CIF and whose second column is no number.
    _, first = rows[0]
    if not locate(folder, first[0])[0].exists():
        second = first[1] if len(first) > 1 else ""
        try:
            float(second)
            numeric = True
        except ValueError:
            numeric = False
        if (second and not numeric) or first[0].lower() in _HEADER_WORDS:
            rows = rows[1:]
            if not rows:
                raise InputError(f"{id_prop}: only a header row")
    ids: list[str] = []
    targets: list[float] = []
    seen: dict[str, int] = {}
    with_target = None
    for lineno, row in rows:
        cif_id = row[0]
        if not cif_id:
            raise InputError(f"{id_prop}, line {lineno}: empty cif_id")
        _check_cif_id(cif_id, f"{id_prop}, line {lineno}")
        if cif_id in seen:
            raise InputError(f"{id_prop}, line {lineno}: duplicate cif_id {cif_id!r} (first on line {seen[cif_id]})")
        seen[cif_id] = lineno
        if any(row[2:]):
            raise InputError(f"{id_prop}, line {lineno}: {_extra_fields(row)}")
        has_target = len(row) > 1 and row[1] != ""
        if with_target is None:
            with_target = has_target
        elif has_target != with_target:
            raise InputError(f"{id_prop}, line {lineno}: some rows have a target and some do not")
        if has_target:
            try:
                value = float(row[1])
            except ValueError:
                raise InputError(f"{id_prop}, line {lineno}: target {row[1]!r} is not a number") from None
            if not math.isfinite(value):
                raise InputError(f"{id_prop}, line {lineno}: target {row[1]!r} is not finite")
            targets.append(value)
        path, frame = locate(folder, cif_id)
        if frame is None and not path.is_file():
            reason = missing_reason(path) if os.path.lexists(path) else "not found"
            raise InputError(f"{id_prop}, line {lineno}: {cif_id}.cif {reason} in {folder}")
        ids.append(cif_id)
    return ids, (np.asarray(targets, dtype=np.float64) if with_target else None)
