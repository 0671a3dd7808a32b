"""Book performance: return, risk and activity statistics of an equity curve, the active return
over another book, the return-based building blocks (Sharpe, CAGR, drawdown of a return array),
rolling Sharpe and monthly returns. Guarded so that an undefined value is `None` with a reason
(zero volatility, no trades, too few points), never inf or NaN."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lib.evaluation.estimate import Section
from lib.evaluation.sharpe import MIN_POINTS, sharpe_ratio


def _drawdown(equity: np.ndarray) -> np.ndarray:
    return equity / np.maximum.accumulate(equity) - 1.0


def drawdown(equity: pd.Series) -> pd.Series:
    return pd.Series(_drawdown(equity.to_numpy(float)), index=equity.index)


def one_sided_p(t: float) -> float:
    return float(stats.norm.sf(t))


def performance(equity: np.ndarray, weight: np.ndarray, trades: pd.DataFrame, ppy: int, rf: float) -> Section:
    """Return, risk and activity statistics of one daily equity curve (marked at the close).

    Sharpe and Sortino use daily returns in excess of `rf`/ppy, sqrt(ppy) annualisation and
    ddof=1 (Sortino: downside deviation over all days). The Sharpe p-value is one-sided
    (H0: Sharpe <= 0) with Lo's (2002) standard error sqrt((1 + SR^2/2) / n)."""
    s = Section()
    e = np.asarray(equity, float)
    r = e[1:] / e[:-1] - 1.0
    n = len(r)
    years = n / ppy
    s.put("total_return", e[-1] / e[0] - 1.0)
    s.put("cagr", (e[-1] / e[0]) ** (1 / years) - 1.0 if years > 0 and e[-1] > 0 else None, "no periods or equity <= 0")
    excess = r - rf / ppy
    sd = float(np.std(r, ddof=1)) if n >= MIN_POINTS else 0.0
    s.put("annual_volatility", sd * math.sqrt(ppy) if n >= MIN_POINTS else None, "too few returns")
    sharpe_d = float(sharpe_ratio(excess.mean(), sd)) if sd > 0 else None
    s.put("sharpe", sharpe_d * math.sqrt(ppy) if sharpe_d is not None else None, "zero volatility")
    se = math.sqrt((1 + 0.5 * sharpe_d**2) / n) if sharpe_d is not None else None
    s.put("sharpe_tstat", sharpe_d / se if se else None, "zero volatility")
    s.put("sharpe_pvalue", one_sided_p(sharpe_d / se) if se else None, "zero volatility")
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


def active(strategy: np.ndarray, other: np.ndarray, ppy: int) -> Section:
    """Daily return difference strategy - other: information ratio and a one-sided t-test (H0: mean <= 0)."""
    s = Section()
    rs, ro = (np.diff(x) / x[:-1] for x in (np.asarray(strategy, float), np.asarray(other, float)))
    d = rs - ro
    sd = float(np.std(d, ddof=1)) if len(d) >= MIN_POINTS else 0.0
    s.put("mean_annual", float(d.mean()) * ppy if len(d) else None, "no returns")
    s.put("tracking_error", sd * math.sqrt(ppy) if sd > 0 else None, "identical returns")
    t = float(d.mean() / (sd / math.sqrt(len(d)))) if sd > 0 else None
    s.put("information_ratio", sharpe_ratio(float(d.mean()), sd, ppy) if sd > 0 else None, "identical returns")
    s.put("tstat", t, "identical returns")
    s.put("pvalue", one_sided_p(t) if t is not None else None, "identical returns")
    return s


# ------------------------------------------------------------------ return-based building blocks
# Small pure functions of a daily simple-return array, reused by the bootstrap and the per-fold table.


def returns_of(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, float)
    return e[1:] / e[:-1] - 1.0


def sharpe_of(r: np.ndarray, ppy: int, rf: float = 0.0) -> float | None:
    """Annualised Sharpe ratio of daily returns (ddof=1); None for fewer than 3 returns or zero volatility."""
    r = np.asarray(r, float)
    if len(r) < MIN_POINTS:
        return None
    sd = float(np.std(r, ddof=1))
    constant = sd <= 1e-12 * float(np.max(np.abs(r)))  # float noise on a constant return is not volatility
    return float(sharpe_ratio(r.mean() - rf / ppy, sd, ppy)) if sd > 0 and not constant else None


def cagr_of(r: np.ndarray, ppy: int) -> float | None:
    r = np.asarray(r, float)
    growth = float(np.prod(1.0 + r))
    return growth ** (ppy / len(r)) - 1.0 if len(r) and growth > 0 else None


def max_drawdown_of(r: np.ndarray) -> float | None:
    """Largest fall from a running peak of the compounded returns, the start (1.0) counted as a peak (<= 0)."""
    r = np.asarray(r, float)
    if not len(r):
        return None
    e = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    return float(_drawdown(e).min())


def mean_annual_of(d: np.ndarray, ppy: int) -> float | None:
    """Annualised mean of a daily return difference (the active return)."""
    d = np.asarray(d, float)
    return float(d.mean()) * ppy if len(d) else None


def rolling_sharpe(equity: pd.DataFrame, books: list[str], window: int, ppy: int) -> pd.DataFrame:
    """Annualised Sharpe over the trailing `window` daily returns of each book (NaN before a full window)."""
    out = pd.DataFrame({"date": equity["date"].iloc[1:].to_numpy()})
    for b in books:
        r = pd.Series(returns_of(equity[b].to_numpy()))
        roll = r.rolling(window)
        out[b] = sharpe_ratio(roll.mean(), roll.std(ddof=1), ppy).replace([np.inf, -np.inf], np.nan).to_numpy()
    return out


def monthly_returns(equity: pd.DataFrame, book: str) -> pd.DataFrame:
    """Compounded return of each calendar month (year x month table, NaN where no data)."""
    e = equity.set_index("date")[book]
    month_end = e.groupby([e.index.year, e.index.month]).last()
    prev = month_end.shift(1)
    prev.iloc[0] = e.iloc[0]
    ret = month_end / prev - 1.0
    ret.index.names = ["year", "month"]
    return ret.unstack("month").reindex(columns=range(1, 13))
