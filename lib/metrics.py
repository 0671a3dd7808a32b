"""Performance statistics with their significance, guarded so that an undefined value is
`None` with a reason (zero volatility, no trades, too few points), never inf or NaN."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

MIN_POINTS = 3


class Stats:
    """Collects metric values and, for each `None`, the reason it is undefined."""

    def __init__(self) -> None:
        self.values: dict[str, float | int | None] = {}
        self.reasons: dict[str, str] = {}

    def put(self, name: str, value: float | None, reason: str = "") -> None:
        if value is None or not math.isfinite(value):
            self.values[name] = None
            self.reasons[name] = reason or "undefined"
        else:
            self.values[name] = value if isinstance(value, int) else float(value)


def _drawdown(equity: np.ndarray) -> np.ndarray:
    return equity / np.maximum.accumulate(equity) - 1.0


def drawdown(equity: pd.Series) -> pd.Series:
    return pd.Series(_drawdown(equity.to_numpy(float)), index=equity.index)


def _one_sided_p(t: float) -> float:
    return float(stats.norm.sf(t))


def performance(equity: np.ndarray, weight: np.ndarray, trades: pd.DataFrame, ppy: int, rf: float) -> Stats:
    """Return, risk and activity statistics of one daily equity curve (marked at the close).

    Sharpe and Sortino use daily returns in excess of `rf`/ppy, sqrt(ppy) annualisation and
    ddof=1 (Sortino: downside deviation over all days). The Sharpe p-value is one-sided
    (H0: Sharpe <= 0) with Lo's (2002) standard error sqrt((1 + SR^2/2) / n)."""
    s = Stats()
    e = np.asarray(equity, float)
    r = e[1:] / e[:-1] - 1.0
    n = len(r)
    years = n / ppy
    s.put("total_return", e[-1] / e[0] - 1.0)
    s.put("cagr", (e[-1] / e[0]) ** (1 / years) - 1.0 if years > 0 and e[-1] > 0 else None, "no periods or equity <= 0")
    excess = r - rf / ppy
    sd = float(np.std(r, ddof=1)) if n >= MIN_POINTS else 0.0
    s.put("annual_volatility", sd * math.sqrt(ppy) if n >= MIN_POINTS else None, "too few returns")
    sharpe_d = float(excess.mean() / sd) if sd > 0 else None
    s.put("sharpe", sharpe_d * math.sqrt(ppy) if sharpe_d is not None else None, "zero volatility")
    se = math.sqrt((1 + 0.5 * sharpe_d**2) / n) if sharpe_d is not None else None
    s.put("sharpe_tstat", sharpe_d / se if se else None, "zero volatility")
    s.put("sharpe_pvalue", _one_sided_p(sharpe_d / se) if se else None, "zero volatility")
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2))) if n else 0.0
    s.put("sortino", excess.mean() / downside * math.sqrt(ppy) if downside > 0 else None, "no losing days")
    mdd = float(_drawdown(e).min())
    s.put("max_drawdown", mdd)
    cagr = s.values["cagr"]
    s.put("calmar", cagr / -mdd if (cagr is not None and mdd < 0) else None, "no drawdown")
    invested = np.abs(np.asarray(weight, float)[:-1]) > 1e-12  # held at the previous close
    s.put("hit_rate", float((r[invested] > 0).mean()) if invested.any() else None, "never invested")
    s.put("exposure", float(np.abs(weight).mean()))
    s.put("turnover", float(trades["notional"].sum() / e.mean() / years) if years > 0 else None, "no periods")
    s.put("n_trades", len(trades))
    s.put("costs", float(trades["cost"].sum()))
    return s


def active(strategy: np.ndarray, other: np.ndarray, ppy: int) -> Stats:
    """Daily return difference strategy - other: information ratio and a one-sided t-test (H0: mean <= 0)."""
    s = Stats()
    rs, ro = (np.diff(x) / x[:-1] for x in (np.asarray(strategy, float), np.asarray(other, float)))
    d = rs - ro
    sd = float(np.std(d, ddof=1)) if len(d) >= MIN_POINTS else 0.0
    s.put("mean_annual", float(d.mean()) * ppy if len(d) else None, "no returns")
    s.put("tracking_error", sd * math.sqrt(ppy) if sd > 0 else None, "identical returns")
    t = float(d.mean() / (sd / math.sqrt(len(d)))) if sd > 0 else None
    s.put("information_ratio", float(d.mean()) / sd * math.sqrt(ppy) if sd > 0 else None, "identical returns")
    s.put("tstat", t, "identical returns")
    s.put("pvalue", _one_sided_p(t) if t is not None else None, "identical returns")
    return s


