"""Statistics checked against scipy/statsmodels reference values on hand-made data."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from peftbench.analysis.stats import t_interval, wilson_interval
from peftbench.errors import BadInput


def test_t_interval_matches_scipy():
    values = [0.41, 0.45, 0.38, 0.44]
    iv = t_interval(values)
    low, high = sps.t.interval(0.95, df=3, loc=sum(values) / 4, scale=sps.sem(values))
    assert iv.n == 4
    assert iv.mean == pytest.approx(0.42)
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))
    assert iv.reason == ""


def test_t_interval_hand_computed():
    # mean 2, sd 1, n 3 -> half width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051 = 2.484138
    iv = t_interval([1.0, 2.0, 3.0], confidence=0.95)
    assert iv.half_width == pytest.approx(2.484138, abs=1e-6)


def test_t_interval_one_value_has_no_interval_and_says_why():
    iv = t_interval([0.5])
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.5, None, None, 1)
    assert "seed" in iv.reason


def test_t_interval_drops_missing_values_and_handles_identical_ones():
    iv = t_interval([0.3, None, math.nan, 0.3])
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.3, 0.3, 0.3, 2)
    assert t_interval([]).reason == "no values"


def test_wilson_matches_statsmodels():
    iv = wilson_interval(37, 50, confidence=0.9)
    low, high = proportion_confint(37, 50, alpha=0.1, method="wilson")
    assert iv.mean == pytest.approx(0.74)
    assert (iv.low, iv.high) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.parametrize(("k", "n"), [(0, 20), (20, 20)])
def test_wilson_all_wrong_and_all_correct_stay_inside_0_1(k, n):
    iv = wilson_interval(k, n)
    assert 0.0 <= iv.low < iv.high <= 1.0
    assert iv.low == 0.0 if k == 0 else iv.high == 1.0
    # Wilson upper limit for 0/n is z^2 / (n + z^2)
    z2 = sps.norm.ppf(0.975) ** 2
    assert (iv.high if k == 0 else 1 - iv.low) == pytest.approx(z2 / (n + z2))


@pytest.mark.parametrize(("k", "n", "conf"), [(3, 2, 0.95), (-1, 5, 0.95), (1, 5, 1.5), (1.5, 5, 0.95)])
def test_wilson_bad_input(k, n, conf):
    with pytest.raises(BadInput):
        wilson_interval(k, n, confidence=conf)
