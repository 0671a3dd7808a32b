"""Power of the verdict's tests: the minimum detectable effect (MDE), the smallest true edge a one-sided
test at level alpha finds with probability `power` (80 % by default), from the run's own dimensions and
variances only (dates, tickers, label overlap, volatility after costs), never from its estimated edge.

Every test here is a one-sided z-test of a mean, t = mean / se, rejecting H0 (no edge) when
t > z_{1-alpha}. Under an edge mu the statistic is approximately N(mu / se, 1), so its power is
Phi(mu / se - z_{1-alpha}) and

    MDE = (z_{1-alpha} + z_{power}) * se,

the textbook sample-size relation (Cohen 1988, Statistical Power Analysis, ch. 2; for the IC the same
relation as in Grinold and Kahn, Active Portfolio Management, ch. 6, where t = IC sqrt(breadth)). The
standard errors take the overlap of `horizon`-session labels on daily dates into account with the
Newey-West (1987) long-run variance (`forecast.newey_west_variance`), as the tests themselves do:
se = sqrt(LRV / T), i.e. sd / sqrt(T_eff) with T_eff = T sd^2 / LRV.

Undefined results are an `Estimate` with value None and the reason (too few points, zero variance).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lib.evaluation.estimate import Estimate, Section
from lib.evaluation.forecast import newey_west_variance
from lib.tables import LONG_SHORT, STRATEGY

POWER = 0.8
_REL_TOL = 1e-12  # a standard deviation below this fraction of the data's scale is float noise: zero
MIN_SERIES = 20  # fewer dates than this: the per-date IC's variance is taken from the null, not the series


def z_sum(alpha: float, power: float = POWER) -> float:
    """z_{1-alpha} + z_{power}: the MDE in standard errors (2.486 at alpha 0.05, power 0.8)."""
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise ValueError(f"alpha and power must be in (0, 1), got alpha={alpha}, power={power}")
    return float(stats.norm.ppf(1.0 - alpha) + stats.norm.ppf(power))


def power_at(effect: float, se: float, alpha: float) -> float:
    """Analytic power of the one-sided test at a true effect: Phi(effect / se - z_{1-alpha})."""
    return float(stats.norm.cdf(effect / se - stats.norm.ppf(1.0 - alpha)))


def mde_of_se(se: float | None, alpha: float, power: float = POWER, reason: str = "") -> Estimate:
    """(z_{1-alpha} + z_{power}) * se; None (with `reason`) when the standard error is undefined or 0."""
    if se is None or not math.isfinite(se) or se <= 0.0:
        return Estimate(None, reason or "standard error undefined (too few points or zero variance)")
    return Estimate(z_sum(alpha, power) * se)


def nw_standard_error(x: np.ndarray, lags: int) -> Estimate:
    """Standard error of the mean of a series with autocorrelation up to `lags`: sqrt(LRV / T), LRV the
    Newey-West long-run variance (lags = 0: the plain sd / sqrt(T) with ddof 0)."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return Estimate(None, f"fewer than 3 points (got {len(x)})")
    lrv = newey_west_variance(x, lags)
    if not lrv > 0.0 or float(np.std(x)) <= _REL_TOL * float(np.max(np.abs(x))):
        return Estimate(None, "zero long-run variance")
    return Estimate(math.sqrt(lrv / len(x)))


def series_mde(x: np.ndarray, lags: int, alpha: float, power: float = POWER) -> Estimate:
    """MDE of the mean of any per-date series tested by a Newey-West t with `lags` lags: (z_{1-a} + z_p) *
    sqrt(LRV / T); e.g. the quantile spread of `forecast.quantile_spread` (per `horizon` sessions, lags
    2 x horizon)."""
    se = nw_standard_error(x, lags)
    return mde_of_se(se.value, alpha, power, se.reason)


