"""Screening a structure database with a fitted last layer: streaming, in bounded memory,
resumable, on one machine or on a ``dask.distributed`` cluster.

The crystals of the input (:mod:`cgcnn.archive`: a folder or an archive of CIFs) are
cut into chunks of ``chunk_size`` crystals, a multiple of ``batch_size``.  Each chunk is
screened on its own: graphs built (by a pool of processes, or inside a Dask worker), the
source and property networks run batch by batch, descriptors and the last layer
(:class:`cgcnn.lastlayer.LastLayer`) applied.  Its rows go to a *shard*, four files in the
work folder ``<results>.parts/`` renamed into place one after the other, the ``.json``
last (a chunk is done when its ``.json`` exists).  Memory holds a chunk or two, whatever
the number of crystals.  At the end the shards are concatenated, in input order, into
``results.csv``, ``test_results.csv`` and (with ``on_error="skip"``) ``skipped.csv``, all
renamed together (:class:`cgcnn.files.OutputSet`), and the work folder is removed.

Results do not depend on the chunking, the resumption or the machines: a chunk starts at
a multiple of ``batch_size``, so every network sees the batches it sees on the whole
folder (:func:`cgcnn.transfer.compute_features`), and the CSV files are byte for byte
those of one pass.

Interrupted (SIGTERM, SIGKILL, a crash), a run leaves its shards; run again with
``resume=True`` it screens only the chunks without a shard.  The work folder's
``manifest.json`` records the source models, property models, last layer, input and
options; resuming with any of them changed is refused.  A bad input (one line,
:class:`~cgcnn.InputError`) without ``on_error="skip"`` removes the work folder: nothing
is written, as before streaming.

Where things live: the models applied to a chunk and the settings, :mod:`cgcnn.screener`; a
chunk's graphs built anywhere, :mod:`cgcnn.chunk`; the work folder and its manifest,
:mod:`cgcnn.workfolder`; Dask, :mod:`cgcnn.cluster`; here, the run (:func:`screen`), the
chunks screened on this machine and the progress line.  The public names of those modules
stay importable from here.
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
from dataclasses import dataclass
from pathlib import Path

from cgcnn import InputError, available_cores
from cgcnn.archive import CrystalInput
from cgcnn.chunk import _pool_prepare, _pool_start
from cgcnn.cluster import _dask_chunks, _dask_client, _dask_spec
from cgcnn.files import file_sha256, save_text
from cgcnn.screener import (
    ON_ERROR,
    RESULT_COLUMNS,
    SKIPPED_COLUMNS,
    TEST_COLUMNS,
    Screener,
    ScreenSettings,
    Shard,
    _csv_header,
    atom_tables,
)
from cgcnn.workfolder import _check_manifest, _manifest, _Work, work_folder

__all__ = ["ON_ERROR", "EarlyChunks", "ScreenSettings", "Screener", "Shard", "ScreenSummary", "atom_tables", "screen",
           "work_folder",
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


def _start_pool(workers: int, spec):
    """A pool of ``workers`` graph-building processes (forked where the platform allows)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    if method == "fork":
        _preload_reader()  # imported once here, not once in each worker
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_pool_start,
                               initargs=(spec,))


