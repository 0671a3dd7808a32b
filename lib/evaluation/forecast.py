"""Forecast quality: the pooled Spearman IC and directional accuracy with date-level Newey-West
inference, the IC the field's way (per-date IC and Rank IC, ICIR), the quantile spread, the rolling
IC and the per-fold table. Guarded so that an undefined value is `None` with a reason, never inf or NaN."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats

from lib.evaluation.estimate import Section
from lib.evaluation.performance import mean_annual_of, one_sided_p, sharpe_of
from lib.evaluation.sharpe import MIN_POINTS
from lib.tables import STRATEGY


def newey_west_variance(u: np.ndarray, lags: int) -> float:
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


def _varies(ranks: np.ndarray) -> bool:
    """Ranks that are not all equal (exact: equal values get the identical average rank)."""
    return len(ranks) > 0 and ranks.min() < ranks.max()


def rank_ic(p: np.ndarray, y: np.ndarray) -> float | None:
    """The Spearman rank correlation of every non-missing (prediction, label) pair, the one rank IC of
    this project: the mean product of ranks (ties averaged) standardised to mean 0 and population sd 1.
    None for fewer than 3 pairs or a side without variation. Arrays of any shape (date x ticker
    matrices included) are flattened."""
    p, y = np.asarray(p, float).ravel(), np.asarray(y, float).ravel()
    ok = ~(np.isnan(p) | np.isnan(y))
    rp, ry = stats.rankdata(p[ok]), stats.rankdata(y[ok])
    if ok.sum() < MIN_POINTS or not (_varies(rp) and _varies(ry)):
        return None
    return float(np.mean(stats.zscore(rp) * stats.zscore(ry)))


def _tie_groups(v: np.ndarray) -> tuple[np.ndarray, int]:
    """Each value's group among the sorted distinct values (0 = smallest) and the number of groups."""
    distinct, group = np.unique(v, return_inverse=True)
    return group, len(distinct)


