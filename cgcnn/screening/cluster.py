"""Screening chunks on a ``dask.distributed`` cluster (``--dask``): a ``LocalCluster`` of this
machine's cores, or a scheduler's workers.

The models travel once per worker as bytes (:func:`_dask_spec`); each worker loads them
into a :class:`cgcnn.screening.screener.Screener` of its own, once (:func:`_screener_from_spec`), and
returns each chunk's :class:`cgcnn.screening.screener.Shard`, or the chunk's one-line
:class:`~cgcnn.InputError`, which the client raises.  :func:`_dask_chunks` keeps at most
two chunks per worker thread in flight and yields the shards as they finish, in any order.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from cgcnn import InputError, available_cores
from cgcnn.crystals import CrystalText
from cgcnn.screening.screener import Screener, Shard

_WORKER_SCREENERS: dict = {}


def _dask_screen_chunk(spec: dict, index: int, crystals: list[CrystalText]) -> Shard:
    """A Dask task: the Shard of one chunk, the models loaded once per worker from ``spec``'s bytes."""
    screener = _WORKER_SCREENERS.get(spec["key"])
    if screener is None:
        screener = _screener_from_spec(spec)
        _WORKER_SCREENERS.clear()
        _WORKER_SCREENERS[spec["key"]] = screener
    import torch

    torch.set_num_threads(1)
    try:
        return screener.finish(index, crystals, screener.prepare(crystals))
    except InputError as exc:  # returned, not raised: the client raises it as one line, no worker log
        return exc


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
                    spec["settings"])


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
    return {"key": h.hexdigest(), "files": files, "sources": sources, "props": props,
            "layer": f"layer/{layer_path.name}" if layer_path is not None else None,
            "trust_pickle": trust_pickle, "device": None if device is None else str(device),
            "descriptors": screener.descriptors, "tables": [t.atom_init for t in screener.tables],
            "table_sources": [t.source for t in screener.tables], "settings": screener.settings}


def _dask_client(address: str, log):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--dask needs dask.distributed: pip install \"dask[distributed]\"") from None
    if address == "local":
        cores = available_cores()
        log(f"starting a Dask LocalCluster of {cores} worker process(es), one thread each")
        cluster = LocalCluster(n_workers=cores, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.CRITICAL)
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
                shard = future.result()
                if isinstance(shard, InputError):
                    raise shard
                yield shard
    finally:
        for future in running:
            future.cancel()