def rank_ic_mde(
    ic: np.ndarray, n_tickers: float, horizon: int, alpha: float, power: float = POWER, min_dates: int = MIN_SERIES
) -> Estimate:
    """Minimum detectable mean per-date Rank IC: (z_{1-a} + z_p) * sqrt(LRV(IC_t) / T), the Newey-West
    long-run variance with 2 x `horizon` lags, as `forecast.cross_sectional_ic`'s t-statistic uses.

    With fewer than `min_dates` dates the series says too little about its own variance, and the null's
    is used: sd(IC_t) = 1 / sqrt(N - 1) for N tickers a date (the variance of a rank correlation of N
    independent pairs, Kendall and Stuart, The Advanced Theory of Statistics, vol. 2, 31.19), and
    T_eff = T / horizon (labels overlapping `horizon` sessions on persistent predictions: the long-run
    variance of a moving sum of `horizon` white-noise terms is `horizon` times its variance), T the dates
    in `ic` and N = `n_tickers` (the mean count a date)."""
    x = np.asarray(ic, float)
    x = x[np.isfinite(x)]
    if len(x) >= min_dates:
        return series_mde(x, 2 * horizon, alpha, power)
    return null_rank_ic_mde(len(x), n_tickers, horizon, alpha, power)


def null_rank_ic_mde(n_dates: int, n_tickers: float, horizon: int, alpha: float, power: float = POWER) -> Estimate:
    """The Rank IC's MDE from dimensions alone: (z_{1-a} + z_p) / sqrt(N - 1) * sqrt(horizon / T), for T
    dates of N tickers (see `rank_ic_mde`): 0.029 for 150 tickers, 252 dates and weekly labels."""
    if n_dates < 3:
        return Estimate(None, f"fewer than 3 dates with a cross-section (got {n_dates})")
    if not n_tickers > 2:
        return Estimate(None, f"fewer than 3 tickers a date (got {n_tickers:g})")
    se = math.sqrt(max(horizon, 1) / n_dates) / math.sqrt(n_tickers - 1)
    return mde_of_se(se, alpha, power)


def pooled_ic_mde(ic_se: float | None, n_rows: int, horizon: int, alpha: float, power: float = POWER) -> Estimate:
    """Minimum detectable pooled Spearman IC (single asset, few tickers): (z_{1-a} + z_p) * se, with se
    `forecast.prediction_quality`'s date-clustered Newey-West standard error (`ic_se`). When that is
    undefined, the null's: se = sqrt(horizon / n_rows) (a rank correlation of n independent pairs has
    variance 1 / n; overlapping labels divide the independent rows by `horizon`)."""
    if ic_se is not None and math.isfinite(ic_se) and ic_se > 0:
        return mde_of_se(ic_se, alpha, power)
    if n_rows < 3:
        return Estimate(None, f"fewer than 3 labelled rows (got {n_rows})")
    return mde_of_se(math.sqrt(max(horizon, 1) / n_rows), alpha, power)


def active_return_mde(
    active_daily: np.ndarray, ppy: int, alpha: float, power: float = POWER, lags: int = 0
) -> Estimate:
    """Minimum detectable active return a year of a book against another (buy-and-hold):

        MDE = (z_{1-a} + z_p) * sigma_active * sqrt(ppy / n) * sqrt(ppy)
            = ppy * (z_{1-a} + z_p) * sqrt(LRV(d) / n),

    d the daily return difference after costs (so dates, volatility, turnover and costs all enter), n its
    length, sigma_active^2 = LRV(d) its Newey-West long-run variance with `lags` lags (0: the plain
    variance of `performance.active`'s t-test, which this MDE then matches). Equivalently
    (z_{1-a} + z_p) * tracking error / sqrt(years)."""
    se = nw_standard_error(active_daily, lags)
    if se.value is None:
        return Estimate(None, f"active return: {se.reason}")
    return Estimate(z_sum(alpha, power) * se.value * ppy)


