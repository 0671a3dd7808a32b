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


def non_overlapping(pred: pd.DataFrame, horizon: int) -> pd.DataFrame:
    """Labelled rows on every `horizon`-th prediction date, so no two labels overlap in time."""
    dates = np.sort(pred["date"].unique())[::horizon]
    return pred[pred["date"].isin(dates) & pred["label"].notna()]


def prediction_quality(pred: pd.DataFrame, horizon: int) -> Stats:
    """Spearman information coefficient and directional accuracy on every `horizon`-th session.

    Labels overlap from one day to the next (a `horizon`-session return); dates one horizon
    apart give non-overlapping pairs, so the p-values are not inflated by the overlap. The
    directional p-value tests accuracy against the naive rate of always guessing the more
    frequent sign (one-sided binomial)."""
    s = Stats()
    rows = non_overlapping(pred, horizon)
    p, y = rows["prediction"].to_numpy(float), rows["label"].to_numpy(float)
    s.put("n", len(rows))
    enough = len(rows) >= MIN_POINTS and np.std(p) > 0 and np.std(y) > 0
    ic = stats.spearmanr(p, y) if enough else None
    s.put("ic", float(ic.statistic) if ic else None, "too few points or constant predictions")
    s.put("ic_pvalue", float(ic.pvalue) if ic else None, "too few points or constant predictions")
    moved = y != 0
    hits = int((np.sign(p[moved]) == np.sign(y[moved])).sum())
    n = int(moved.sum())
    s.put("directional_accuracy", hits / n if n else None, "no labelled points")
    up = float((y[moved] > 0).mean()) if n else None
    naive = max(up, 1 - up) if up is not None else None
    s.put("naive_accuracy", naive, "no labelled points")
    test = stats.binomtest(hits, n, naive, alternative="greater") if naive is not None and naive < 1 else None
    s.put("directional_pvalue", float(test.pvalue) if test else None, "no labelled points or one-sided labels")
    return s
