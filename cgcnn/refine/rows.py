"""One crystal's row of ``refined.csv``: its columns, and the row computed from the crystal's CIF."""

from __future__ import annotations

import math

from cgcnn import InputError
from cgcnn.crystals import CrystalText, read_structure_text

__all__ = ["COLUMNS", "crystal_row", "format_row"]

#: Columns of ``refined.csv``, in order.
COLUMNS = ("cif_id", "kappa_bte", "log10_kappa_bte", "converged", "reason", "potential", "supercell",
           "cutoff", "mesh", "seconds")


def format_row(cif_id: str, value, settings) -> dict:
    """One row of ``refined.csv`` from a :class:`~cgcnn.refine.phonons.BTEValue` (or an error: ``value``
    is then the message, a str); the value's ``details`` (stage times, counts) ride along under
    ``details``, kept in the shard and the progress line, not in the CSV."""
    row = {"cif_id": cif_id, "kappa_bte": math.nan, "log10_kappa_bte": math.nan, "converged": False,
           "reason": "", "potential": settings.potential, "supercell": "", "cutoff": settings.cutoff,
           "mesh": "x".join(map(str, settings.mesh)), "seconds": math.nan}
    if isinstance(value, str):
        row["reason"] = "error: " + value
        return row
    row.update(converged=value.converged, reason=value.reason, seconds=round(value.seconds, 1),
               supercell="x".join(map(str, value.supercell)), details=value.details)
    if value.kappa is not None:
        row.update(kappa_bte=value.kappa, log10_kappa_bte=math.log10(value.kappa))
    return row


def crystal_row(crystal: CrystalText, settings, device: str, calc=None):
    """The row of one crystal (:func:`format_row`) from its file's bytes (or its structure), computed by
    :func:`~cgcnn.refine.phonons.bte_kappa`; an :class:`InputError` (a CIF that cannot be read) or a failure of
    the computation propagates."""
    from cgcnn.refine.phonons import bte_kappa

    if crystal.error:
        raise InputError(crystal.error)
    structure = crystal.structure  # an extxyz frame, read with its file
    if structure is None:
        structure = read_structure_text(crystal.data, crystal.source, fmt=crystal.fmt)
    return format_row(crystal.cif_id, bte_kappa(structure, settings, calc=calc, device=device), settings)
