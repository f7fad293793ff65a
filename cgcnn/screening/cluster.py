"""Screening chunks on a ``dask.distributed`` cluster (``--dask``): a ``LocalCluster`` of this
machine's cores, or a scheduler's workers.

The models travel once per worker as bytes (:func:`_dask_spec`); each worker loads them
into a :class:`cgcnn.screening.screener.Screener` of its own, once (:func:`_screener_from_spec`), and
returns each chunk's :class:`cgcnn.screening.screener.Shard`, or the chunk's one-line
:class:`~cgcnn.InputError`, which the client raises.  :func:`_dask_chunks` keeps at most
two chunks per worker thread in flight and yields the shards as they finish, in any order.

Dask's own output never reaches the terminal (:func:`_dask_output_to`): while the client and
cluster live, the log records and warnings of Dask here and everything the worker processes
of a ``LocalCluster`` write are appended to the run's Dask log (``dask.log`` in the work
folder, ``<results>.dask.log`` when the run is done: :func:`dask_log`).  The tool's own
messages (one line per error and warning, the progress line) stay on stderr as without
``--dask``: a chunk's warnings travel back with its Shard and are issued here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from cgcnn import InputError, available_cores
from cgcnn.crystals import CrystalText
from cgcnn.screening.screener import Screener, Shard

_WORKER_SCREENERS: dict = {}
_DASK_LOGGERS = ("distributed", "tornado", "asyncio", "bokeh")  # what Dask and its libraries log to
_WORK_LOG = "dask.log"  # in the work folder while the run lasts


def dask_log(results: str | os.PathLike) -> Path:
    """The Dask log of a screening run with ``--dask``: ``<results>.dask.log`` beside the results file.

    Dask's (scheduler, client, nannies, workers) log records, warnings and anything its worker
    processes print, appended while the run lasts to ``dask.log`` in the work folder
    (:func:`cgcnn.screening.work_folder`, kept there with the shards of an interrupted run), and
    renamed here with the results when the run is done.  A command line names it among its
    outputs (:class:`cgcnn.outputs.OutputSet`), so that it is never one of the run's inputs.
    """
    results = Path(results)
    return results.with_name(results.name + ".dask.log")


def _dask_screen_chunk(spec: dict, index: int, crystals: list[CrystalText]) -> tuple[Shard | InputError, tuple]:
    """A Dask task: the Shard of one chunk, the models loaded once per worker from ``spec``'s bytes,
    and the warnings of its crystals (strings), which the client issues as the tool does without Dask."""
    screener = _WORKER_SCREENERS.get(spec["key"])
    if screener is None:
        screener = _screener_from_spec(spec)
        _WORKER_SCREENERS.clear()
        _WORKER_SCREENERS[spec["key"]] = screener
    from cgcnn.data import single_threaded

    notes: tuple = ()
    try:
        with single_threaded():  # one torch and BLAS thread, as the networks and last layer run elsewhere
            outs = screener.batches(crystals)
            notes = tuple(note for out in outs for crystal_notes in out.notes for note in crystal_notes)
            for out in outs:
                out.notes = [()] * len(out.notes)  # issued by the client, not on the worker's stderr (the Dask log)
            return screener.finish(index, crystals, outs), notes
    except InputError as exc:  # returned, not raised: the client raises it as one line, no worker log
        return exc, notes


def _screener_from_spec(spec: dict) -> Screener:
    """The Screener of ``spec`` (:func:`_dask_spec`): its model files written to a temporary folder,
    loaded, and the folder removed (the models keep their paths for messages only)."""
    from cgcnn.model import SourceModel
    from cgcnn.transfer import LastLayer, load_property_models

    folder = Path(tempfile.mkdtemp(prefix="cgcnn-screen-"))
    try:
        paths = {}
        for name, data in spec["files"].items():
            sub = folder / str(len(paths))
            sub.mkdir()
            (sub / name.split("/", 1)[1]).write_bytes(data)
            paths[name] = sub / name.split("/", 1)[1]
        device = spec["device"]
        kwargs = {"device": device} if device else {}
        layer = LastLayer.load(paths[spec["layer"]], trust_pickle=spec["trust_pickle"]) if spec["layer"] else None
        sources = [SourceModel.load(paths[k], require_regression=layer is not None, **kwargs)
                   for k in spec["sources"]]
        props = load_property_models([paths[k] for k in spec["props"]], device=device) if spec["props"] else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # everything is in memory now
    return Screener(sources, props, spec["descriptors"], layer, spec["tables"], spec["table_sources"],
                    spec["settings"], bte=spec.get("bte"))


def _dask_spec(screener: Screener, layer_path: Path, trust_pickle: bool, device) -> dict:
    files = {}
    sources, props = [], []
    for i, model in enumerate(screener.models):
        key = f"{i}/{model.path.name}"
        files[key] = model.path.read_bytes()
        (sources if i < len(screener.sources) else props).append(key)
    if layer_path is not None:
        files[f"layer/{layer_path.name}"] = layer_path.read_bytes()
    h = hashlib.sha256()
    for k in sorted(files):
        h.update(k.encode() + hashlib.sha256(files[k]).digest())
    if screener.bte is not None:  # a worker's Screener holds the values of its run
        h.update(b"bte:" + screener.bte.source.get("sha256", "").encode())
    return {"key": h.hexdigest(), "files": files, "sources": sources, "props": props,
            "layer": f"layer/{layer_path.name}" if layer_path is not None else None,
            "trust_pickle": trust_pickle, "device": None if device is None else str(device),
            "descriptors": screener.descriptors, "tables": [t.atom_init for t in screener.tables],
            "table_sources": [t.source for t in screener.tables], "settings": screener.settings,
            "bte": screener.bte}


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("--dask needs dask.distributed: pip install \"dask[distributed]\"") from None
    return distributed


@contextlib.contextmanager
def _dask_session(address: str, log, log_path: Path):
    """The Dask client of a run (and its ``LocalCluster`` with ``address="local"``), closed after the
    block; meanwhile Dask's output is appended to ``log_path`` (:func:`_dask_output_to`)."""
    with _dask_output_to(log_path, address):
        client, cluster = _dask_client(address, log)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close()
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.close()


