"""The process pool, one for every path: a data folder's graphs (:func:`cgcnn.data.build_graphs`),
a screening run's batches (:mod:`cgcnn.screening`) and the last layer's cross-validation fits
(:mod:`cgcnn.transfer`).

Each worker process keeps one object of the run (``state``: a dataset, the screening run's
batch maker, the training data of a fit) and applies a function to it and to each item of a task
(:func:`run_tasks`).  The processes start by ``fork`` where the platform has it (cheap:
nothing is pickled but the tasks and their results), ``spawn`` elsewhere.

Threads: every pool process runs one torch thread; a parent that starts its pool inside
:func:`single_threaded` (the last layer's fits) gives its processes one BLAS and OpenMP thread too
(threadpoolctl), so that the cores are used by processes, never by threads competing with them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["start_pool", "run_tasks", "single_threaded"]

_STATE: Any = None  # the run's object, in a pool process


@contextlib.contextmanager
def single_threaded():
    """Within the block, this process runs one thread of torch (where loaded) and of the BLAS and
    OpenMP libraries (threadpoolctl); both restored on exit.  For the parent of a pool, whose
    processes hold the cores, and for numbers that must not depend on the machine's cores."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        with threadpool_limits(1):
            if torch is not None:
                torch.set_num_threads(1)
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(before)


def _start_worker(state: Any) -> None:
    """Initializer of a pool process: Ctrl-C left to the parent (which stops the pool),
    SIGTERM back to its default, one torch thread where torch is loaded (BLAS threads as the parent left them:
    one inside :func:`single_threaded`), the run's ``state`` kept
    (``state.for_worker()`` where it has one), and an exit as soon as the parent is gone (a
    SIGKILLed run leaves no process behind: a forked worker holds its own queue open and would
    wait for ever)."""
    global _STATE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if "torch" in sys.modules:  # forked after torch was imported
        sys.modules["torch"].set_num_threads(1)
    _STATE = state.for_worker() if hasattr(state, "for_worker") else state
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def run_tasks(function: Callable[[Any, Any], Any], items: Sequence) -> list:
    """``[function(state, item) for item in items]`` in a pool process (submitted by the parent)."""
    return [function(_STATE, item) for item in items]


def start_pool(workers: int, state: Any) -> ProcessPoolExecutor:
    """A pool of ``workers`` graph-building processes, each holding ``state``.

    Submit work as ``pool.submit(run_tasks, function, items)`` with a module-level ``function``.
    Where the pool forks, the CIF reader and neighbour search (gemmi, pymatgen) are imported once
    here rather than once in each worker.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    if method == "fork":
        import pymatgen.core.structure  # noqa: F401
        import pymatgen.optimization.neighbors  # noqa: F401

        import cgcnn.crystals  # noqa: F401
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_start_worker,
                               initargs=(state,))
