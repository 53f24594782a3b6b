"""Errors a user can act on, and the one way every entry point reports them."""
from __future__ import annotations

import functools
import sys

from .data.errors import DataError


class RunError(ValueError):
    """A run cannot do what it was asked: a missing, damaged or incompatible run file, a stage with
    nothing to train or evaluate, or an out-of-range option. The message names the file or option
    and what to do."""


def reported(main):
    """Wrap an entry point: a DataError or RunError prints `error: ...` and exits with status 2,
    never a traceback (anything else is a bug and keeps its traceback)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except (DataError, RunError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    return wrapper