def long_run_variance(u: np.ndarray, lags: int) -> float:
    """Newey and West (1987) long-run variance of a series: gamma_0 + 2 sum_l (1 - l/(lags+1)) gamma_l,
    with autocovariances gamma_l = sum_t u_t u_{t-l} / T of the demeaned series (Bartlett kernel)."""
    u = np.asarray(u, float) - np.mean(u)
    n = len(u)
    out = float(u @ u) / n
    for lag in range(1, min(lags, n - 1) + 1):
        out += 2.0 * (1.0 - lag / (lags + 1)) * float(u[lag:] @ u[:-lag]) / n
    return out


def _date_sums(dates: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
    """Sum each column over the rows of each date (dates in time order): one value per date."""
    _, codes = np.unique(dates, return_inverse=True)
    return [np.bincount(codes, weights=c) for c in columns]


def prediction_quality(pred: pd.DataFrame, horizon: int) -> Stats:
    """Spearman information coefficient (IC) and directional accuracy over every labelled row,
    with inference that takes the date, not the (date, ticker) pair, as the unit.

    IC = mean(z_p z_y) over all rows, z the standardised ranks of predictions and labels (the
    pooled Spearman correlation). Its standard error comes from the per-date sums
    u_d = sum_i z_p z_y - IC n_d: summing within a date absorbs the correlation between tickers
    on the same day, and the Newey-West long-run variance with 2 x `horizon` lags absorbs the
    overlap of `horizon`-session labels on consecutive dates; so no sampling offset is chosen.
    Directional accuracy is tested the same way against always guessing the more frequent sign
    (per-date sums of hits - naive x moved); both p-values are one-sided (H0: no skill)."""
    s = Stats()
    rows = pred[pred["label"].notna()]
    p, y, d = rows["prediction"].to_numpy(float), rows["label"].to_numpy(float), rows["date"].to_numpy()
    n_dates = len(np.unique(d))
    s.put("n", len(rows))
    s.put("n_dates", n_dates)
    lags = 2 * horizon
    if len(rows) >= MIN_POINTS and n_dates >= MIN_POINTS and np.std(p) > 0 and np.std(y) > 0:
        zp, zy = (stats.zscore(stats.rankdata(v)) for v in (p, y))
        ic = float(np.mean(zp * zy))
        prod, count = _date_sums(d, zp * zy, np.ones(len(rows)))
        se = math.sqrt(long_run_variance(prod - ic * count, lags) * n_dates) / len(rows)
        s.put("ic", ic)
        s.put("ic_se", se if se > 0 else None, "no variation across dates")
        s.put("ic_pvalue", _one_sided_p(ic / se) if se > 0 else None, "no variation across dates")
    else:
        for key in ("ic", "ic_se", "ic_pvalue"):
            s.put(key, None, "too few points or constant predictions or labels")
    moved = y != 0
    n = int(moved.sum())
    hits = (np.sign(p) == np.sign(y)) & moved
    s.put("directional_accuracy", float(hits.sum() / n) if n else None, "no labelled points")
    up = float((y[moved] > 0).mean()) if n else None
    naive = max(up, 1 - up) if up is not None else None
    s.put("naive_accuracy", naive, "no labelled points")
    if naive is not None and naive < 1 and n_dates >= MIN_POINTS:
        excess, = _date_sums(d, hits - naive * moved)
        se = math.sqrt(long_run_variance(excess, lags) * n_dates)
        s.put("directional_pvalue", _one_sided_p(excess.sum() / se) if se > 0 else None, "no variation across dates")
    else:
        s.put("directional_pvalue", None, "no labelled points or one-sided labels")
    return s
