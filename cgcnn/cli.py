"""Shared pieces of the command-line tools: the user-error exit and output files."""

from __future__ import annotations

import sys
import warnings
from typing import Callable

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
    except KeyboardInterrupt:
        print("interrupted; earlier output files are left as they were", file=sys.stderr)
        return 130


def check_counts(args, at_least_one: tuple[str, ...] = ("batch_size",), non_negative: tuple[str, ...] = ("workers",)):
    """Refuse count options out of range: those in ``at_least_one`` must be ≥ 1, those in
    ``non_negative`` ≥ 0 (attribute names of the parsed ``args``).

    Raises
    ------
    InputError
        Naming the option, e.g. ``--batch-size must be at least 1, not 0``.
    """
    for name in at_least_one:
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    for name in non_negative:
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must not be negative, not {getattr(args, name)}")
