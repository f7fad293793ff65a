"""A refine run: κ_L from phonons for each crystal of an input, one shard per crystal, resumable.

The crystals (a CIF, a folder of CIFs or a CGCNN data folder, or an archive, as
:func:`cgcnn.crystals.open_input` reads them; optionally only the ``cif_id`` values of a list) go one by
one through :func:`cgcnn.refine.phonons.bte_kappa`.  Each finished crystal is a *shard*,
``<results>.parts/<index>.json`` (written atomically), and ``refined.csv`` is rewritten from the shards
after every crystal, so an interrupted run keeps what it did and ``--resume`` continues it.
``<results>.parts/manifest.json`` records the settings, the package versions and the input;
resuming with any of them changed is refused.  The folder is removed when every crystal is done.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cgcnn import InputError
from cgcnn.crystals import CrystalText, open_input
from cgcnn.outputs import check_output, save_csv, save_text
from cgcnn.refine.rows import COLUMNS, crystal_row, format_row

__all__ = ["ON_ERROR", "RefineSummary", "package_versions", "read_crystals", "read_flagged", "read_ids",
           "refine", "shard_folder"]

#: What ``--on-error`` takes: stop at the first crystal that fails, or record it and go on.
ON_ERROR = ("stop", "skip")
_FORMAT = "cgcnn-kappa refine 1"
_PACKAGES = ("sevenn", "phono3py", "phonopy", "ase", "torch", "numpy", "spglib")


def shard_folder(results: str | os.PathLike) -> Path:
    """The folder of an unfinished run's shards: ``<results>.parts`` beside the results file."""
    results = Path(results)
    return results.with_name(results.name + ".parts")


def package_versions() -> dict:
    """Installed versions of the packages that change κ (None for one that is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def read_crystals(path: str | os.PathLike, only: list[str] | None = None) -> list[CrystalText]:
    """The crystals of a CIF file, a folder or an archive, in input order (their bytes, not parsed).

    Parameters
    ----------
    only : list of str, optional
        Only these ``cif_id`` values, in this order (e.g. the cheapest first).

    Raises
    ------
    InputError
        An input that cannot be read, or an ``only`` id the input does not have.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".cif":
        try:
            crystals = [CrystalText(path.stem, str(path), path.read_bytes())]
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    else:
        crystals = [c for _, chunk in open_input(path).chunks(1) for c in chunk]
    if only is not None:
        missing = sorted(set(only) - {c.cif_id for c in crystals})
        if missing:
            raise InputError(f"{path}: no crystal named {', '.join(missing[:5])}"
                             f"{' ...' if len(missing) > 5 else ''}")
        by_id = {c.cif_id: c for c in crystals}
        crystals = [by_id[cif_id] for cif_id in dict.fromkeys(only)]
    if not crystals:
        raise InputError(f"{path}: no crystals")
    return crystals


def read_ids(path: str) -> list[str]:
    """The ``cif_id`` values listed in ``path``: one a line, or a CSV with a ``cif_id`` column.

    Raises
    ------
    InputError
        An unreadable file, a CSV without ``cif_id``, or no id at all.
    """
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    lines = [row[0] for row in rows]
    if rows and len(rows[0]) > 1:  # a CSV with a header
        if "cif_id" not in rows[0]:
            raise InputError(f"{path}: a CSV list needs a cif_id column")
        col = rows[0].index("cif_id")
        lines = [row[col] for row in rows[1:] if col < len(row)]
    if not lines:
        raise InputError(f"{path}: no cif_id listed")
    return lines