def rank_ic_of_dates(pm: np.ndarray, ym: np.ndarray) -> Callable[[np.ndarray], float | None]:
    """`rank_ic` of the rows `dates` of date x ticker matrices (a bootstrap's resampled date indices,
    repeats included), without re-ranking: a date drawn c times weighs each of its cells c, the rank of a
    tied group is the weight before it plus (its weight + 1) / 2 (the average rank of its copies), and the
    Spearman correlation is the weighted Pearson correlation of those ranks. Equal to `rank_ic(pm[dates],
    ym[dates])` to float rounding, in O(cells) a call instead of two sorts."""
    ok = ~(np.isnan(pm) | np.isnan(ym))
    cell_date = np.nonzero(ok)[0]
    (gp, n_p), (gy, n_y) = _tie_groups(pm[ok]), _tie_groups(ym[ok])
    n_dates = pm.shape[0]

    def ranks(w: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
        weight = np.bincount(group, weights=w, minlength=n_groups)
        return (np.cumsum(weight) - weight + (weight + 1.0) / 2.0)[group]

    def statistic(dates: np.ndarray) -> float | None:
        w = np.bincount(np.asarray(dates, np.int64), minlength=n_dates)[cell_date].astype(float)
        total = w.sum()
        if total < MIN_POINTS:
            return None
        mid = (total + 1.0) / 2.0  # the mean rank
        rp, ry = ranks(w, gp, n_p) - mid, ranks(w, gy, n_y) - mid
        vp, vy = float(w @ (rp * rp)), float(w @ (ry * ry))
        if vp <= 0.0 or vy <= 0.0:
            return None
        return float(w @ (rp * ry)) / math.sqrt(vp * vy)

    return statistic


def prediction_quality(pred: pd.DataFrame, horizon: int) -> Section:
    """Spearman information coefficient (IC) and directional accuracy over every labelled row,
    with inference that takes the date, not the (date, ticker) pair, as the unit.

    IC = mean(z_p z_y) over all rows, z the standardised ranks of predictions and labels (the
    pooled Spearman correlation). Its standard error comes from the per-date sums
    u_d = sum_i z_p z_y - IC n_d: summing within a date absorbs the correlation between tickers
    on the same day, and the Newey-West long-run variance with 2 x `horizon` lags absorbs the
    overlap of `horizon`-session labels on consecutive dates; so no sampling offset is chosen.
    Directional accuracy is tested the same way against always guessing the more frequent sign
    (per-date sums of hits - naive x moved); both p-values are one-sided (H0: no skill)."""
    s = Section()
    rows = pred[pred["label"].notna()]
    p, y, d = rows["prediction"].to_numpy(float), rows["label"].to_numpy(float), rows["date"].to_numpy()
    n_dates = len(np.unique(d))
    s.put("n", len(rows))
    s.put("n_dates", n_dates)
    lags = 2 * horizon
    ic = rank_ic(p, y)
    if ic is not None and n_dates >= MIN_POINTS:
        zp, zy = (stats.zscore(stats.rankdata(v)) for v in (p, y))
        prod, count = _date_sums(d, zp * zy, np.ones(len(rows)))
        se = math.sqrt(newey_west_variance(prod - ic * count, lags) * n_dates) / len(rows)
        s.put("ic", ic)
        s.put("ic_se", se if se > 0 else None, "no variation across dates")
        s.put("ic_pvalue", one_sided_p(ic / se) if se > 0 else None, "no variation across dates")
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
        (excess,) = _date_sums(d, hits - naive * moved)
        se = math.sqrt(newey_west_variance(excess, lags) * n_dates)
        s.put("directional_pvalue", one_sided_p(excess.sum() / se) if se > 0 else None, "no variation across dates")
    else:
        s.put("directional_pvalue", None, "no labelled points or one-sided labels")
    return s


# ------------------------------------------------------------------ IC the way the field computes it


def _ranks_by_date(pred: pd.DataFrame) -> pd.DataFrame:
    rows = pred[pred["label"].notna()][["date", "ticker", "prediction", "label"]].copy()
    return rows.sort_values(["date", "ticker"]).reset_index(drop=True)


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
    lrv = newey_west_variance(x, lags)
    nw = float(x.mean() / math.sqrt(lrv / n)) if lrv > 0 else None
    return naive, nw


def _correlation_by_date(codes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of a and b within each date code (group sums: no loop over dates)."""
    n = np.bincount(codes)
    da = a - (np.bincount(codes, weights=a) / n)[codes]
    db = b - (np.bincount(codes, weights=b) / n)[codes]
    cov, va, vb = (np.bincount(codes, weights=w) for w in (da * db, da * da, db * db))
    return cov / np.sqrt(va * vb)


def per_date_ic(pred: pd.DataFrame, min_cross_section: int) -> pd.DataFrame:
    """On each date with at least `min_cross_section` labelled tickers whose predictions and labels
    both vary, the Pearson (ic) and the Spearman (rank_ic: Pearson of the date's ranks, ties averaged)
    correlation across tickers: the series (date, ic, rank_ic), in date order."""
    rows = _ranks_by_date(pred)
    size = rows.groupby("date")["prediction"].transform("size")
    ranks = rows.groupby("date")[["prediction", "label"]].rank(method="average")
    spread = ranks.groupby(rows["date"]).agg(["min", "max"])
    varies = (spread.xs("min", axis=1, level=1) < spread.xs("max", axis=1, level=1)).all(axis=1)
    keep = (size >= min_cross_section).to_numpy() & rows["date"].map(varies).to_numpy(bool)
    rows, ranks = rows[keep], ranks[keep]
    dates, codes = np.unique(rows["date"].to_numpy(), return_inverse=True)
    p, y = rows["prediction"].to_numpy(float), rows["label"].to_numpy(float)
    rp, ry = ranks["prediction"].to_numpy(float), ranks["label"].to_numpy(float)
    return pd.DataFrame(
        {"date": dates, "ic": _correlation_by_date(codes, p, y), "rank_ic": _correlation_by_date(codes, rp, ry)}
    )


def cross_sectional_ic(pred: pd.DataFrame, horizon: int, min_cross_section: int) -> tuple[Section, pd.DataFrame]:
    """Qlib's IC: on each date with at least `min_cross_section` labelled tickers, the Pearson (IC)
    and Spearman (Rank IC) correlation of predictions and labels across tickers; then their mean,
    ICIR = mean / std over dates, the naive t-statistic mean / std * sqrt(n_dates) and a
    Newey-West t with 2 x `horizon` lags (labels of consecutive dates overlap). Returns the
    summary and the per-date series (date, ic, rank_ic)."""
    s = Section()
    series = per_date_ic(pred, min_cross_section)
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


def quantile_spread(pred: pd.DataFrame, quantiles: int, horizon: int) -> tuple[Section, pd.DataFrame]:
    """Per date, rank the tickers by prediction into `quantiles` groups (group = ceil(q x rank / n),
    tied predictions at their average rank, so a tie stays in one group and never splits by ticker
    name); the spread is the mean label of the top group minus that of the bottom group (with fewer
    tickers than groups, the top and bottom tickers; a date whose predictions are all equal has none).
    Mean over dates, per `horizon` sessions as the labels are, with a Newey-West t over dates. Returns
    the summary and the per-date series (date, spread)."""
    s = Section()
    rows = _ranks_by_date(pred)
    rows["n"] = rows.groupby("date")["prediction"].transform("size")
    rows = rows[rows["n"] >= 2]
    rank = rows.groupby("date")["prediction"].rank(method="average")
    rows["group"] = np.ceil(quantiles * rank / rows["n"]).astype(int)
    g = rows.groupby("date")["group"]
    top = rows[rows["group"] == g.transform("max")].groupby("date")["label"].mean()
    bottom = rows[rows["group"] == g.transform("min")].groupby("date")["label"].mean()
    spans = g.max() > g.min()
    series = (top - bottom)[spans].rename("spread").reset_index()
    x = series["spread"].to_numpy(float)
    reason = f"fewer than {MIN_POINTS} dates with 2 or more tickers"
    s.put("quantiles", quantiles)
    s.put("n_dates", len(x))
    s.put("mean", float(x.mean()) if len(x) >= MIN_POINTS else None, reason)
    _, nw = _t_over_dates(x, 2 * horizon) if len(x) >= MIN_POINTS else (None, None)
    s.put("tstat_nw", nw, reason if len(x) < MIN_POINTS else "no variation across dates")
    s.put("pvalue", one_sided_p(nw) if nw is not None else None, reason if len(x) < MIN_POINTS else "no variation")
    return s, series


def rolling_ic(pred: pd.DataFrame, window: int) -> pd.DataFrame:
    """Pooled Rank IC over the trailing `window` dates (date, rolling_ic): IC over time even with few tickers."""
    dates, p, y = ic_matrices(pred)
    ic_of = rank_ic_of_dates(p, y)
    out = [ic_of(np.arange(i + 1 - window, i + 1)) if i + 1 >= window else None for i in range(len(dates))]
    return pd.DataFrame({"date": dates, "rolling_ic": [np.nan if v is None else v for v in out]})


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
        rows.append(
            {
                "fold": int(fold),
                "start": str(pd.Timestamp(start).date()),
                "end": str(pd.Timestamp(end).date()),
                "sessions": len(idx),
                "sharpe": sharpe_of(rs, ppy, rf),
                "benchmark_sharpe": sharpe_of(rb, ppy, rf),
                "active_annual": mean_annual_of(rs - rb, ppy),
                "rank_ic": rank_ic(lab["prediction"].to_numpy(), lab["label"].to_numpy()),
            }
        )
    return rows
