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
import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from cgcnn import InputError


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


#: Largest seed: numpy's ``RandomState`` takes 0 ... 2**32 - 1 (torch takes more).
MAX_SEED = 2**32 - 1


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


# --------------------------------------------------------------------------------------------------
# the range of every numeric option


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric option takes: ``lo`` ... ``hi``, an end excluded where ``lo_open`` or
    ``hi_open``; a float must also be finite."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, value) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def text(self) -> str:
        """The range as the help shows it, e.g. ``1 ... 100000``, ``(0, 10]``, ``[0.5, 1)``."""
        if not (self.lo_open or self.hi_open):
            return f"{_num(self.lo)} ... {_num(self.hi)}"
        return f"{'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"

    def why(self, value) -> str:
        """What ``value`` (outside the range) must be, in the words of the project's messages:
        ``must not be negative``, ``must be at least 1``, ``must be a positive number``, ``must be
        between 0 and 1``, ``must lie in [0.5, 1)``, ``must be at most 1024``."""
        if self.hi_open:
            return f"must lie in {self.text()}"
        if (self.lo, self.hi, self.lo_open) == (0, 1, False):
            return "must be between 0 and 1"
        if math.isnan(value) or (value <= self.lo if self.lo_open else value < self.lo):
            if self.lo == 0:
                return "must be a positive number" if self.lo_open else "must not be negative"
            return f"must be at least {_num(self.lo)}" if not self.lo_open else f"must lie in {self.text()}"
        return f"must be at most {_num(self.hi)}"


#: Every numeric option of the command-line tools, by its ``dest``, and the range it must lie in
#: (shown by ``--help``; :func:`check_options` refuses anything else before any work).  The
#: upper ends are what no run needs and what would exhaust memory or time instead: e.g. a
#: batch of 10⁵ crystals, ``--atom-fea-len`` 1024 (upstream 64), ``--max-num-nbr``
#: :data:`cgcnn.data.MAX_NEIGHBOURS`.
OPTION_RANGES: dict[str, Range] = {
    # every tool
    "batch_size": Range(1, 100_000), "workers": Range(0, 1024), "print_freq": Range(0, 1_000_000),
    "chunk_size": Range(1, 10_000_000),
    # transfer_learning_kappa.py and cgcnn.evaluate
    "interval": Range(0.5, 1, hi_open=True), "cv_folds": Range(0, 1000),
    "splits": Range(1, 1000), "train_fraction": Range(0, 1, lo_open=True, hi_open=True), "kfold": Range(2, 1000),
    "group_folds": Range(2, 1000), "finetune": Range(0, 100_000), "finetune_patience": Range(0, 100_000),
    "finetune_batch_size": Range(1, 100_000), "finetune_lr": Range(0, 10, lo_open=True),
    # cgcnn.train
    "epochs": Range(1, 1_000_000), "start_epoch": Range(0, 1_000_000), "lr": Range(0, 10, lo_open=True),
    "lr_milestones": Range(0, 1_000_000), "momentum": Range(0, 1), "weight_decay": Range(0, 1),
    "train_ratio": Range(0, 1), "val_ratio": Range(0, 1), "test_ratio": Range(0, 1),
    "train_size": Range(1, 1_000_000_000), "val_size": Range(0, 1_000_000_000), "test_size": Range(0, 1_000_000_000),
    "atom_fea_len": Range(1, 1024), "h_fea_len": Range(1, 4096), "n_conv": Range(1, 32), "n_h": Range(1, 32),
    "radius": Range(0, 50, lo_open=True), "max_num_nbr": Range(1, 1000), "step": Range(0, 50, lo_open=True),
    "freeze_convs": Range(0, 32), "patience": Range(0, 1_000_000),
}


def document_ranges(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add each numeric option's range (:data:`OPTION_RANGES`) to its ``--help`` line."""
    for action in parser._actions:
        if action.dest in OPTION_RANGES and action.help is not argparse.SUPPRESS:
            action.help = f"{action.help or ''} [{OPTION_RANGES[action.dest].text()}]".strip()
    return parser


def check_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, a numeric option outside its range (:data:`OPTION_RANGES`): not
    finite, or too small or too large.  Options not given (None) are not checked; a list (``nargs``)
    is checked value by value.

    Raises
    ------
    InputError
        One line naming the option, e.g. ``--finetune-lr must be a positive number, not nan`` or
        ``--atom-fea-len must be at most 1024, not 100000000``.
    """
    for dest, value in vars(args).items():
        allowed = OPTION_RANGES.get(dest)
        if allowed is None or value is None or isinstance(value, bool):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v not in allowed:
                raise InputError(f"--{dest.replace('_', '-')} {allowed.why(v)}, not {v}")


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