@contextlib.contextmanager
def _dask_output_to(path: Path, address: str):
    """Within the block, Dask's output goes to the end of the file ``path``, not to the terminal.

    - This process's file descriptors 1 and 2 (stdout, stderr) point to ``path``, so that the worker
      processes a ``LocalCluster`` starts meanwhile (restarted ones too) write there from their
      first line: their log records, warnings, anything their libraries print.  ``sys.stdout`` and
      ``sys.stderr`` are, meanwhile, new streams on copies of the former descriptors: the tool's
      own messages (progress, one-line warnings and errors) reach the terminal as without Dask.
    - The loggers of Dask and its libraries here (``distributed``, ``tornado``, ``asyncio``,
      ``bokeh``) write to ``path``, at the levels Dask's configuration sets (nothing is silenced).
    - Warnings raised by Dask's threads or in its packages are written to ``path``; the tool's own,
      raised in the main thread, are left as they are.

    Everything is restored after the block, whatever ends it.  Each run first writes a line naming the
    time, the process and ``--dask ADDRESS``, so that the runs of a resumed screening are told apart.

    Raises
    ------
    InputError
        ``dask.distributed`` is not installed, or ``path`` cannot be written.
    """
    distributed = _import_distributed()  # its import sets up its loggers' handlers: replaced below
    import dask
    import tornado

    try:
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write the Dask log ({exc.strerror})") from None
    handler.setFormatter(logging.Formatter(dask.config.get("distributed.admin.log-format")))
    handler.handle(logging.makeLogRecord({
        "name": "cgcnn", "levelno": logging.INFO, "levelname": "INFO",
        "msg": f"--dask {address}: {time.strftime('%Y-%m-%d %H:%M:%S')}, process {os.getpid()}"}))
    saved = []
    for name in _DASK_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers[:] = [handler]
        logger.propagate = False
    packages = tuple(os.path.dirname(m.__file__) + os.sep for m in (dask, distributed, tornado))
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if file is None and (threading.current_thread() is not threading.main_thread()
                             or str(filename).startswith(packages)):
            handler.handle(logging.makeLogRecord({
                "name": "py.warnings", "levelno": logging.WARNING, "levelname": "WARNING",
                "msg": f"{filename}:{lineno}: {category.__name__}: {message}"}))
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    try:
        with _descriptors_to(handler.stream.fileno()):
            yield
    finally:
        warnings.showwarning = shown
        for logger, handlers, propagate in saved:
            logger.handlers[:] = handlers
            logger.propagate = propagate
        handler.close()


@contextlib.contextmanager
def _descriptors_to(fd: int):
    """Within the block, file descriptors 1 and 2 are copies of ``fd`` (what child processes inherit and
    C libraries write to); ``sys.stdout`` and ``sys.stderr``, where they wrote to 1 and 2, are replaced by
    line-buffered streams on copies of the former descriptors.  Restored after the block."""
    streams = []
    for number, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        with contextlib.suppress(Exception):
            stream.flush()
        try:
            own = stream.fileno() == number
        except (AttributeError, OSError, ValueError):  # not a file (e.g. captured by pytest)
            own = False
        former = os.dup(number)
        replacement = None
        if own:
            replacement = open(os.dup(former), "w", buffering=1, encoding=stream.encoding,
                               errors=stream.errors)
            setattr(sys, name, replacement)
        streams.append((number, name, stream, former, replacement))
        os.dup2(fd, number)
    try:
        yield
    finally:
        for number, name, stream, former, replacement in reversed(streams):
            if replacement is not None:
                with contextlib.suppress(Exception):
                    replacement.flush()
                setattr(sys, name, stream)
                replacement.close()
            os.dup2(former, number)
            os.close(former)


def _dask_client(address: str, log):
    """``(client, cluster)``: a LocalCluster of this machine's cores and its client (``address="local"``),
    or ``(client, None)`` of the scheduler at ``address``."""
    from dask.distributed import Client, LocalCluster

    if address == "local":
        cores = available_cores()
        log(f"starting a Dask LocalCluster of {cores} worker process(es), one thread each")
        cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=False)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=30), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--dask {address}: cannot reach a Dask scheduler there ({exc})") from None


def _dask_chunks(client, chunks, spec: dict):
    """Yield each chunk's Shard as the cluster finishes it (any order), at most two per worker thread
    in flight."""
    from dask.distributed import wait

    running: set = set()
    try:
        threads = max(1, sum(client.nthreads().values()))
        spec_future = client.scatter(spec, broadcast=True, hash=False)
        exhausted = False
        while running or not exhausted:
            while not exhausted and len(running) < 2 * threads:
                item = next(chunks, None)
                if item is None:
                    exhausted = True
                    break
                running.add(client.submit(_dask_screen_chunk, spec_future, item[0], item[1], pure=False))
            if not running:
                break
            done, running = wait(running, return_when="FIRST_COMPLETED")
            running = set(running)
            for future in done:
                shard, notes = future.result()
                for note in notes:
                    warnings.warn(note, UserWarning, stacklevel=2)
                if isinstance(shard, InputError):
                    raise shard
                yield shard
    finally:
        for future in running:
            future.cancel()
