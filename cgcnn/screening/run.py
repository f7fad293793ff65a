"""Screening a structure database with a fitted last layer: streaming, in bounded memory,
resumable, on one machine or on a ``dask.distributed`` cluster.

The crystals of the input (:mod:`cgcnn.crystals.archive`: a folder or an archive of structure files) are
cut into chunks of ``chunk_size`` crystals, a multiple of ``batch_size``.  Each chunk is
screened on its own: graphs built (by a pool of processes, or inside a Dask worker), the
source and property networks run batch by batch, descriptors and the last layer
(:class:`cgcnn.transfer.lastlayer.LastLayer`) applied.  Its rows go to a *shard*, four files in the
work folder ``<results>.parts/`` renamed into place one after the other, the ``.json``
last (a chunk is done when its ``.json`` exists).  Memory holds a chunk or two, whatever
the number of crystals.  At the end the shards are concatenated, in input order, into
``results.csv``, ``test_results.csv`` and (with ``on_error="skip"``) ``skipped.csv``, all
renamed together (:class:`cgcnn.outputs.files.OutputSet`), and the work folder is removed.

Results do not depend on the chunking, the resumption or the machines: a chunk starts at
a multiple of ``batch_size``, so every network sees the batches it sees on the whole
folder (:func:`cgcnn.transfer.compute_features`), and the CSV files are byte for byte
those of one pass.

Interrupted (SIGTERM, SIGKILL, a crash), a run leaves its shards; run again with
``resume=True`` it screens only the chunks without a shard.  The work folder's
``manifest.json`` records the source models, property models, last layer, input and
options; resuming with any of them changed is refused.  A bad input (one line,
:class:`~cgcnn.InputError`) without ``on_error="skip"`` removes the work folder: nothing
is written, as before streaming.  A shard or a final file that cannot be written (a full
disk, a file-size limit) keeps the finished shards: the one-line error says that ``resume``
continues.

Where things live: the models applied to a chunk and the settings, :mod:`cgcnn.screening.screener`; a
chunk's graphs built anywhere, :mod:`cgcnn.screening.chunk`; the work folder and its manifest,
:mod:`cgcnn.screening.workfolder`; Dask, :mod:`cgcnn.screening.cluster`; here, the run (:func:`screen`), the
chunks screened on this machine and the progress line.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cgcnn import InputError, available_cores
from cgcnn.crystals import CrystalInput
from cgcnn.data import run_tasks, start_pool
from cgcnn.outputs import file_sha256, save_text
from cgcnn.screening.chunk import atom_tables, make_batch
from cgcnn.screening.cluster import _WORK_LOG, _dask_chunks, _dask_session, _dask_spec, dask_log
from cgcnn.screening.screener import (
    ON_ERROR,
    RESULT_COLUMNS,
    SKIPPED_COLUMNS,
    TEST_COLUMNS,
    Screener,
    ScreenSettings,
    Shard,
    _csv_header,
)
from cgcnn.screening.workfolder import ShardWriteError, _check_manifest, _manifest, _Work, is_parquet, work_folder

__all__ = ["ON_ERROR", "local_shards", "ScreenSettings", "Screener", "Shard", "ScreenSummary", "atom_tables", "screen",
           "work_folder", "dask_log",
           "RESULT_COLUMNS", "TEST_COLUMNS", "SKIPPED_COLUMNS"]


# --------------------------------------------------------------------------------------------------
# progress


class _Progress:
    def __init__(self, total: int, already: int, show: bool):
        self.total, self.done, self.show = total, already, show
        self.start_done, self.t0 = already, time.monotonic()
        self.skipped = 0
        self.last = 0.0

    def update(self, n: int, skipped: int) -> None:
        self.done += n
        self.skipped += skipped
        now = time.monotonic()
        if not self.show or (now - self.last < 2 and self.done < self.total):
            return
        self.last = now
        elapsed = now - self.t0
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else float("nan")
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        skip = f", {self.skipped} skipped" if self.skipped else ""
        print(f"screened {self.done:,} of {self.total:,} crystals ({self.done / max(self.total, 1):.0%}), "
              f"{rate:.1f} crystals/s, {_duration(left)} left{skip}", file=sys.stderr, flush=True)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.t0
        return (self.done - self.start_done) / elapsed if elapsed > 0 else float("nan")


def _copy(path: Path, f) -> None:
    with open(path, "rb") as src:
        shutil.copyfileobj(src, f)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "? "
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# --------------------------------------------------------------------------------------------------
# running the chunks


def _pool_workers(settings: ScreenSettings) -> int:
    return available_cores() if settings.workers is None else settings.workers


def local_shards(screener: Screener, chunks, settings: ScreenSettings):
    """Yield each chunk's Shard (:meth:`Screener.finish`), in order, for ``chunks``, an iterator of
    ``(index, list of CrystalText)``.  Each block of a batch (:meth:`Screener.blocks`) is one task of a pool of
    ``settings.workers`` processes (:mod:`cgcnn.data.pool`; none: all here): its graphs, descriptors and, on a
    CPU, networks (:class:`cgcnn.screening.chunk.BatchMaker`); this process runs the last layer on each chunk.
    Chunks are submitted ahead, two blocks per process at least, so that no process waits."""
    workers = _pool_workers(settings)
    if workers < 1:
        for index, crystals in chunks:
            yield screener.finish(index, crystals, screener.batches(crystals))
        return
    pool = start_pool(workers, screener.maker)
    pending: deque = deque()
    queued = 0  # batches submitted and not yet given to the last layer

    def submit() -> bool:
        nonlocal queued
        item = next(chunks, None)
        if item is None:
            return False
        index, crystals = item
        futures = [pool.submit(run_tasks, make_batch, [crystals[i:j]]) for i, j in screener.blocks(len(crystals))]
        pending.append((index, crystals, futures))
        queued += len(futures)
        return True

    try:
        while len(pending) < 2 or queued < 2 * workers:
            if not submit():
                break
        while pending:
            index, crystals, futures = pending.popleft()
            outs = [f.result()[0] for f in futures]
            queued -= len(futures)
            while len(pending) < 2 or queued < 2 * workers:
                if not submit():
                    break
            yield screener.finish(index, crystals, outs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class ScreenSummary:
    """What a finished run reports: crystals predicted and skipped, the figures of the
    printed summary, and the throughput of this run (crystals/s, resumed chunks excluded); with a
    last layer with a BTE model, ``routes``: crystals predicted by each (``bte``, ``plain``)."""

    n: int
    skipped: int
    level: float
    out_of_domain: int
    with_interval: int
    n_targets: int
    mae: float
    r2: float
    coverage: float
    rate: float
    resumed: int
    routes: dict = field(default_factory=dict)


def screen(screener: Screener, data: CrystalInput, outputs, results: Path, test_results: Path | None,
           skipped_csv: Path | None, layer_path: Path | None, trust_pickle: bool = False, device=None,
           log: Callable[[str], None] = lambda msg: None) -> ScreenSummary:
    """Screen every crystal of ``data``; write ``results``, ``test_results`` and ``skipped_csv``.

    Parameters
    ----------
    screener : Screener
    data : CrystalInput
    outputs : cgcnn.outputs.files.OutputSet
        Holding ``results``, ``test_results`` and ``skipped_csv`` (checked before any work), and
        with ``settings.dask`` the Dask log :func:`dask_log` ``(results)``.
    results, test_results : Path
        The CSV files (columns :data:`RESULT_COLUMNS`, :data:`TEST_COLUMNS`); without a last
        layer, ``results`` has the columns :data:`TEST_COLUMNS` and ``test_results`` is None.
    skipped_csv : Path or None
        ``cif_id,reason`` of the crystals left out (``on_error="skip"``; None otherwise).
    layer_path : Path or None
        The last layer's file (None without one) (its SHA-256 goes into the manifest; Dask workers load it).
    trust_pickle, device
        As the last layer and source models were loaded (for Dask workers).
    log : callable
        Gets one-line messages (resumption, Dask).  Dask's own output goes to the Dask log
        (:func:`cgcnn.screening.cluster.dask_log`), never to stderr.

    Returns
    -------
    ScreenSummary

    Raises
    ------
    InputError
        A crystal that cannot be screened (``on_error="stop"``), a work folder of another run
        (or one left by an interrupted run without ``resume``), an unreachable scheduler.
    KeyboardInterrupt
        On Ctrl-C, with a message on how to resume; SIGTERM raises ``SystemExit(143)``.
        Shards already written are kept in both cases.
    """
    settings = screener.settings
    settings.check()
    chunk = settings.chunk
    n_chunks = -(-len(data) // chunk)
    folder = work_folder(results)
    manifest = _manifest(screener, data, settings, file_sha256(layer_path) if layer_path is not None else None)
    parts = {"results": results, "test": test_results, "skipped": skipped_csv}
    work = _Work(folder, frozenset(part for part, path in parts.items() if is_parquet(path)))
    manifest["options"]["Parquet outputs"] = sorted(work.parquet)  # the shards' format
    headers = {"results": _csv_header(screener.columns), "test": _csv_header(TEST_COLUMNS),
               "skipped": _csv_header(SKIPPED_COLUMNS)}
    done: set[int] = set()
    if folder.exists():
        if not settings.resume:
            raise InputError(f"{folder}: left by an interrupted run; add --resume to continue it, or remove the "
                             "folder to start again")
        try:
            saved = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            raise InputError(f"{folder}: no readable manifest.json; not the work folder of a run of this tool "
                             "(remove it to start again)") from None
        _check_manifest(folder, saved, manifest)
        done = {i for i in work.done() if i < n_chunks}
        log(f"resuming: {len(done)} of {n_chunks} chunks already done in {folder}")
    else:
        if settings.resume:
            log(f"nothing to resume ({folder} does not exist); starting")
        try:
            folder.mkdir(parents=True)
        except OSError as exc:
            raise InputError(f"{folder}: cannot make the work folder ({exc.strerror})") from None
        try:
            save_text(json.dumps(manifest, indent=1), folder / "manifest.json")
        except InputError:
            shutil.rmtree(folder, ignore_errors=True)  # nothing done yet
            raise

    session = contextlib.ExitStack()
    client = None
    if settings.dask:
        client = session.enter_context(_dask_session(settings.dask, log, folder / _WORK_LOG))
    already = sum(min(chunk, len(data) - i * chunk) for i in done)
    progress = _Progress(len(data), already, settings.progress)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def terminate(signum, frame):
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, terminate)
    kept = f"the finished chunks are kept in {folder}"
    if settings.dask:
        kept += f" (Dask's log: {folder / _WORK_LOG})"
    kept += ": run the same command with --resume to continue"
    shards = None
    try:
        chunks = data.chunks(chunk, done)
        if client is not None:
            shards = _dask_chunks(client, chunks, _dask_spec(screener, layer_path, trust_pickle, device))
        else:
            shards = local_shards(screener, chunks, settings)
        for shard in shards:
            work.write(shard, headers)
            progress.update(shard.stats["n"] + shard.stats["skipped"], shard.stats["skipped"])
    except ShardWriteError as exc:  # not the input's fault: what is done stays done
        raise InputError(f"{exc}; {kept}") from None
    except InputError:
        shutil.rmtree(folder, ignore_errors=True)  # a bad input: nothing written, nothing to resume
        raise
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; {kept}") from None
    except BaseException:
        print(f"stopped; {kept}", file=sys.stderr)
        raise
    finally:
        if shards is not None:
            shards.close()  # stops the pool or cancels the cluster's tasks at once
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        session.close()  # the client and cluster, then Dask's output back where it was

    totals: dict = {}
    for index in range(n_chunks):
        for key, value in work.stats(index).items():
            totals[key] = value if key == "level" else totals.get(key, 0) + value
    try:
        with outputs:
            outputs.save(results, None, saver=work.writer("results", headers["results"], n_chunks))
            if test_results is not None:
                outputs.save(test_results, None, saver=work.writer("test", headers["test"], n_chunks))
            if skipped_csv is not None:
                outputs.save(skipped_csv, None, saver=work.writer("skipped", headers["skipped"], n_chunks))
            if settings.dask:
                outputs.save(dask_log(results), None, saver=lambda _, f: _copy(folder / _WORK_LOG, f))
    except InputError as exc:  # every chunk is done: --resume only gathers them
        raise InputError(f"{exc}; {kept}") from None
    shutil.rmtree(folder, ignore_errors=True)
    n_t = totals.get("n_targets", 0)
    mae = totals["abs_err"] / n_t if n_t else math.nan
    ss_tot = totals["sum_y2"] - totals["sum_y"] ** 2 / n_t if n_t and "sum_y2" in totals else math.nan
    r2 = 1 - totals["sq_err"] / ss_tot if n_t > 1 and ss_tot > 0 else math.nan
    return ScreenSummary(
        n=totals.get("n", 0), skipped=totals.get("skipped", 0), level=totals.get("level", math.nan),
        out_of_domain=totals.get("out_of_domain", 0), with_interval=totals.get("with_interval", 0), n_targets=n_t,
        mae=mae, r2=r2, coverage=totals.get("inside", 0) / n_t if n_t else math.nan, rate=progress.rate,
        resumed=len(done), routes={k[6:]: v for k, v in totals.items() if k.startswith("route_")})
