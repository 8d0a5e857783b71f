"""Confidence intervals and paired significance tests for comparing runs (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from peftbench.errors import BadInput


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval.

    `low` and `high` are None when no interval can be computed (too few values); `reason` then
    says why, in words fit for a table cell or a tooltip.
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int
    confidence: float = 0.95
    reason: str = ""

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (symmetric intervals: the error bar), or None."""
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2


def _check_confidence(confidence: float) -> None:
    if not (isinstance(confidence, int | float) and 0 < confidence < 1):
        raise BadInput(f"confidence must be a number between 0 and 1 (exclusive), got {confidence!r}")


def _finite(values: Iterable[float | None]) -> np.ndarray:
    """Drop None and NaN: a missing metric (e.g. a reference file without forgetting) is not a zero."""
    out = []
    for v in values:
        if v is None:
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise BadInput(f"not a number: {v!r}") from None
        if math.isnan(x):
            continue
        if math.isinf(x):
            raise BadInput(f"infinite value in a metric: {v!r}")
        out.append(x)
    return np.asarray(out, dtype=float)


def t_interval(values: Iterable[float | None], confidence: float = 0.95) -> Interval:
    """Mean of a metric across seeds and its Student-t confidence interval.

    Missing values (None, NaN) are dropped; `n` counts the values used. With fewer than two values
    there is no interval: low/high are None and `reason` says so.
    """
    _check_confidence(confidence)
    x = _finite(values)
    n = len(x)
    if n == 0:
        return Interval(None, None, None, 0, confidence, "no values")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, None, None, 1, confidence, "one seed: at least 2 are needed for an interval")
    sem = float(sps.sem(x))
    if sem == 0.0:
        # scipy returns NaN limits for a zero scale; identical values give a zero-width interval.
        return Interval(mean, mean, mean, n, confidence)
    low, high = sps.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n, confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Accuracy of one run (`successes` correct of `n` test items) with its Wilson score interval."""
    _check_confidence(confidence)
    if isinstance(successes, bool) or isinstance(n, bool):
        raise BadInput("successes and n must be counts, not booleans")
    if int(successes) != successes or int(n) != n:
        raise BadInput(f"successes and n must be whole numbers, got {successes!r} and {n!r}")
    successes, n = int(successes), int(n)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise BadInput(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return Interval(None, None, None, 0, confidence, "no test items")
    low, high = proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    # Rounding can put a limit a hair outside [0, 1] (0.9999999999999999 for 10 of 10).
    low, high = max(0.0, float(low)), min(1.0, float(high))
    if successes == 0:
        low = 0.0
    if successes == n:
        high = 1.0
    return Interval(successes / n, low, high, n, confidence)
