"""Data checks per ticker, with a `fail` or `repair` policy and a full list of findings."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.providers import COLUMNS, PRICE_COLUMNS

PRICES = ["open", "high", "low", "close", "adj_close"]


@dataclass(frozen=True)
class Finding:
    ticker: str
    date: str | None
    rule: str
    detail: str
    action: str  # what repair did ("dropped row", "clamped", ...) or "kept" / "fatal"


def check_schema(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Columns present, dates parse, prices numeric; returns the typed table."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PipelineError(f"{source}: missing column(s) {missing}")
    out = df[COLUMNS].copy()
    out["ticker"] = out["ticker"].astype(str)
    dates = pd.to_datetime(out["date"], errors="coerce")
    if dates.isna().any():
        i = int(dates.isna().to_numpy().argmax())
        raise PipelineError(f"{source}, row {i + 1}: date {df['date'].iloc[i]!r} does not parse ({out['ticker'].iloc[i]})")
    out["date"] = dates
    for col in PRICE_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise PipelineError(f"{source}, row {i + 1}: {col} {out[col].iloc[i]!r} is not a number ({out['ticker'].iloc[i]})")
        out[col] = values.astype(float)
    return out


def _day(ts: Any) -> str:
    return pd.Timestamp(ts).date().isoformat()


def _flag(findings: list[Finding], g: pd.DataFrame, mask: np.ndarray, ticker: str, rule: str,
          detail: Any, action: str) -> None:
    for i in np.flatnonzero(mask):
        findings.append(Finding(ticker, _day(g["date"].iloc[i]), rule, detail(i) if callable(detail) else detail, action))


def _check_ticker(g: pd.DataFrame, ticker: str, cfg: dict[str, Any], findings: list[Finding]) -> pd.DataFrame:
    g = g.reset_index(drop=True)
    if not g["date"].is_monotonic_increasing:
        findings.append(Finding(ticker, None, "unsorted_dates", "dates are not in ascending order", "sorted"))
        g = g.sort_values("date", kind="stable").reset_index(drop=True)
    dup = g["date"].duplicated(keep="last").to_numpy()
    _flag(findings, g, dup, ticker, "duplicate_date", "date appears more than once", "dropped earlier copy")
    g = g[~dup].reset_index(drop=True)

    nan = g[PRICE_COLUMNS].isna().any(axis=1).to_numpy()
    _flag(findings, g, nan, ticker, "nan", lambda i: f"missing {list(g[PRICE_COLUMNS].columns[g[PRICE_COLUMNS].iloc[i].isna()])}",
          "dropped row")
    nonpos = (~nan) & (g[PRICES] <= 0).any(axis=1).to_numpy()
    _flag(findings, g, nonpos, ticker, "non_positive_price", "a price is <= 0", "dropped row")
    g = g[~(nan | nonpos)].reset_index(drop=True)

    tol = cfg["ohlc_tolerance"]
    top = np.maximum(g["open"], g["close"])
    bottom = np.minimum(g["open"], g["close"])
    high_bad = (g["high"] < top * (1 - tol)).to_numpy()
    low_bad = (g["low"] > bottom * (1 + tol)).to_numpy()
    _flag(findings, g, high_bad, ticker, "ohlc_bounds", lambda i: f"high {g['high'].iloc[i]} < max(open, close) {top.iloc[i]}",
          "clamped high")
    _flag(findings, g, low_bad, ticker, "ohlc_bounds", lambda i: f"low {g['low'].iloc[i]} > min(open, close) {bottom.iloc[i]}",
          "clamped low")
    g["high"] = np.where(high_bad, top, g["high"])
    g["low"] = np.where(low_bad, bottom, g["low"])
    neg_vol = (g["volume"] < 0).to_numpy()
    _flag(findings, g, neg_vol, ticker, "negative_volume", lambda i: f"volume {g['volume'].iloc[i]}", "set to 0")
    g["volume"] = np.where(neg_vol, 0.0, g["volume"])

    # Suspicious but not repairable: kept under `repair`, fatal under `fail`.
    days = g["date"].to_numpy().astype("datetime64[D]")
    missing_sessions = np.busday_count(days[:-1], days[1:]) - 1
    gap = np.concatenate([[False], missing_sessions > cfg["max_gap_sessions"]])
    _flag(findings, g, gap, ticker, "gap", lambda i: f"{missing_sessions[i - 1]} weekdays missing before this date", "kept")
    move = g["adj_close"].pct_change().abs().to_numpy()
    big = np.nan_to_num(move) > cfg["max_move"]
    _flag(findings, g, big, ticker, "one_day_move",
          lambda i: f"|move| {move[i]:.3f} > validate.max_move {cfg['max_move']} (unadjusted split?)", "kept")
    close = g["close"].to_numpy()
    same = np.concatenate([[False], close[1:] == close[:-1]])
    run_id = np.cumsum(~same)
    run_len = np.bincount(run_id)[run_id]
    run_end = np.concatenate([run_id[1:] != run_id[:-1], [True]])
    stale = run_end & (run_len >= cfg["max_stale_run"])
    _flag(findings, g, stale, ticker, "stale_close", lambda i: f"{run_len[i]} identical closes ending here", "kept")
    if g.empty:
        findings.append(Finding(ticker, None, "empty", "no usable rows", "fatal"))
    return g


def validate_prices(df: pd.DataFrame, cfg: dict[str, Any], tickers: list[str]) -> tuple[pd.DataFrame, list[Finding]]:
    """Run every check per ticker. Under `fail` any finding is fatal; under `repair` only the
    unrepairable ones (an empty ticker) are. Returns the cleaned table and the findings."""
    findings: list[Finding] = []
    absent = [t for t in tickers if t not in set(df["ticker"])]
    for t in absent:
        findings.append(Finding(t, None, "missing_ticker", "no rows for this ticker", "fatal"))
    parts = [_check_ticker(g, t, cfg, findings) for t, g in df.groupby("ticker", sort=False)]
    clean = pd.concat(parts, ignore_index=True) if parts else df.iloc[:0]
    return clean[COLUMNS], findings


def fatal_findings(findings: list[Finding], policy: str) -> list[Finding]:
    return [f for f in findings if policy == "fail" or f.action == "fatal"]


def report(df_in: pd.DataFrame, clean: pd.DataFrame, findings: list[Finding], policy: str) -> dict[str, Any]:
    fatal = fatal_findings(findings, policy)
    per_ticker = {}
    for t, g in clean.groupby("ticker", sort=False):
        per_ticker[t] = {"rows_in": int((df_in["ticker"] == t).sum()), "rows_out": len(g),
                         "first": _day(g["date"].min()), "last": _day(g["date"].max())}
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.rule] = counts.get(f.rule, 0) + 1
    return {"policy": policy, "passed": not fatal, "n_findings": len(findings), "by_rule": counts,
            "tickers": per_ticker, "findings": [asdict(f) for f in findings]}


def failure_message(fatal: list[Finding], report_path: str) -> str:
    first = fatal[0]
    where = f"{first.ticker} {first.date}" if first.date else first.ticker
    more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
    return (f"validation failed: {where} rule={first.rule}: {first.detail}{more}; all findings in {report_path}; "
            "validate.policy=repair fixes what can be fixed")
