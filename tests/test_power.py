"""The minimum detectable effects of lib/evaluation/power.py: hand values, the undefined cases, and a
Monte-Carlo check that the one-sided test at the MDE fires about 80 % of the time."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from lib.evaluation import power
from lib.evaluation.estimate import Estimate
from lib.evaluation.forecast import newey_west_variance

ALPHA = 0.05
K = 1.6448536269514722 + 0.8416212335729143  # z_0.95 + z_0.80


def test_z_sum_and_power_at_are_the_normal_quantiles():
    assert power.z_sum(ALPHA) == pytest.approx(K, abs=1e-12)
    assert power.z_sum(0.01, 0.9) == pytest.approx(2.3263478740408408 + 1.2815515655446004, abs=1e-12)
    assert power.power_at(K * 0.01, 0.01, ALPHA) == pytest.approx(0.8, abs=1e-12)
    assert power.power_at(0.0, 0.01, ALPHA) == pytest.approx(ALPHA, abs=1e-12)
    with pytest.raises(ValueError, match="alpha and power"):
        power.z_sum(0.0)


def test_null_rank_ic_mde_by_hand():
    # 150 tickers, 252 dates, weekly labels: K / sqrt(149) * sqrt(5 / 252)
    mde = power.null_rank_ic_mde(252, 150, 5, ALPHA)
    assert mde.value == pytest.approx(K / math.sqrt(149) * math.sqrt(5 / 252), rel=1e-12)
    assert mde.value == pytest.approx(0.0287, abs=5e-4)
    assert power.null_rank_ic_mde(2, 150, 5, ALPHA).reason.startswith("fewer than 3 dates")
    assert power.null_rank_ic_mde(100, 2, 5, ALPHA).reason.startswith("fewer than 3 tickers")


def test_rank_ic_mde_uses_the_series_newey_west_variance_and_the_null_when_short():
    rng = np.random.default_rng(0)
    ic = rng.normal(0.01, 0.08, 252)
    expected = K * math.sqrt(newey_west_variance(ic, 10) / 252)
    assert power.rank_ic_mde(ic, 150, 5, ALPHA).value == pytest.approx(expected, rel=1e-12)
    short = power.rank_ic_mde(ic[:10], 150, 5, ALPHA)  # too short for its own variance: the null's
    assert short.value == pytest.approx(power.null_rank_ic_mde(10, 150, 5, ALPHA).value, rel=1e-12)
    assert power.rank_ic_mde(np.full(30, 0.02), 150, 5, ALPHA).reason == "zero long-run variance"
    assert power.series_mde(ic, 10, ALPHA).value == pytest.approx(expected, rel=1e-12)
    assert power.series_mde(ic[:2], 10, ALPHA).reason == "fewer than 3 points (got 2)"


def test_overlap_raises_the_mde_as_the_bartlett_kernel_sees_it():
    """A per-date IC that is a moving sum of 5 white-noise terms (overlapping weekly labels) has long-run
    variance 5 gamma_0; Newey-West with 10 lags weighs lag l by 1 - l/11, so it sees
    1 + 2 sum_l (1 - l/11)(5 - l)/5 = 4.27 gamma_0: the MDE is sqrt(4.27) times the naive one."""
    rng = np.random.default_rng(1)
    e = rng.normal(0, 1, 20_005)
    ic = np.convolve(e, np.ones(5), "valid")[:20_000] * 0.01
    naive = K * float(np.std(ic)) / math.sqrt(len(ic))
    ratio = power.rank_ic_mde(ic, 150, 5, ALPHA).value / naive
    bartlett = 1 + 2 * sum((1 - lag / 11) * (5 - lag) / 5 for lag in range(1, 5))
    assert bartlett == pytest.approx(4.2727, abs=1e-4)
    assert ratio == pytest.approx(math.sqrt(bartlett), rel=0.03)


def test_pooled_ic_mde_from_its_standard_error_or_the_null():
    assert power.pooled_ic_mde(0.02, 1000, 5, ALPHA).value == pytest.approx(K * 0.02, rel=1e-12)
    assert power.pooled_ic_mde(None, 1000, 5, ALPHA).value == pytest.approx(K * math.sqrt(5 / 1000), rel=1e-12)
    assert power.pooled_ic_mde(None, 2, 5, ALPHA).value is None


def test_active_return_mde_by_hand():
    """1 % daily tracking error, 252 days, plain t-test: K * 0.01 / sqrt(252) * 252 a year (39 %)."""
    rng = np.random.default_rng(2)
    d = rng.normal(0, 1, 252)
    d = (d - d.mean()) / d.std() * 0.01  # population sd exactly 1 %
    mde = power.active_return_mde(d, 252, ALPHA)
    assert mde.value == pytest.approx(K * 0.01 * math.sqrt(252), rel=1e-12)
    assert mde.value == pytest.approx(0.395, abs=1e-3)
    assert power.mean_return_mde(d, 252, ALPHA).value == mde.value
    assert power.active_return_mde(np.zeros(100), 252, ALPHA).reason == "active return: zero long-run variance"
    assert power.active_return_mde(d[:2], 252, ALPHA).value is None


def test_sharpe_mde_by_hand():
    mde = power.sharpe_mde(np.ones(252), 252, ALPHA)
    assert mde.value == pytest.approx(K / math.sqrt(252 - K * K / 2) * math.sqrt(252), rel=1e-12)
    assert mde.value == pytest.approx(2.50, abs=0.01)
    assert power.sharpe_mde(np.ones(3), 252, ALPHA).reason.startswith("too few returns")


@pytest.mark.parametrize("lags", [0, 10])
def test_monte_carlo_power_at_the_mde_is_80_percent(lags):
    """At a true mean equal to the MDE computed from one draw's variance, the one-sided (NW) t-test fires
    in about 80 % of 2,000 fresh draws (binomial sd 0.9 %: tolerance 3 %). lags 10: MA(4) noise, weekly
    labels on daily dates."""
    rng = np.random.default_rng(3)
    n, reps = 252, 2000
    shape = (reps, n + 4)
    noise = rng.normal(0, 0.08, shape)
    series = noise[:, 4:] if lags == 0 else np.stack([noise[:, i : i + n] for i in range(5)]).sum(0) / math.sqrt(5)
    first = power.rank_ic_mde(series[0], 150, 5, ALPHA) if lags else power.active_return_mde(series[0], 1, ALPHA)
    mde = first.value
    z = stats.norm.ppf(1 - ALPHA)
    x = series + mde
    se = np.sqrt([newey_west_variance(row, lags) / n for row in x])
    rate = float(np.mean(x.mean(1) / se > z))
    assert rate == pytest.approx(0.8, abs=0.03)
    false_alarm = float(np.mean(series.mean(1) / se > z))
    if lags == 0:
        assert false_alarm == pytest.approx(ALPHA, abs=0.015)
    else:  # NW's Bartlett weights see 4.27 of the MA(4)'s long-run variance 5: the test over-rejects a little
        assert false_alarm == pytest.approx(stats.norm.sf(z * math.sqrt(4.2727 / 5)), abs=0.02)


def test_verdict_sentences():
    mde = Estimate(0.0287)
    assert power.verdict_sentence(False, "a Rank IC", mde, ".2f") == (
        "no evidence of edge; this test would have found a Rank IC of 0.03 or more with 80 % probability"
    )
    assert power.power_sentence("an active return", Estimate(0.052), "%", unit=" a year") == (
        "this test would have found an active return of 5.2 % a year or more with 80 % probability"
    )
    assert power.verdict_sentence(True, "a Rank IC", Estimate(None, "no dates"), ".2f") == (
        "evidence of edge; its power is unknown (no dates)"
    )
