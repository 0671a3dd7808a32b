"""Sharpe-ratio inference: the Sharpe ratio and its moments, the probabilistic and deflated Sharpe
ratios and the minimum track record length (Bailey & López de Prado).

All inputs are per-period (daily) numbers and nothing is annualised here. Undefined results are
never inf or NaN: these functions return an `Estimate` whose value is `None` with a reason (zero
variance, fewer than 3 points, a negative variance term, n_trials < 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from lib.evaluation.estimate import Estimate

MIN_POINTS = 3
EULER_GAMMA = 0.5772156649015329
_REL_TOL = 1e-12  # a standard deviation below this fraction of the data's scale counts as zero


class Moments(NamedTuple):
    """Per-period Sharpe ratio and the moments PSR needs (skew and RAW kurtosis, normal = 3)."""

    sr: float | None
    n: int
    skew: float
    kurtosis: float


def _undefined(reason: str) -> Estimate:
    return Estimate(None, reason)


def _finite(*xs: float | None) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def is_constant(x: np.ndarray, sd: float) -> bool:
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    return sd == 0.0 or sd <= _REL_TOL * scale


def sharpe_ratio(mean_excess, sd, ppy: int = 1):
    """The Sharpe ratio mean_excess / sd, annualised by sqrt(ppy) (ppy = 1: per period): the one
    formula every Sharpe ratio of `lib.evaluation` goes through (`sharpe_moments`, `performance`,
    `sharpe_of`, `rolling_sharpe`). The caller picks the estimators of the mean excess return and
    the standard deviation and guards sd > 0; works on floats and element-wise on arrays or Series."""
    return mean_excess / sd * math.sqrt(ppy)


def sharpe_moments(returns: np.ndarray, risk_free: float = 0.0) -> Moments:
    """Per-period Sharpe ratio SR = mean(r - rf) / std(r - rf, ddof=1), the number of returns n,
    and the population (biased) skewness m3 / m2^1.5 and raw kurtosis m4 / m2^2 of r - rf, the
    estimators of Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier", J. Risk
    15(2). `risk_free` is per period. `sr` is None for fewer than 3 returns or zero variance; skew
    and kurtosis then hold the normal values 0 and 3 (placeholders: PSR, DSR and MinTRL return
    None whenever `sr` is None). Raises ValueError on non-finite returns."""
    x = np.asarray(returns, dtype=float).ravel() - float(risk_free)
    if not np.all(np.isfinite(x)):
        raise ValueError("sharpe_moments: returns must be finite")
    n = int(x.size)
    if n < MIN_POINTS:
        return Moments(None, n, 0.0, 3.0)
    sd = float(np.std(x, ddof=1))
    if is_constant(x, sd):
        return Moments(None, n, 0.0, 3.0)
    dev = x - x.mean()
    m2 = float(np.mean(dev**2))
    skew = float(np.mean(dev**3)) / m2**1.5
    kurt = float(np.mean(dev**4)) / m2**2
    return Moments(sharpe_ratio(float(x.mean()), sd), n, skew, kurt)


def _sr_variance_term(sr: float, skew: float, kurtosis: float) -> float:
    return 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr**2


def probabilistic_sharpe_ratio(
    sr: float | None, n: int, skew: float, kurtosis: float, sr_benchmark: float = 0.0
) -> Estimate:
    """Probability that the true per-period Sharpe ratio exceeds `sr_benchmark`:
    PSR = Φ((SR − SR*)·sqrt(n − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4·SR²)), γ3 = skewness, γ4 = RAW
    kurtosis (normal = 3). Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier",
    J. Risk 15(2), section "Probabilistic Sharpe Ratio"; the variance term is Mertens' (2002)
    asymptotic variance of the Sharpe ratio estimator. None when sr is None, n < 3 or the variance
    term is <= 0 (e.g. a large positive skew times SR)."""
    if sr is None:
        return _undefined("Sharpe ratio undefined (zero variance or fewer than 3 returns)")
    if not _finite(sr, skew, kurtosis, sr_benchmark):
        return _undefined("non-finite input")
    if n < MIN_POINTS:
        return _undefined(f"too few points (n={n} < {MIN_POINTS})")
    var = _sr_variance_term(sr, skew, kurtosis)
    if var <= 0.0:
        return _undefined(f"variance term 1 - skew*sr + (kurtosis-1)/4*sr^2 = {var:.3g} <= 0")
    z = (sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var)
    return Estimate(float(stats.norm.cdf(z)))


def expected_max_sharpe(n_trials: int, trials_sr_variance: float) -> Estimate:
    """Expected maximum per-period Sharpe ratio of `n_trials` independent skill-less trials whose
    Sharpe ratios have variance V (same units as the Sharpe ratios, here per period):
    E[max SR] = sqrt(V)·((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e))), γ = Euler–Mascheroni.
    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", J. Portfolio Management 40(5),
    the threshold SR0 (from Bailey, Borwein, López de Prado & Zhu 2014, "Pseudo-Mathematics and
    Financial Charlatanism", Notices AMS 61(5), Proposition 1). 0 for N = 1; None for N < 1 or
    V < 0."""
    if not _finite(n_trials, trials_sr_variance):
        return _undefined("non-finite input")
    if n_trials < 1:
        return _undefined(f"n_trials < 1 (got {n_trials})")
    if trials_sr_variance < 0:
        return _undefined(f"negative variance of trial Sharpe ratios ({trials_sr_variance})")
    if n_trials == 1:
        return Estimate(0.0)
    ppf = stats.norm.ppf
    z = (1 - EULER_GAMMA) * ppf(1 - 1 / n_trials) + EULER_GAMMA * ppf(1 - 1 / (n_trials * math.e))
    return Estimate(float(math.sqrt(trials_sr_variance) * z))


def deflated_sharpe_ratio(
    sr: float | None, n: int, skew: float, kurtosis: float, n_trials: int, trials_sr_variance: float
) -> Estimate:
    """DSR = PSR(SR0) with SR0 = expected_max_sharpe(n_trials, trials_sr_variance): the
    probability that the true Sharpe ratio beats the best of `n_trials` skill-less trials.
    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", J. Portfolio Management 40(5).
    With one trial SR0 = 0 and DSR equals PSR against 0. Per-period inputs throughout."""
    sr0 = expected_max_sharpe(n_trials, trials_sr_variance)
    if sr0.value is None:
        return sr0
    return probabilistic_sharpe_ratio(sr, n, skew, kurtosis, sr0.value)


def min_track_record_length(
    sr: float | None, skew: float, kurtosis: float, sr_benchmark: float = 0.0, alpha: float = 0.05
) -> Estimate:
    """Minimum number of returns for PSR(sr_benchmark) to reach 1 − alpha:
    MinTRL = 1 + (1 − γ3·SR + (γ4 − 1)/4·SR²)·(z_{1−α} / (SR − SR*))², γ4 RAW kurtosis.
    Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier", J. Risk 15(2), section
    "Track Record Length" (the PSR formula solved for n). In periods of the returns, not rounded.
    None when sr <= sr_benchmark, alpha is outside (0, 1) or the variance term is <= 0."""
    if sr is None:
        return _undefined("Sharpe ratio undefined (zero variance or fewer than 3 returns)")
    if not _finite(sr, skew, kurtosis, sr_benchmark, alpha):
        return _undefined("non-finite input")
    if not 0.0 < alpha < 1.0:
        return _undefined(f"alpha must be in (0, 1), got {alpha}")
    if sr <= sr_benchmark:
        return _undefined(f"Sharpe ratio {sr:.4g} <= benchmark {sr_benchmark:.4g}: no track record suffices")
    var = _sr_variance_term(sr, skew, kurtosis)
    if var <= 0.0:
        return _undefined(f"variance term 1 - skew*sr + (kurtosis-1)/4*sr^2 = {var:.3g} <= 0")
    z = float(stats.norm.ppf(1.0 - alpha))
    return Estimate(1.0 + var * (z / (sr - sr_benchmark)) ** 2)
