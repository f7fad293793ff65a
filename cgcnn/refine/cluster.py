"""The crystals of a refine run as tasks on a ``dask.distributed`` cluster (``--dask``): a ``LocalCluster``
of this machine's cores (``--dask local``), or a scheduler's workers.

One task per crystal; each worker loads the potential once (:data:`_WORKER_CALCS`) and returns the
crystal's row, or the exception it raised, which the client records or raises as ``--on-error`` says.
The shards are written by the client as the tasks finish, in any order.
"""

from __future__ import annotations

import logging

from cgcnn import InputError, available_cores
from cgcnn.crystals import CrystalText

__all__ = ["run_on_cluster"]

_WORKER_CALCS: dict = {}


def _task(crystal: CrystalText, settings, device: str, threads: int):
    """A Dask task: ``(row, None)`` or ``(None, exception)`` for one crystal."""
    from cgcnn.refine.phonons import load_potential, thread_limits
    from cgcnn.refine.rows import crystal_row

    with thread_limits(threads):
        key = (settings.potential, device)
        if key not in _WORKER_CALCS:
            _WORKER_CALCS.clear()
            _WORKER_CALCS[key] = load_potential(settings.potential, device)
        try:
            return crystal_row(crystal, settings, device, _WORKER_CALCS[key]), None
        except Exception as exc:  # noqa: BLE001 - the client decides (--on-error)
            return None, exc


def _client(address: str):
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--dask needs dask.distributed: pip install \"dask[distributed]\"") from None
    if address == "local":
        cluster = LocalCluster(n_workers=available_cores(), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.CRITICAL)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=30), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--dask {address}: cannot reach a Dask scheduler there ({exc})") from None


def run_on_cluster(address: str, crystals: list[CrystalText], todo: list[int], settings, device: str,
                   threads: int = 1):
    """Yield ``(index, row, exception)`` for each crystal of ``todo`` as the cluster finishes it.

    Raises
    ------
    InputError
        A scheduler that cannot be reached, or dask.distributed not installed.
    """
    from dask.distributed import as_completed

    client, cluster = _client(address)
    futures = {}
    try:
        for index in todo:
            futures[client.submit(_task, crystals[index], settings, device, threads, pure=False)] = index
        for future in as_completed(futures):
            row, exc = future.result()
            yield futures[future], row, exc
    finally:
        for future in futures:
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()
