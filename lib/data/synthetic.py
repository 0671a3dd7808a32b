"""Synthetic daily bars with a planted signal of known strength, for calibrating the verdict's tests
(`python -m stages.calibrate`). Never reads real data; every draw comes from `numpy.random.default_rng(seed)`.

The signal: the next `horizon` sessions' return loads on the last `horizon` sessions' return. Daily log
returns follow r_t = c r_{t-h} + e_t (an autoregression at lag h only, e white noise), so the forward sum
F_t = r_{t+1} + ... + r_{t+h} equals c (r_{t-h+1} + ... + r_t) + (e_{t+1} + ... + e_{t+h}): c times the
trailing h-session log return (`ret_<h>` of `lib.data.features`, which the default features contain)
plus noise, and corr(F_t, ret_h) = c exactly, since both sums have the stationary variance h var(e) / (1 - c^2).

* `universe`: N tickers, every one r_it = m_t + s_it with one market factor m (white noise, the same
  for all tickers, so it never changes a cross-sectional rank) and idiosyncratic s_it carrying the signal;
  the per-date Rank IC of the trailing return against the label is then `rank_ic` in expectation.
* `single_asset`: one ticker whose whole return carries it: a time-series signal, pooled IC `rank_ic`.

Rank and Pearson correlation of a bivariate normal pair: rho_S = (6 / pi) asin(rho / 2) (Pearson 1907,
via Kendall and Stuart, vol. 2, 31.19), so c = 2 sin(pi rho_S / 6) plants the Rank IC rho_S.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import signal as sps

from lib.tables import COLUMNS

BURN_IN = 200  # sessions simulated and dropped, so the autoregression starts stationary
START = "2015-01-05"


def pearson_for_rank_ic(rank_ic: float) -> float:
    """The Pearson correlation of a bivariate normal pair whose Spearman correlation is `rank_ic`."""
    if not -1.0 < rank_ic < 1.0:
        raise ValueError(f"rank_ic must be in (-1, 1), got {rank_ic}")
    return 2.0 * math.sin(math.pi * rank_ic / 6.0)


def _planted(noise: np.ndarray, rank_ic: float, horizon: int) -> np.ndarray:
    """r_t = c r_{t-h} + e_t along axis 0, scaled by sqrt(1 - c^2) so var(r) = var(e); burn-in dropped."""
    c = pearson_for_rank_ic(rank_ic)
    a = np.zeros(horizon + 1)
    a[0], a[horizon] = 1.0, -c
    return sps.lfilter([math.sqrt(1.0 - c * c)], a, noise, axis=0)[BURN_IN:]


def _bars(log_returns: np.ndarray, tickers: list[str], rng: np.random.Generator, vol: float) -> pd.DataFrame:
    """Long OHLCV table from a (T, N) matrix of close-to-close log returns: close = 100 exp(cumsum), the
    open a small gap from the previous close (so next-open fills keep the signal), valid OHLC bounds."""
    t, n = log_returns.shape
    logc = math.log(100.0) + np.cumsum(log_returns, axis=0)
    prev = np.vstack([np.full((1, n), math.log(100.0)), logc[:-1]])
    gap = rng.normal(0.0, 0.2 * vol, (t, n))
    open_, close = np.exp(prev + gap), np.exp(logc)
    high = np.maximum(open_, close) * np.exp(rng.uniform(0.0, vol, (t, n)))
    low = np.minimum(open_, close) * np.exp(-rng.uniform(0.0, vol, (t, n)))
    volume = np.round(np.exp(rng.normal(math.log(1e6), 0.3, (t, n))))
    dates = pd.bdate_range(START, periods=t)
    frame = pd.DataFrame(
        {
            "date": np.repeat(dates.to_numpy(), n),
            "ticker": np.tile(np.array(tickers, dtype=object), t),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "adj_close": close.ravel(),
            "volume": volume.ravel(),
        }
    )
    return frame.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)[COLUMNS]


def ticker_names(n: int) -> list[str]:
    return [f"S{i:04d}" for i in range(n)]


def universe(
    n_tickers: int,
    n_sessions: int,
    rank_ic: float,
    seed: int,
    horizon: int = 5,
    market_vol: float = 0.01,
    idio_vol: float = 0.015,
    drift: float = 0.0003,
) -> pd.DataFrame:
    """N tickers x T weekday sessions of bars (`lib.tables.COLUMNS`): r_it = drift + m_t + s_it, with
    m ~ N(0, market_vol^2) shared by all tickers and s_i an autoregression at lag `horizon` with
    sd `idio_vol` whose trailing `horizon`-session return has per-date Rank IC `rank_ic` with the next
    `horizon` sessions' return (0: no signal)."""
    if n_tickers < 1 or n_sessions < 2 * horizon + 2:
        raise ValueError(f"need >= 1 ticker and >= {2 * horizon + 2} sessions, got {n_tickers} x {n_sessions}")
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0, market_vol, (n_sessions, 1))
    idio = _planted(rng.normal(0.0, idio_vol, (n_sessions + BURN_IN, n_tickers)), rank_ic, horizon)
    return _bars(drift + market + idio, ticker_names(n_tickers), rng, math.hypot(market_vol, idio_vol))


def single_asset(
    n_sessions: int, rank_ic: float, seed: int, horizon: int = 5, vol: float = 0.012, drift: float = 0.0003
) -> pd.DataFrame:
    """One ticker ("S0000") whose daily return is drift + an autoregression at lag `horizon` with sd `vol`:
    its trailing `horizon`-session return has (pooled, over time) Rank IC `rank_ic` with the next one's."""
    if n_sessions < 2 * horizon + 2:
        raise ValueError(f"need >= {2 * horizon + 2} sessions, got {n_sessions}")
    rng = np.random.default_rng(seed)
    r = _planted(rng.normal(0.0, vol, (n_sessions + BURN_IN, 1)), rank_ic, horizon)
    return _bars(drift + r, ticker_names(1), rng, vol)


def oracle_prediction(prices: pd.DataFrame, horizon: int = 5) -> pd.DataFrame:
    """The signal the generators plant, as a predictions table `date, ticker, prediction, label`: the
    trailing `horizon`-session log return of the close (known at t) and the next `horizon` sessions' (the label)."""
    g = prices.sort_values(["ticker", "date"], kind="stable")
    logc = np.log(g["adj_close"]).groupby(g["ticker"], sort=False)
    out = pd.DataFrame({"date": g["date"], "ticker": g["ticker"]})
    out["prediction"] = (logc.shift(0) - logc.shift(horizon)).to_numpy()
    out["label"] = (logc.shift(-horizon) - logc.shift(0)).to_numpy()
    out = out.dropna(subset=["prediction"])
    return out.sort_values(["date", "ticker"], kind="stable").reset_index(drop=True)