def read_flagged(path: str) -> list[str]:
    """The ``cif_id`` of the rows of a transfer run's ``results.csv`` with ``in_domain`` False.

    Raises
    ------
    InputError
        An unreadable CSV, no ``cif_id`` and ``in_domain`` columns, a flag other than True/False.
    """
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={"cif_id": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as a CSV ({exc})") from None
    if not {"cif_id", "in_domain"} <= set(table.columns):
        raise InputError(f"{path}: no cif_id and in_domain columns (a results.csv of the transfer, --train 0, "
                         "with a last layer that has an applicability domain)")
    flags = table["in_domain"].astype(str).str.strip().str.lower()
    if not flags.isin(["true", "false", ""]).all():
        raise InputError(f"{path}: in_domain must be True or False")
    return table.loc[flags == "false", "cif_id"].tolist()


@dataclass
class RefineSummary:
    """What a run did: crystals in the input, with a value, without one (reason given), seconds spent."""

    crystals: int
    with_value: int
    without_value: int
    seconds: float


def _manifest(settings, crystals: list[CrystalText], threads: int = 1, device: str = "cpu") -> dict:
    import hashlib

    digest = hashlib.sha256()
    for c in crystals:
        digest.update(c.cif_id.encode() + b"\0" + (c.data or b"") + b"\0")
    return {"format": _FORMAT, "settings": settings.record(), "packages": package_versions(),
            "input": {"crystals": [c.cif_id for c in crystals], "sha256": digest.hexdigest()},
            "threads": threads, "device": device}


def _open_work(folder: Path, manifest: dict, resume: bool) -> dict[int, dict]:
    """The finished rows of the work folder (``{index: row}``), after checking it is the same run."""
    if folder.exists() and not resume:
        raise InputError(f"{folder}: an interrupted run's shards; give --resume to continue it "
                         "(or remove the folder to start again)")
    if not folder.exists():
        if resume:
            raise InputError(f"{folder}: nothing to resume (no interrupted run)")
        folder.mkdir()
        save_text(json.dumps(manifest, indent=1), folder / "manifest.json")
        return {}
    try:
        saved = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        raise InputError(f"{folder}: no readable manifest.json; remove the folder to start again") from None
    for key, what in (("format", "another version of this tool"), ("settings", "other settings"),
                      ("packages", "other package versions"), ("input", "another input (or it changed)"),
                      ("threads", "another --threads"), ("device", "another --device")):
        if saved.get(key) != manifest[key]:
            raise InputError(f"{folder}: the interrupted run was made with {what}; --resume continues only "
                             "the same run (remove the folder to start again)")
    rows = {}
    for p in folder.glob("*.json"):
        if p.stem.isdigit():
            rows[int(p.stem)] = json.loads(p.read_text())
    return rows


def _write_table(rows: dict[int, dict], results: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame([rows[i] for i in sorted(rows)], columns=list(COLUMNS))
    save_csv(frame, results, float_format="%.6g")


def refine(crystals: list[CrystalText], results: str | os.PathLike, settings, device: str = "cpu",
           resume: bool = False, on_error: str = "stop", quiet: bool = False, dask: str | None = None,
           calc=None, threads: int = 1) -> RefineSummary:
    """κ_L from phonons for every crystal, into ``results`` (a CSV of :data:`COLUMNS`).

    Parameters
    ----------
    crystals : list of CrystalText
        From :func:`read_crystals`.
    results : path
        ``refined.csv``; rewritten after each crystal; its shards in ``<results>.parts``.
    settings : BTESettings
    device : str
        ``cpu`` or ``cuda`` (the potential's forces; the BTE runs on the CPU cores).
    resume : bool
        Continue the interrupted run of the same settings, packages and input.
    on_error : str
        ``stop``: a crystal that fails stops the run (its shard is not written, so ``--resume`` tries it
        again); ``skip``: it gets a row with ``reason`` ``error: ...`` and no value.
    dask : str, optional
        Address of a ``dask.distributed`` scheduler (or ``local``): crystals run as tasks there.
    threads : int
        Threads of each crystal's computation (torch's, and BLAS/OpenMP through threadpoolctl). κ depends
        on it in the last digits (sums in another order, then a relaxation that stops a step earlier or
        later), so it is recorded and ``--resume`` keeps it; 1 is also the fastest on busy cores.
    calc : ASE calculator, optional
        The potential itself, on this machine (default: ``settings.potential`` loaded by
        :func:`~cgcnn.refine.phonons.load_potential`); ``settings.potential`` should then name it.

    Raises
    ------
    InputError
        Bad output, a work folder of another run, a crystal that fails with ``on_error="stop"``.
    """
    if dask and calc is not None:
        raise InputError("--dask loads the potential on each worker; a calculator object cannot be given")
    if on_error not in ON_ERROR:
        raise InputError(f"--on-error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    results = check_output(results)
    folder = shard_folder(results)
    if threads < 1:
        raise InputError(f"--threads must be at least 1, not {threads}")
    rows = _open_work(folder, _manifest(settings, crystals, threads, device), resume)
    todo = [i for i in range(len(crystals)) if i not in rows]
    start, done_now = time.perf_counter(), 0
    say = (lambda _: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    say(f"refine: {len(crystals)} crystals, {len(rows)} done before, {len(todo)} to do "
        f"({settings.potential}, {settings.method}, {settings.temperature:g} K)")

    def finish(index: int, row: dict) -> None:
        nonlocal done_now
        save_text(json.dumps(row), folder / f"{index:07d}.json")
        rows[index] = row
        _write_table(rows, results)
        done_now += 1
        spent = time.perf_counter() - start
        left = spent / done_now * (len(todo) - done_now)
        kappa = f"κ = {row['kappa_bte']:.4g} W/m-K" if row["kappa_bte"] == row["kappa_bte"] else row["reason"]
        say(f"[{len(rows)}/{len(crystals)}] {row['cif_id']}: {kappa} ({row['seconds']} s; "
            f"{json.dumps(row.get('details', {}))}); about {left / 60:.0f} min left")

    def failed(index: int, exc: BaseException) -> None:
        message = " ".join(str(exc).split()) or type(exc).__name__
        if on_error == "stop":
            raise InputError(f"{crystals[index].source}: {message} (--on-error skip records it and goes on)")
        finish(index, format_row(crystals[index].cif_id, message, settings))

    if dask:
        from cgcnn.refine.cluster import run_on_cluster

        for index, row, exc in run_on_cluster(dask, crystals, todo, settings, device, threads):
            finish(index, row) if exc is None else failed(index, exc)
    else:
        from cgcnn.refine.phonons import load_potential, thread_limits

        with thread_limits(threads):
            if calc is None and todo:
                calc = load_potential(settings.potential, device)
            for index in todo:
                try:
                    row = crystal_row(crystals[index], settings, device, calc)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded per crystal with --on-error skip
                    failed(index, exc)
                else:
                    finish(index, row)
    _write_table(rows, results)
    shutil.rmtree(folder, ignore_errors=True)
    with_value = sum(r["kappa_bte"] == r["kappa_bte"] for r in rows.values())
    return RefineSummary(len(crystals), with_value, len(rows) - with_value, time.perf_counter() - start)
