"""BTE values: log10 κ_L of crystals from phonons (``python -m cgcnn.refine``'s ``refined.csv``, a
``log10_kappa_bte`` column of a data folder's ``compounds.csv``, or a mapping), and why a crystal has none.

What the last layer's BTE model (:mod:`cgcnn.transfer.bte`) is fit on and routes by.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cgcnn import InputError

__all__ = ["BTE_COLUMN", "BTEValues", "read_bte", "folder_bte", "reason_counts"]

#: The column of the BTE value (log10 κ_L, κ_L in W m⁻¹ K⁻¹) in ``refined.csv`` and ``compounds.csv``.
BTE_COLUMN = "log10_kappa_bte"
_BTE_RANGE = (-3.0, 4.0)  # as cgcnn.crystals.LOG10_KAPPA_RANGE


@dataclass
class BTEValues:
    """BTE values read from a file.

    Attributes
    ----------
    values : dict
        ``cif_id`` → log10 κ_L (W m⁻¹ K⁻¹) of the crystals with a value.
    reasons : dict
        ``cif_id`` → why a crystal listed without a value has none (``dynamically unstable at 0 K: ...``,
        ``error: ...``, or ``no value in FILE``).
    potentials : dict
        ``cif_id`` → the interatomic potential of its value (``refined.csv``'s ``potential``; absent
        when the file has no such column).
    source : dict
        ``name`` (file name), ``sha256``, ``column``: where the values come from.
    """

    values: dict
    reasons: dict = field(default_factory=dict)
    potentials: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file's name, for messages."""
        return self.source.get("name", "the BTE values")

    def updated(self, other: BTEValues) -> BTEValues:
        """These values with ``other``'s over them: a crystal ``other`` lists (with a value or a reason) takes
        ``other``'s entry (e.g. ``--bte FILE`` updated by the crystals ``--refine`` computed)."""
        listed = set(other.values) | set(other.reasons)
        values = {k: v for k, v in self.values.items() if k not in listed}
        reasons = {k: v for k, v in self.reasons.items() if k not in listed}
        source = {"name": f"{self.name} + {other.name}", "column": other.source.get("column", BTE_COLUMN),
                  "sha256": ",".join(str(s.source.get("sha256", "")) for s in (self, other))}
        return BTEValues({**values, **other.values}, {**reasons, **other.reasons},
                         {**self.potentials, **other.potentials}, source)

    @classmethod
    def of(cls, bte, name: str = "bte") -> BTEValues | None:
        """``bte`` as values: None; :class:`BTEValues` (itself); a path (:func:`read_bte`); or a mapping
        ``cif_id`` → log10 κ_L (W m⁻¹ K⁻¹), where None or NaN is no value (reason ``no value in NAME``).

        Raises
        ------
        InputError
            As :func:`read_bte`; a mapped value that is not a number or outside -3 ... 4 (naming the crystal).
        """
        if bte is None or isinstance(bte, BTEValues):
            return bte
        if isinstance(bte, str | os.PathLike):
            return read_bte(bte)
        if not isinstance(bte, Mapping):
            raise InputError(f"{name}: give a refined.csv path or a mapping cif_id -> {BTE_COLUMN}, "
                             f"not {type(bte).__name__}")
        out = cls({}, source={"name": name, "sha256": "", "column": BTE_COLUMN})
        for cif_id, value in bte.items():
            try:
                value = float("nan") if value is None else float(value)
            except (TypeError, ValueError):
                raise InputError(f"{name}: {BTE_COLUMN} of {cif_id} is {value!r}, not a number") from None
            if math.isnan(value):
                out.reasons[str(cif_id)] = f"no value in {name}"
            elif not _BTE_RANGE[0] <= value <= _BTE_RANGE[1]:
                raise InputError(f"{name}: {BTE_COLUMN} of {cif_id} is {value:g}, not a log10 κ_L (W m-1 K-1) "
                                 f"within {_BTE_RANGE[0]:g} ... {_BTE_RANGE[1]:g}")
            else:
                out.values[str(cif_id)] = value
        return out

    def lookup(self, ids) -> tuple[np.ndarray, list[str]]:
        """The value of each of ``ids`` (ndarray of shape (n,), NaN without one) and why each without one
        has none (``""`` with a value; ``not in FILE`` for a crystal the file does not list)."""
        values = np.array([self.values.get(i, np.nan) for i in ids], dtype=np.float64)
        reasons = ["" if i in self.values else self.reasons.get(i, f"not in {self.name}") for i in ids]
        return values, reasons


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_bte(path: str | os.PathLike, column: str = BTE_COLUMN) -> BTEValues:
    """BTE values of a CSV file with ``cif_id`` and ``column`` (a ``refined.csv`` of ``cgcnn.refine``, or a
    ``compounds.csv`` with that column).

    An empty value is no value: its reason is the row's ``reason`` (``refined.csv``) or ``no value in FILE``.

    Raises
    ------
    InputError
        A missing or unreadable file; no ``cif_id`` or ``column``; a repeated ``cif_id``; a value that
        is not a number, not finite or outside -3 ... 4 (log10 κ_L; one line naming the file and row).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: BTE values not found (a refined.csv of python -m cgcnn.refine)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the BTE values ({getattr(exc, 'strerror', None) or exc})") from None
    for needed in ("cif_id", column):
        if needed not in header:
            raise InputError(f"{path}: no {needed} column (need cif_id and {column})")
    out = BTEValues({}, source={"name": path.name, "sha256": _digest(path), "column": column})
    seen: set = set()
    for line, row in enumerate(rows, start=2):
        cif_id, text = (row.get("cif_id") or "").strip(), (row.get(column) or "").strip()
        if not cif_id:
            raise InputError(f"{path}, row {line}: empty cif_id")
        if cif_id in seen:
            raise InputError(f"{path}, row {line}: {cif_id} is listed twice")
        seen.add(cif_id)
        if row.get("potential"):
            out.potentials[cif_id] = row["potential"].strip()
        if not text:
            out.reasons[cif_id] = (row.get("reason") or "").strip() or f"no value in {path.name}"
            continue
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{path}, row {line}: {column} of {cif_id} is {text!r}, not a number") from None
        if not math.isfinite(value) or not _BTE_RANGE[0] <= value <= _BTE_RANGE[1]:
            raise InputError(f"{path}, row {line}: {column} of {cif_id} is {text}, not a log10 κ_L "
                             f"(W m-1 K-1) within {_BTE_RANGE[0]:g} ... {_BTE_RANGE[1]:g}")
        out.values[cif_id] = value
    return out


def folder_bte(bte: str | os.PathLike | None, folder) -> tuple[BTEValues | None, bool]:
    """The BTE values of a run: ``bte`` (``--bte FILE``) when given, else the ``log10_kappa_bte`` column of
    ``folder/compounds.csv`` when the folder has one, else None; and whether they were asked for
    explicitly (``--bte``).

    Raises
    ------
    InputError
        As :func:`read_bte`.
    """
    if bte is not None:
        return read_bte(bte), True
    table = Path(folder) / "compounds.csv" if folder is not None else None
    if table is None or not table.is_file():
        return None, False
    try:
        with open(table, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None, False  # read by whatever reads the table for its own purpose
    return (read_bte(table), False) if BTE_COLUMN in header else (None, False)


def reason_counts(reasons) -> str:
    """``7 dynamically unstable at 0 K, 12 not in refined.csv``: the reasons without a value, counted by
    their kind (the text before the first colon)."""
    kinds = Counter(r.split(":")[0] for r in reasons if r)
    return ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) or "none"
