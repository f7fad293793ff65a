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
