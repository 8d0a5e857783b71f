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
    options = list(options)
    by_lower = {o.lower(): o for o in options}
    # a difference of case only is the likeliest slip ("Adamw" for "AdamW")
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f' (did you mean "{by_lower[close[0]]}"?)' if close else ""