class _Submitted:
    """A pool and the chunks submitted to it, in order, two ahead of the chunk being finished."""

    def __init__(self, pool, spec, chunks, settings: ScreenSettings, workers: int):
        self.pool, self.spec, self.chunks = pool, spec, chunks
        self.task = max(1, min(32, settings.chunk // (4 * workers)))
        self.pending: deque = deque()
        self.exhausted = False  # every chunk submitted

    def idle(self) -> bool:
        """No chunk left to submit and every submitted graph built: the pool holds no core."""
        return self.exhausted and all(f.done() for _, _, futures in self.pending for f in futures)

    def submit(self) -> None:
        item = next(self.chunks, None)
        self.exhausted = item is None
        if item is not None:
            index, crystals = item
            self.pending.append((index, crystals, [self.pool.submit(_pool_prepare, crystals[i:i + self.task])
                                                   for i in range(0, len(crystals), self.task)]))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class EarlyChunks:
    """The graphs of a run's first chunks, building while the rest of the start-up goes on.

    ``--train 0`` forks the pool and submits the first two chunks as soon as the graph
    parameters and descriptor level are known (before torch and scikit-learn are imported and
    the last layer loaded); :func:`screen` takes them over if its screener needs the same graphs
    (``spec`` equal to :attr:`Screener.prep`) and the run starts from the first chunk, and
    otherwise closes the pool and starts afresh.  Either way the results are the same.
    """

    def __init__(self, spec, data: CrystalInput, settings: ScreenSettings):
        workers = _pool_workers(settings)
        if workers < 1:
            raise ValueError("no graph-building processes")
        self.data, self.settings = data, settings
        self.submitted = _Submitted(_start_pool(workers, spec), spec, data.chunks(settings.chunk, set()), settings,
                                    workers)
        self.used = False
        try:
            for _ in range(2):
                self.submitted.submit()
        except BaseException:
            self.close()
            raise

    def take(self, screener: Screener, done: set) -> _Submitted | None:
        """The submitted chunks, if ``screener`` needs these graphs from the first chunk on; else
        None (and the pool is closed)."""
        if not self.used and not done and self.submitted.spec == screener.prep \
                and _pool_workers(screener.settings) == _pool_workers(self.settings) \
                and screener.settings.chunk == self.settings.chunk:
            self.used = True
            return self.submitted
        self.close()
        return None

    def close(self) -> None:
        if not self.used:
            self.used = True
            self.submitted.close()


def _local_chunks(screener: Screener, chunks, settings: ScreenSettings, submitted: _Submitted | None = None):
    """Yield each chunk's Shard, in order; graphs built by a pool of processes one chunk ahead
    (``submitted``: a pool with the first chunks already submitted, :class:`EarlyChunks`)."""
    workers = _pool_workers(settings)
    if submitted is None and workers < 1:
        for index, crystals in chunks:
            yield screener.finish(index, crystals, screener.prepare(crystals))
        return
    if submitted is None:
        submitted = _Submitted(_start_pool(workers, screener.prep), screener.prep, chunks, settings, workers)
    pending = submitted.pending
    try:
        while len(pending) < 2:
            before = len(pending)
            submitted.submit()
            if len(pending) == before:
                break
        while pending:
            index, crystals, futures = pending.popleft()
            prepared = [p for f in futures for p in f.result()]
            submitted.submit()
            if pending and not submitted.idle():
                yield screener.finish(index, crystals, prepared)
            else:  # no graph left to build: the network gets the pool's cores too
                from cgcnn.source import all_network_threads

                with all_network_threads():
                    shard = screener.finish(index, crystals, prepared)
                yield shard
    finally:
        submitted.close()


def _preload_reader() -> None:
    """Import what reading a CIF and building its graph needs (gemmi, pymatgen), before the pool forks."""
    import pymatgen.core.structure  # noqa: F401
    import pymatgen.optimization.neighbors  # noqa: F401

    import cgcnn.cif  # noqa: F401
    import cgcnn.data  # noqa: F401


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class ScreenSummary:
    """What a finished run reports: crystals predicted and skipped, the figures of the
    printed summary, and the throughput of this run (crystals/s, resumed chunks excluded)."""

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


def screen(screener: Screener, data: CrystalInput, outputs, results: Path, test_results: Path | None,
           skipped_csv: Path | None, layer_path: Path | None, trust_pickle: bool = False, device=None,
           log: Callable[[str], None] = lambda msg: None, early: EarlyChunks | None = None) -> ScreenSummary:
    """Screen every crystal of ``data``; write ``results``, ``test_results`` and ``skipped_csv``.

    Parameters
    ----------
    screener : Screener
    data : CrystalInput
    outputs : cgcnn.files.OutputSet
        Holding ``results``, ``test_results`` and ``skipped_csv`` (checked before any work).
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
        Gets one-line messages (resumption, Dask).
    early : EarlyChunks, optional
        The first chunks' graphs, already building (taken over when they fit this run; closed
        in any case).

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
    try:
        return _screen(screener, data, outputs, results, test_results, skipped_csv, layer_path, trust_pickle,
                       device, log, early)
    finally:
        if early is not None:
            early.close()


def _screen(screener: Screener, data: CrystalInput, outputs, results: Path, test_results: Path | None,
            skipped_csv: Path | None, layer_path: Path | None, trust_pickle: bool, device,
            log: Callable[[str], None], early: EarlyChunks | None) -> ScreenSummary:
    settings = screener.settings
    settings.check()
    chunk = settings.chunk
    n_chunks = -(-len(data) // chunk)
    folder = work_folder(results)
    manifest = _manifest(screener, data, settings, file_sha256(layer_path) if layer_path is not None else None)
    work = _Work(folder)
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
        save_text(json.dumps(manifest, indent=1), folder / "manifest.json")

    client = cluster = None
    if settings.dask:
        client, cluster = _dask_client(settings.dask, log)
    already = sum(min(chunk, len(data) - i * chunk) for i in done)
    progress = _Progress(len(data), already, settings.progress)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def terminate(signum, frame):
            raise SystemExit(128 + signum)

        previous = signal.signal(signal.SIGTERM, terminate)
    kept = f"the finished chunks are kept in {folder}: run the same command with --resume to continue"
    shards = None
    try:
        chunks = data.chunks(chunk, done)
        if client is not None:
            shards = _dask_chunks(client, chunks, _dask_spec(screener, layer_path, trust_pickle, device))
        else:
            submitted = early.take(screener, done) if early is not None and early.data is data else None
            shards = _local_chunks(screener, chunks, settings, submitted)
        for shard in shards:
            work.write(shard)
            progress.update(shard.stats["n"] + shard.stats["skipped"], shard.stats["skipped"])
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
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()

    totals: dict = {}
    for index in range(n_chunks):
        for key, value in work.stats(index).items():
            totals[key] = value if key == "level" else totals.get(key, 0) + value
    with outputs:
        outputs.save(results, None, saver=work.writer("results", _csv_header(screener.columns), n_chunks))
        if test_results is not None:
            outputs.save(test_results, None, saver=work.writer("test", _csv_header(TEST_COLUMNS), n_chunks))
        if skipped_csv is not None:
            outputs.save(skipped_csv, None, saver=work.writer("skipped", _csv_header(SKIPPED_COLUMNS), n_chunks))
    shutil.rmtree(folder, ignore_errors=True)
    n_t = totals.get("n_targets", 0)
    mae = totals["abs_err"] / n_t if n_t else math.nan
    ss_tot = totals["sum_y2"] - totals["sum_y"] ** 2 / n_t if n_t and "sum_y2" in totals else math.nan
    r2 = 1 - totals["sq_err"] / ss_tot if n_t > 1 and ss_tot > 0 else math.nan
    return ScreenSummary(
        n=totals.get("n", 0), skipped=totals.get("skipped", 0), level=totals.get("level", math.nan),
        out_of_domain=totals.get("out_of_domain", 0), with_interval=totals.get("with_interval", 0), n_targets=n_t,
        mae=mae, r2=r2, coverage=totals.get("inside", 0) / n_t if n_t else math.nan, rate=progress.rate,
        resumed=len(done))
