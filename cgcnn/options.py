"""The range of every numeric option of the tools, for the command lines (``--help`` and their checks,
:mod:`cgcnn.cli`) and the Python API (:class:`cgcnn.api.KappaModel`) alike: one table
(:data:`OPTION_RANGES`), one check (:func:`check_values`).

Layer: the lowest, beside :mod:`cgcnn.outputs`; it imports nothing of the package but ``InputError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cgcnn import InputError

__all__ = ["MAX_SEED", "BTE_MODES", "OPTION_RANGES", "EXCLUDED", "Range", "check_values"]

#: ``--bte-mode``: how the last layer uses the BTE value (:func:`cgcnn.transfer.fit_bte`); the first is the
#: default.
BTE_MODES = ("stack", "descriptor")

#: Largest seed: numpy's ``RandomState`` takes 0 ... 2**32 - 1 (torch takes more).
MAX_SEED = 2**32 - 1


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
    # transfer_learning_kappa.py's and cgcnn.train's --seed (argparse refuses others first) and the API's seed
    "seed": Range(0, MAX_SEED),
}



#: Values inside a range that an option still does not take, with why.
EXCLUDED: dict[str, dict[Any, str]] = {
    "cv_folds": {1: "cannot cross-validate; give 2 or more, or 0 for none"},
}


def check_values(values: Mapping[str, Any], prefix: str = "--") -> None:
    """Refuse a value outside its range (:data:`OPTION_RANGES`, by option ``dest``): not finite, or too
    small or too large; or one it excludes (:data:`EXCLUDED`: ``--cv-folds 1``).  Names without a range,
    None (not given) and booleans are not checked; a list is checked value by value.

    Parameters
    ----------
    values : mapping
        ``dest`` → value (``vars(args)`` of a command line, or the keyword arguments of an API call).
    prefix : str
        ``"--"``: messages name the command-line option (``--cv-folds``); ``""``: the keyword (``cv_folds``).

    Raises
    ------
    InputError
        One line naming the option, e.g. ``--finetune-lr must be a positive number, not nan``.
    """
    for dest, value in values.items():
        allowed = OPTION_RANGES.get(dest)
        if allowed is None or value is None or isinstance(value, bool):
            continue
        name = f"--{dest.replace('_', '-')}" if prefix == "--" else f"{prefix}{dest}"
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(v, numbers.Real) or isinstance(v, bool):
                raise InputError(f"{name} must be a number, not {v!r}")
            if v not in allowed:
                raise InputError(f"{name} {allowed.why(v)}, not {v}")
            if v in EXCLUDED.get(dest, {}):
                raise InputError(f"{name} {v} {EXCLUDED[dest][v]}")
