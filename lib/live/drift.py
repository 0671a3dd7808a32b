"""Drift: does this week look like the data the model was trained on?

Per feature, this week's rows against the training window's:
* the population stability index, PSI = sum_i (a_i - e_i) ln(a_i / e_i), over the decile bins of
  the training window (edges: its 10 %, ..., 90 % quantiles, open-ended outer bins), e_i and a_i
  the training and this week's fractions in bin i, each floored at 1e-4 so an empty bin stays
  finite (Siddiqi 2006, "Credit Risk Scorecards", ch. 8; Yurdakul 2018, "Statistical properties
  of the population stability index"). Rule of thumb: < 0.1 stable, 0.1-0.25 some shift, > 0.25 a
  shift (the threshold is `live.psi_threshold`). PSI measures the size of a shift, not its
  significance: a week of 20 rows leaves bins empty, and each empty bin adds 0.1 ln(1000) ~ 0.69,
  so PSI is large by chance alone. A feature therefore alarms only when its PSI is above the
  threshold and the KS test below rejects "same distribution" at ALPHA;
* the two-sample Kolmogorov-Smirnov statistic sup_x |F_train(x) - F_week(x)| (scipy.stats.ks_2samp),
  with its p-value.
Rows within a week are not independent (most features are trailing windows, and each ticker gives five
near-copies of its slow features), so the KS p-value takes the week's number of tickers as its sample
size, not its rows. Even so an alarm means "this week is unlike the training window" (a slow feature in
an unusual regime, realised volatility or a 50-day trend, will do it): a reason to look, not proof of a
broken pipeline. The calendar features (day of week,
month) are left out: one week always holds one month. And the live IC against the backtest's out-of-sample IC: a drop larger than `live.ic_drop_threshold`
alarms once at least `live.ic_min_predictions` live predictions are labelled. Data-quality findings of validation on this week's bars are listed as found, never repaired
away here. Each alarm is one warning line (`drift_report` returns them) and a dict for the tear sheet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lib.data.features import CALENDAR

BINS = 10
FLOOR = 1e-4
ALPHA = 0.01  # KS p-value below which a shift is more than chance
MIN_ROWS = 2  # fewer rows on either side: PSI and KS are None with a reason


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = BINS) -> float | None:
    """Population stability index of `actual` against `expected` over the quantile bins of `expected`
    (module docstring); NaNs ignored; None when either side has fewer than MIN_ROWS values."""
    e, a = _finite(expected), _finite(actual)
    if len(e) < MIN_ROWS or len(a) < MIN_ROWS:
        return None
    edges = np.unique(np.quantile(e, np.arange(1, bins) / bins))
    pe = np.bincount(np.searchsorted(edges, e, side="right"), minlength=len(edges) + 1) / len(e)
    pa = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)
    pe, pa = np.maximum(pe, FLOOR), np.maximum(pa, FLOOR)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


def ks(expected: np.ndarray, actual: np.ndarray, actual_size: int | None = None) -> tuple[float | None, float | None]:
    """Two-sample KS statistic D and its p-value (None, None when either side has fewer than MIN_ROWS values).
    `actual_size`: the effective number of independent values in `actual` (None: every value); then
    p = Q_KS(D sqrt(n m / (n + m))) with m = actual_size, Kolmogorov's asymptotic distribution
    (scipy.stats.kstwobign; Smirnov 1948)."""
    e, a = _finite(expected), _finite(actual)
    if len(e) < MIN_ROWS or len(a) < MIN_ROWS:
        return None, None
    res = stats.ks_2samp(e, a)
    if actual_size is None:
        return float(res.statistic), float(res.pvalue)
    n, m = len(e), min(actual_size, len(a))
    return float(res.statistic), float(stats.kstwobign.sf(res.statistic * np.sqrt(n * m / (n + m))))


def _finite(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float).ravel()
    return x[np.isfinite(x)]


def feature_drift(train: pd.DataFrame, week: pd.DataFrame, columns: list[str], psi_threshold: float) -> dict:
    """Per feature: PSI, KS statistic and p-value, and the alarm (PSI above `psi_threshold` and KS p < ALPHA).
    The week's effective size for the KS p-value is its number of tickers when it has a ticker column."""
    size = week["ticker"].nunique() if "ticker" in week else None
    out = {}
    for c in columns:
        e, a = train[c].to_numpy(), week[c].to_numpy()
        value, (stat, p) = psi(e, a), ks(e, a, size)
        alarm = value is not None and value > psi_threshold and p is not None and p < ALPHA
        out[c] = {"psi": value, "ks": stat, "ks_pvalue": p, "alarm": alarm}
    return out