def sharpe_mde(returns: np.ndarray, ppy: int, alpha: float, power: float = POWER) -> Estimate:
    """Minimum detectable annualised Sharpe ratio of a book (e.g. the long-short book against zero), for the
    one-sided test with Lo's (2002) standard error sqrt((1 + SR^2 / 2) / n) of `performance.performance`:
    at SR = 0 the daily MDE is (z_{1-a} + z_p) / sqrt(n); solved with the SR^2 / 2 term, the daily
    SR* = k / sqrt(n - k^2 / 2), k = z_{1-a} + z_p; annualised by sqrt(ppy). Depends only on n = the
    number of daily returns: (2.49 / sqrt(252 - 3.1)) * sqrt(252) = 2.50 a year for one year."""
    n = int(np.isfinite(np.asarray(returns, float)).sum())
    if n < 3:
        return Estimate(None, f"fewer than 3 returns (got {n})")
    k = z_sum(alpha, power)
    if n <= k * k / 2:
        return Estimate(None, f"too few returns (n={n}) for any Sharpe ratio to reach power {power}")
    return Estimate(k / math.sqrt(n - k * k / 2) * math.sqrt(ppy))


def mean_return_mde(returns: np.ndarray, ppy: int, alpha: float, power: float = POWER, lags: int = 0) -> Estimate:
    """Minimum detectable mean return a year of one book against zero (e.g. the long-short book): the same
    formula as `active_return_mde`, on the book's own daily returns."""
    return active_return_mde(returns, ppy, alpha, power, lags)


def _fmt(value: float, fmt: str) -> str:
    return f"{100 * value:.1f} %" if fmt == "%" else format(value, fmt)


def power_sentence(what: str, mde: Estimate, fmt: str = ".3f", power: float = POWER, unit: str = "") -> str:
    """ "this test would have found a Rank IC of 0.029 or more with 80 % probability" (fmt "%": percent;
    `unit` follows the number, e.g. " a year"), or why it cannot say."""
    if mde.value is None:
        return f"its power is unknown ({mde.reason})"
    amount = f"{_fmt(mde.value, fmt)}{unit}"
    return f"this test would have found {what} of {amount} or more with {100 * power:.0f} % probability"


def verdict_sentence(
    detected: bool, what: str, mde: Estimate, fmt: str = ".3f", power: float = POWER, unit: str = ""
) -> str:
    """The verdict with its power: "no evidence of edge; this test would have found a Rank IC of 0.03 or
    more with 80 % probability", or "evidence of edge; ..." when the test rejected."""
    head = "evidence of edge" if detected else "no evidence of edge"
    return f"{head}; {power_sentence(what, mde, fmt, power, unit)}"


def power_section(
    preds: pd.DataFrame,
    ic_series: pd.DataFrame,
    spread: pd.DataFrame,
    quality: Section,
    returns: dict[str, np.ndarray],
    horizon: int,
    ppy: int,
    alpha: float,
) -> Section:
    """metrics.json's `power`: the minimum detectable effect at 80 % power of each test the verdict rests on,
    from this run's own dimensions and variances (never its estimated edge): the per-date Rank IC, the
    pooled IC, the quantile spread, the strategy's active return a year over buy-and-hold and, under the
    rank rule, the long-short book's Sharpe ratio and mean return a year."""
    labelled = preds[preds["label"].notna()]
    n_tickers = float(labelled.groupby("date").size().mean()) if len(labelled) else 0.0
    active = returns[STRATEGY] - returns["benchmark"]
    out = Section()
    out.add("power", Estimate(POWER))
    out.add("rank_ic", rank_ic_mde(ic_series["rank_ic"].to_numpy(float), n_tickers, horizon, alpha))
    out.add("pooled_ic", pooled_ic_mde(quality["ic_se"].value, int(quality["n"].value), horizon, alpha))
    out.add("quantile_spread", series_mde(spread["spread"].to_numpy(float), 2 * horizon, alpha))
    out.add("active_annual", active_return_mde(active, ppy, alpha))
    if LONG_SHORT in returns:
        out.add("long_short_sharpe", sharpe_mde(returns[LONG_SHORT], ppy, alpha))
        out.add("long_short_mean_annual", mean_return_mde(returns[LONG_SHORT], ppy, alpha))
    return out
