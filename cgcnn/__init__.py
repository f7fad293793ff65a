"""CGCNN for lattice thermal conductivity: crystal graphs, network, checkpoints.

A re-implementation of the crystal graph convolutional neural network of
T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018), numerically
compatible with the upstream code and its checkpoints, used by the transfer tool
of T. Zhu et al., Energy Environ. Sci. 14, 3559 (2021).

Subpackages by subsystem, in layers (README, "Layout"): ``outputs`` (files written), ``crystals``
(structures in), ``data`` (crystal graphs), ``model`` (the network), ``transfer`` (the last layer),
``screening`` and ``evaluation``, ``api`` (:class:`KappaModel`); the command modules ``train``,
``predict``, ``evaluate`` and ``atom_init`` with what they share (``cli``).

``from cgcnn import KappaModel`` gives the Python API (imported when first asked for, so that
``import cgcnn`` stays light).
"""

__version__ = "0.1.0"

__all__ = ["InputError", "KappaModel", "available_cores"]


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS keeps one
    (Linux: a container's or ``taskset``'s limit), else ``os.cpu_count()``.

    The default number of graph-building processes (``workers=None`` of
    :func:`cgcnn.data.build_graphs` and :meth:`cgcnn.model.source.SourceModel.run`, and
    ``-j`` of ``python -m cgcnn.predict``).  Imports nothing heavy, so that a command
    line can use it as an option's default.
    """
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def __getattr__(name: str):
    """``KappaModel`` (:mod:`cgcnn.api`), imported on first use."""
    if name == "KappaModel":
        from cgcnn.api import KappaModel

        return KappaModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class InputError(Exception):
    """A mistake in the user's input (file, folder or option).

    The command-line tools print its message as one line and exit with status 2;
    the message names the file and what is wrong with it.

    Raised in a ``DataLoader`` worker process, it is re-raised in the main process
    by torch with the worker's traceback in its message; only the original
    message is kept.
    """

    def __init__(self, *args):
        if args and isinstance(args[0], str) and "Original Traceback" in args[0]:
            last = args[0].strip().splitlines()[-1]
            args = (last.split("InputError: ", 1)[-1], *args[1:])
        super().__init__(*args)
