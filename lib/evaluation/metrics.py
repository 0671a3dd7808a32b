"""Performance statistics with their significance, guarded so that an undefined value is
`None` with a reason (zero volatility, no trades, too few points), never inf or NaN."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from lib.tables import STRATEGY

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
    return float((r.mean() - rf / ppy) / sd * math.sqrt(ppy)) if sd > 0 and not constant else None


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


# ------------------------------------------------------------------ IC the way the field computes it


def _ranks_by_date(pred: pd.DataFrame) -> pd.DataFrame:
    rows = pred[pred["label"].notna()][["date", "ticker", "prediction", "label"]].copy()
    return rows.sort_values(["date", "ticker"]).reset_index(drop=True)


def pooled_rank_ic(p: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman correlation of every non-missing (prediction, label) cell of two date x ticker matrices."""
    p, y = np.asarray(p, float).ravel(), np.asarray(y, float).ravel()
    ok = ~(np.isnan(p) | np.isnan(y))
    p, y = p[ok], y[ok]
    if len(p) < MIN_POINTS or np.std(p) == 0 or np.std(y) == 0:
        return None
    rp, ry = stats.rankdata(p), stats.rankdata(y)
    rp, ry = rp - rp.mean(), ry - ry.mean()
    return float(np.mean(rp * ry) / (np.sqrt(np.mean(rp**2)) * np.sqrt(np.mean(ry**2))))


def ic_matrices(pred: pd.DataFrame) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Labelled predictions as date x ticker matrices (NaN where a ticker has no row): the unit of
    resampling for the IC's bootstrap is the date, so tickers on one day stay together."""
    rows = _ranks_by_date(pred)
    p = rows.pivot(index="date", columns="ticker", values="prediction")
    y = rows.pivot(index="date", columns="ticker", values="label").reindex_like(p)
    return pd.DatetimeIndex(p.index), p.to_numpy(float), y.to_numpy(float)


def _t_over_dates(x: np.ndarray, lags: int) -> tuple[float | None, float | None]:
    """Naive t = mean / std * sqrt(n) (as Qlib reports it) and the Newey-West t with `lags` lags."""
    n = len(x)
    if n < MIN_POINTS:
        return None, None
    sd = float(np.std(x, ddof=1))
    naive = float(x.mean() / sd * math.sqrt(n)) if sd > 0 else None
    lrv = long_run_variance(x, lags)
    nw = float(x.mean() / math.sqrt(lrv / n)) if lrv > 0 else None
    return naive, nw


def cross_sectional_ic(pred: pd.DataFrame, horizon: int, min_cross_section: int) -> tuple[Stats, pd.DataFrame]:
    """Qlib's IC: on each date with at least `min_cross_section` labelled tickers, the Pearson (IC)
    and Spearman (Rank IC) correlation of predictions and labels across tickers; then their mean,
    ICIR = mean / std over dates, the naive t-statistic mean / std * sqrt(n_dates) and a
    Newey-West t with 2 x `horizon` lags (labels of consecutive dates overlap). Returns the
    summary and the per-date series (date, ic, rank_ic)."""
    s = Stats()
    rows = _ranks_by_date(pred)
    per_date = []
    for date, g in rows.groupby("date", sort=True):
        if len(g) < min_cross_section:
            continue
        p, y = g["prediction"].to_numpy(float), g["label"].to_numpy(float)
        if np.std(p) == 0 or np.std(y) == 0:
            continue
        per_date.append((date, float(np.corrcoef(p, y)[0, 1]), float(stats.spearmanr(p, y)[0])))
    series = pd.DataFrame(per_date, columns=["date", "ic", "rank_ic"])
    s.put("n_dates", len(series))
    reason = f"fewer than {MIN_POINTS} dates with >= {min_cross_section} tickers and varying predictions"
    for col in ("ic", "rank_ic"):
        x = series[col].to_numpy(float)
        ok = len(x) >= MIN_POINTS
        sd = float(np.std(x, ddof=1)) if ok else 0.0
        naive, nw = _t_over_dates(x, 2 * horizon) if ok else (None, None)
        s.put(f"{col}_mean", float(x.mean()) if ok else None, reason)
        s.put(f"{col}_ir", float(x.mean()) / sd if sd > 0 else None, reason if not ok else "constant per-date IC")
        s.put(f"{col}_tstat", naive, reason if not ok else "constant per-date IC")
        s.put(f"{col}_tstat_nw", nw, reason if not ok else "no variation across dates")
    return s, series


