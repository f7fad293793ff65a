"""Shared pieces of the command-line tools: the user-error exit, count checks, the
options several tools declare, and the console scripts of the installed package.

Library code never sees argparse: each tool's ``main(argv)`` parses its options with
the helpers below, maps them onto the library's arguments or settings objects, and is
run by :func:`run_main`, the only place that turns an :class:`~cgcnn.InputError` into
a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Callable

from cgcnn import InputError
from cgcnn.options import MAX_SEED, OPTION_RANGES, Range, check_values

__all__ = ["MAX_SEED", "OPTION_RANGES", "Range", "add_compat_options", "add_graph_options", "add_quiet_option",
           "add_screen_options", "add_seed_option", "check_counts", "check_options", "document_ranges", "run_main",
           "seed_value"]


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run a tool's ``main``; an :class:`InputError` becomes one line on stderr and exit 2.

    Warnings are shown as one line each (``warning: ...``), without source lines.
    """
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return int(main(argv) or 0)
    except InputError as exc:
        print("error: " + " ".join(str(exc).split("\n")), file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # an OutputSet's interrupt after its files were renamed says so
        print(str(exc) or "interrupted; earlier output files are left as they were", file=sys.stderr)
        return 130


def seed_value(text: str) -> int:
    """argparse ``type`` of a seed: an integer in 0 ... 2**32 - 1 (what ``np.random.RandomState``
    and ``torch.manual_seed`` both take).

    Raises
    ------
    argparse.ArgumentTypeError
        For anything else; argparse turns it into a one-line error and exit 2.
    """
    try:
        value = int(text, 10)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; a seed is 0 ... 2**32 - 1 "
                                         f"({MAX_SEED})") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 ... 2**32 - 1 ({MAX_SEED})")
    return value


def add_seed_option(parser: argparse.ArgumentParser, default: int = 0,
                    help: str = "random seed") -> None:
    """``--seed N`` (default ``default``), refused by argparse outside 0 ... 2**32 - 1 (:func:`seed_value`)."""
    parser.add_argument("--seed", default=default, type=seed_value, metavar="N",
                        help=f"{help}, 0 ... 2**32-1 (default: %(default)s)")


def check_counts(args, at_least_one: tuple[str, ...] = ("batch_size",), non_negative: tuple[str, ...] = ("workers",),
                 positive: tuple[str, ...] = (), fractions: tuple[str, ...] = ()):
    """Refuse numeric options out of range (attribute names of the parsed ``args``; a value
    of None, an option not given, is not checked): those in ``at_least_one`` must be ≥ 1,
    ``non_negative`` ≥ 0, ``positive`` > 0 (and finite), ``fractions`` within 0 ... 1.

    Raises
    ------
    InputError
        Naming the option, e.g. ``--batch-size must be at least 1, not 0``.
    """
    def values(names):
        for name in names:
            value = getattr(args, name)
            if value is not None:
                yield f"--{name.replace('_', '-')}", value

    for option, value in values(at_least_one):
        if value < 1:
            raise InputError(f"{option} must be at least 1, not {value}")
    for option, value in values(non_negative):
        if value < 0:
            raise InputError(f"{option} must not be negative, not {value}")
    for option, value in values(positive):
        if not 0 < value < float("inf"):
            raise InputError(f"{option} must be a positive number, not {value}")
    for option, value in values(fractions):
        if not 0 <= value <= 1:
            raise InputError(f"{option} must be between 0 and 1, not {value}")