def drift_report(
    features: pd.DataFrame,
    columns: list[str],
    train_end: pd.Timestamp,
    week_start: pd.Timestamp,
    week_end: pd.Timestamp,
    live_ic: float | None,
    backtest_ic: float | None,
    n_live: int,
    findings: list[dict[str, Any]],
    cfg: dict[str, Any],
) -> tuple[dict[str, Any], list[str]]:
    """The drift section and its warning lines. `columns`: the features compared (calendar ones are dropped);
    `live_ic` over `n_live` labelled live predictions. Training window: feature rows dated <= train_end and
    before week_start; this week: rows dated in [week_start, week_end]. `findings`: validation's
    findings (dicts with ticker, date, rule, detail, action), those dated in this week are reported.
    cfg: the live section of params.yaml."""
    dates = features["date"]
    train = features[(dates <= train_end) & (dates < week_start)]
    week = features[(dates >= week_start) & (dates <= week_end)]
    columns = [c for c in columns if c not in CALENDAR]
    per_feature = feature_drift(train, week, columns, cfg["psi_threshold"])
    shifted = sorted(c for c, v in per_feature.items() if v["alarm"])
    drop = None if live_ic is None or backtest_ic is None else backtest_ic - live_ic
    new = [f for f in findings if f.get("date") and week_start <= pd.Timestamp(f["date"]) <= week_end]
    ic_alarm = drop is not None and drop > cfg["ic_drop_threshold"] and n_live >= cfg["ic_min_predictions"]
    warnings = []
    if shifted:
        worst = max(shifted, key=lambda c: per_feature[c]["psi"])
        warnings.append(
            f"drift: {len(shifted)} feature(s) with PSI above live.psi_threshold {cfg['psi_threshold']:g} "
            f"this week (worst {worst}: {per_feature[worst]['psi']:.3f}): {', '.join(shifted)}"
        )
    if ic_alarm:
        warnings.append(
            f"drift: live IC {live_ic:.3f} is {drop:.3f} below the backtest's {backtest_ic:.3f} "
            f"(live.ic_drop_threshold {cfg['ic_drop_threshold']:g})"
        )
    if new:
        rules = sorted({f["rule"] for f in new})
        warnings.append(f"data quality: {len(new)} validation finding(s) on this week's bars ({', '.join(rules)})")
    section = {
        "week": {"start": str(week_start.date()), "end": str(week_end.date()), "rows": len(week)},
        "training_rows": len(train),
        "psi_threshold": cfg["psi_threshold"],
        "features": per_feature,
        "shifted_features": shifted,
        "live_ic": live_ic,
        "backtest_ic": backtest_ic,
        "ic_drop": drop,
        "ic_drop_threshold": cfg["ic_drop_threshold"],
        "labelled_live_predictions": n_live,
        "data_quality_findings": new,
        "alarm": bool(shifted) or ic_alarm,  # what retrain: on_drift acts on (data quality is reported apart)
        "null_reasons": _reasons(per_feature, drop, len(train), len(week)),
    }
    return section, warnings


def _reasons(per_feature: dict, drop: float | None, n_train: int, n_week: int) -> dict[str, str]:
    out = {}
    if any(v["psi"] is None for v in per_feature.values()):
        out["features"] = f"PSI and KS need >= {MIN_ROWS} rows each side (training {n_train}, this week {n_week})"
    if drop is None:
        out["ic_drop"] = "live or backtest IC undefined (fewer than 3 labelled predictions, or no spread)"
    return out
