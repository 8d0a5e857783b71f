"""Exceptions that carry a one-line message for the user and the exit code that goes with them."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BadInput(Exception):
    """Bad user input (config, path, filter, results file): one clear line, exit code 2."""

    exit_code = 2


class RunFailed(Exception):
    """A run that started but did not succeed: exit code 1."""

    exit_code = 1


def did_you_mean(name: str, options: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest valid option, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