def document_ranges(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add each numeric option's range (:data:`OPTION_RANGES`) to its ``--help`` line."""
    for action in parser._actions:
        if action.dest in OPTION_RANGES and action.help is not argparse.SUPPRESS:
            action.help = f"{action.help or ''} [{OPTION_RANGES[action.dest].text()}]".strip()
    return parser


def check_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, a numeric option outside its range (:data:`OPTION_RANGES`): not
    finite, or too small or too large.  Options not given (None) are not checked; a list (``nargs``)
    is checked value by value (:func:`cgcnn.options.check_values`).

    Raises
    ------
    InputError
        One line naming the option, e.g. ``--finetune-lr must be a positive number, not nan`` or
        ``--atom-fea-len must be at most 1024, not 100000000``.
    """
    check_values(vars(args))


# --------------------------------------------------------------------------------------------------
# options declared by several tools (same names, defaults given by each tool)


def add_loader_options(parser: argparse.ArgumentParser, batch_size: int,
                       batch_help: str = "crystals per batch (memory, not results)") -> None:
    """``-b/--batch-size`` (default ``batch_size``) and ``-j/--workers`` (default 0).

    Check them after parsing with :func:`check_counts`.
    """
    parser.add_argument("-b", "--batch-size", default=batch_size, type=int, metavar="N",
                        help=f"{batch_help} (default: %(default)s)")
    parser.add_argument("-j", "--workers", default=0, type=int, metavar="N",
                        help="data-loading worker processes (default: %(default)s)")


def add_compat_options(parser: argparse.ArgumentParser,
                       print_freq_help: str = "accepted for compatibility; progress is shown as a bar") -> None:
    """``--disable-cuda`` and ``-p/--print-freq`` (default 10), as the original tools declare them."""
    parser.add_argument("--disable-cuda", action="store_true",
                        help="run on the CPU even when torch sees a GPU")
    parser.add_argument("-p", "--print-freq", default=10, type=int, metavar="N",
                        help=f"{print_freq_help} (default: %(default)s)")


def add_graph_options(parser: argparse.ArgumentParser,
                      atom_init_help: str = "atom_init.json (default: CIFPATH/atom_init.json, "
                                            "else the table stored in the checkpoint)") -> None:
    """``--atom-init PATH`` and ``--cache-dir DIR`` (both default None): where crystal graphs'
    atom features come from and where graphs are kept across runs."""
    parser.add_argument("--atom-init", default=None, metavar="PATH", help=atom_init_help)
    parser.add_argument("--cache-dir", default=None, metavar="DIR",
                        help="folder for crystal graphs cached across runs (default: %(default)s)")


def add_screen_options(parser: argparse.ArgumentParser, output: str = "--results",
                       title: str = "screening") -> None:
    """``--on-error``, ``--resume``, ``--chunk-size`` and ``--dask`` of a screening run
    (:mod:`cgcnn.screening.run`), in an argument group; ``output`` names the option whose file
    ``skipped.csv`` and the ``.parts/`` folder go beside."""
    name = output.lstrip("-").upper()
    group = parser.add_argument_group(title)
    group.add_argument("--on-error", default="stop", choices=("stop", "skip"),
                       help="stop: a crystal that cannot be read or turned into a graph ends the run (one line, "
                            f"nothing written); skip: it is listed in skipped.csv beside {output} and left out")
    group.add_argument("--resume", action="store_true",
                       help=f"continue an interrupted run from the chunks kept in {name}.parts/ (same inputs and "
                            "options only)")
    group.add_argument("--chunk-size", default=None, type=int, metavar="N",
                       help="crystals per chunk (the unit of resumption and of Dask tasks); a multiple of "
                            "--batch-size (default: 4 x --batch-size)")
    group.add_argument("--dask", default=None, metavar="ADDRESS",
                       help="run the chunks on a dask.distributed cluster: 'local' (a LocalCluster of this "
                            f"machine's cores) or a scheduler address such as tcp://host:8786; Dask's own output "
                            f"goes to {name}.dask.log")


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet``: no progress bar."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


# --------------------------------------------------------------------------------------------------
# console scripts of the installed package (pyproject.toml [project.scripts])


def _console(module: str) -> int:
    return run_main(importlib.import_module(module).main)


def kappa_console() -> int:
    """``cgcnn-kappa``: ``transfer_learning_kappa.py`` (the transfer tool)."""
    return _console("transfer_learning_kappa")


def train_console() -> int:
    """``cgcnn-train``: ``python -m cgcnn.train``."""
    return _console("cgcnn.train")


def predict_console() -> int:
    """``cgcnn-predict``: ``python -m cgcnn.predict``."""
    return _console("cgcnn.predict")


def evaluate_console() -> int:
    """``cgcnn-evaluate``: ``python -m cgcnn.evaluate``."""
    return _console("cgcnn.evaluate")


def refine_console() -> int:
    """``cgcnn-refine``: ``python -m cgcnn.refine`` (the refine extra)."""
    return _console("cgcnn.refine.__main__")