def quantile_spread(pred: pd.DataFrame, quantiles: int, horizon: int) -> tuple[Stats, pd.DataFrame]:
    """Per date, rank the tickers by prediction into `quantiles` groups (group = ceil(q x rank / n));
    the spread is the mean label of the top group minus that of the bottom group (with fewer tickers
    than groups, the top and bottom tickers). Mean over dates, per `horizon` sessions as the labels
    are, with a Newey-West t over dates. Returns the summary and the per-date series (date, spread)."""
    s = Stats()
    rows = _ranks_by_date(pred)
    rows["n"] = rows.groupby("date")["prediction"].transform("size")
    rows = rows[rows["n"] >= 2]
    rank = rows.groupby("date")["prediction"].rank(method="first")
    rows["group"] = np.ceil(quantiles * rank / rows["n"]).astype(int)
    g = rows.groupby("date")["group"]
    top = rows[rows["group"] == g.transform("max")].groupby("date")["label"].mean()
    bottom = rows[rows["group"] == g.transform("min")].groupby("date")["label"].mean()
    series = (top - bottom).rename("spread").reset_index()
    x = series["spread"].to_numpy(float)
    reason = f"fewer than {MIN_POINTS} dates with 2 or more tickers"
    s.put("quantiles", quantiles)
    s.put("n_dates", len(x))
    s.put("mean", float(x.mean()) if len(x) >= MIN_POINTS else None, reason)
    _, nw = _t_over_dates(x, 2 * horizon) if len(x) >= MIN_POINTS else (None, None)
    s.put("tstat_nw", nw, reason if len(x) < MIN_POINTS else "no variation across dates")
    s.put("pvalue", _one_sided_p(nw) if nw is not None else None, reason if len(x) < MIN_POINTS else "no variation")
    return s, series


def rolling_ic(pred: pd.DataFrame, window: int) -> pd.DataFrame:
    """Pooled Rank IC over the trailing `window` dates (date, rolling_ic): IC over time even with few tickers."""
    dates, p, y = ic_matrices(pred)
    out = [pooled_rank_ic(p[max(0, i + 1 - window): i + 1], y[max(0, i + 1 - window): i + 1])
           if i + 1 >= window else None for i in range(len(dates))]
    return pd.DataFrame({"date": dates, "rolling_ic": [np.nan if v is None else v for v in out]})


def rolling_sharpe(equity: pd.DataFrame, books: list[str], window: int, ppy: int) -> pd.DataFrame:
    """Annualised Sharpe over the trailing `window` daily returns of each book (NaN before a full window)."""
    out = pd.DataFrame({"date": equity["date"].iloc[1:].to_numpy()})
    for b in books:
        r = pd.Series(returns_of(equity[b].to_numpy()))
        roll = r.rolling(window)
        out[b] = (roll.mean() / roll.std(ddof=1) * math.sqrt(ppy)).replace([np.inf, -np.inf], np.nan).to_numpy()
    return out


def monthly_returns(equity: pd.DataFrame, book: str) -> pd.DataFrame:
    """Compounded return of each calendar month (year x month table, NaN where no data)."""
    e = equity.set_index("date")[book]
    month_end = e.groupby([e.index.year, e.index.month]).last()
    prev = month_end.shift(1)
    prev.iloc[0] = e.iloc[0]
    ret = (month_end / prev - 1.0)
    ret.index.names = ["year", "month"]
    return ret.unstack("month").reindex(columns=range(1, 13))


def fold_table(equity: pd.DataFrame, pred: pd.DataFrame, ppy: int, rf: float, benchmark: str) -> list[dict]:
    """Per walk-forward fold (its date range from the predictions' `fold` column): the strategy's
    Sharpe, the benchmark's Sharpe, the annualised active return over the benchmark and the pooled
    Rank IC; a result carried by one year shows here. Undefined values are None."""
    rows = []
    dates = equity["date"].to_numpy()
    for fold, g in pred.groupby("fold", sort=True):
        start, end = g["date"].min(), g["date"].max()
        # returns earned on sessions inside the fold's window (the return of day t is from t-1's close)
        idx = np.flatnonzero((dates >= np.datetime64(start)) & (dates <= np.datetime64(end)))
        idx = idx[idx > 0]
        rs = equity[STRATEGY].to_numpy()[idx] / equity[STRATEGY].to_numpy()[idx - 1] - 1
        rb = equity[benchmark].to_numpy()[idx] / equity[benchmark].to_numpy()[idx - 1] - 1
        lab = g[g["label"].notna()]
        rows.append({"fold": int(fold), "start": str(pd.Timestamp(start).date()), "end": str(pd.Timestamp(end).date()),
                     "sessions": len(idx), "sharpe": sharpe_of(rs, ppy, rf), "benchmark_sharpe": sharpe_of(rb, ppy, rf),
                     "active_annual": mean_annual_of(rs - rb, ppy),
                     "rank_ic": pooled_rank_ic(lab["prediction"].to_numpy(), lab["label"].to_numpy())})
    return rows
