"""CGCNN for lattice thermal conductivity: crystal graphs, network, checkpoints.

A re-implementation of the crystal graph convolutional neural network of
T. Xie and J. C. Grossman, Phys. Rev. Lett. 120, 145301 (2018), numerically
compatible with the upstream code and its checkpoints, used by the transfer tool
of T. Zhu et al., Energy Environ. Sci. 14, 3559 (2021).

One idea per module, among them: ``data`` (CIFs to crystal graphs), ``model`` (the
network), ``checkpoint`` (the checkpoint format and the target normalizer),
``source`` (a trained network turning crystals into ``crys_fea``), ``settings`` and
``fit`` (training settings and loop), ``train`` and ``predict`` (upstream's two
commands), ``files`` (the atomic writer and the output files), ``cli`` (what the
command lines share), ``atom_init`` (the atom feature table).
"""

__version__ = "0.1.0"


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
