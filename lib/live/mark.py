"""Marking the ledger to market, and the live section beside the backtest.

`mark_to_market` replays the recorded target weights of every ledger entry through the backtest's
own engine and costs (`lib.portfolio`: the kernel, fills at the open of the session after the
as-of close for `next_open`), on the clean prices as they are now: one paper book that starts in
cash (`backtest.initial_cash`) at the first entry's as-of close. An entry whose execution session
has no bar yet is pending. `live_section` judges that record on its own (equity, Sharpe with PSR,
live IC) and against the backtest's distribution; it never enters any backtest statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.evaluation.estimate import Section
from lib.evaluation.forecast import rank_ic
from lib.evaluation.performance import returns_of
from lib.evaluation.resampling import bootstrap_ci
from lib.evaluation.sharpe import probabilistic_sharpe_ratio, sharpe_moments
from lib.live.ledger import entries
from lib.portfolio.backtest import MarketData, portfolio_config
from lib.portfolio.event import run_event
from lib.portfolio.vectorized import run_vectorized

LABEL = (
    "live record: the only untuned period (each decision recorded in track/ledger.csv before its outcome); "
    "never part of any backtest statistic"
)
MIN_ENTRIES = 2


@dataclass(frozen=True)
class LiveRecord:
    equity: pd.DataFrame  # date, equity: from the first entry's as-of close to the last bar
    filled: int  # entries whose execution session has a bar
    pending: int  # entries still waiting for their execution session
    mismatched: list[str]  # "entry k: executes D but the next bar is E" (the data lacks a session)


def _targets(ledger: pd.DataFrame, mk: MarketData) -> tuple[np.ndarray, np.ndarray]:
    """(T, N) recorded target weights on each entry's as-of row (NaN elsewhere) and those rows."""
    rows = mk.dates.get_indexer(pd.to_datetime(entries(ledger)["as_of"]))
    if (rows < 0).any():
        k = int(np.argmax(rows < 0))
        raise PipelineError(
            f"track/ledger.csv: entry {k + 1}'s as-of date {entries(ledger)['as_of'][k]} is not in the price data"
        )
    wide = ledger.pivot(index="entry", columns="ticker", values="target_weight").reindex(columns=mk.tickers)
    targets = np.full(mk.close.shape, np.nan)
    targets[rows] = wide.to_numpy(float)
    return targets, rows


def mark_to_market(
    ledger: pd.DataFrame, prices: pd.DataFrame, cfg: dict[str, Any], horizon: int, periods_per_year: int
) -> LiveRecord:
    """The ledger's decisions through the backtest's engine and costs (`cfg`: the backtest section)."""
    if ledger.empty:
        return LiveRecord(pd.DataFrame({"date": pd.DatetimeIndex([]), "equity": []}), 0, 0, [])
    tickers = sorted(ledger["ticker"].unique())
    mk = MarketData.from_prices(prices, tickers)
    pcfg = portfolio_config(cfg, horizon, periods_per_year)
    targets, rows = _targets(ledger, mk)
    kw = {"close": mk.close, "open_": mk.open, "cfg": pcfg, "dates": mk.dates, "tickers": tickers}
    if pcfg.path_dependent:
        res = run_event(targets, high=mk.high, low=mk.low, **kw)
    else:
        res = run_vectorized(targets, **kw)
    lag = 0 if pcfg.fill == "close" else 1
    fill_rows = rows + lag
    filled = fill_rows < len(mk.dates)
    executes = entries(ledger)["executes"].to_numpy()
    mismatched = [
        f"entry {k + 1}: executes {executes[k]} but the next bar is {mk.dates[r].date()}"
        for k, r in enumerate(fill_rows)
        if filled[k] and lag and str(mk.dates[r].date()) != executes[k]
    ]
    start = int(rows[0])
    equity = pd.DataFrame({"date": mk.dates[start:], "equity": res.equity[start:]})
    return LiveRecord(equity, int(filled.sum()), int((~filled).sum()), mismatched)


def live_predictions(ledger: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """date (as-of), ticker, prediction, label: the label (realised forward log return) from the
    features table as it is now, NaN until the horizon's bars have arrived."""
    pred = ledger[["as_of", "ticker", "prediction"]].rename(columns={"as_of": "date"})
    pred = pred.assign(date=pd.to_datetime(pred["date"]))
    labels = features[["date", "ticker", "label"]]
    return pred.merge(labels, on=["date", "ticker"], how="left")


def _ic(pred: pd.DataFrame) -> float | None:
    return rank_ic(pred["prediction"].to_numpy(float), pred["label"].to_numpy(float)) if len(pred) else None


def live_section(
    record: LiveRecord,
    live_pred: pd.DataFrame,
    backtest_equity: pd.DataFrame,
    backtest_pred: pd.DataFrame,
    evaluate_cfg: dict[str, Any],
) -> Section:
    """The live record beside the backtest, a pure function. `record`: `mark_to_market`; `live_pred`:
    `live_predictions`; `backtest_equity`: reports/backtest/equity.csv (its `strategy` column);
    `backtest_pred`: data/predictions.parquet (out of sample); `evaluate_cfg`: the evaluate section.
    Sharpe annualised by sqrt(periods_per_year) on daily returns in excess of risk_free / ppy; PSR =
    P(true Sharpe > 0) (lib.evaluation.sharpe); `consistent` (1/0): the live mean daily return lies inside
    the (alpha/2, 1 - alpha/2) stationary-block-bootstrap interval of the mean of as many consecutive
    backtest daily returns (the first n of each resample of the backtest's strategy returns). Undefined
    values are None with their reason (e.g. fewer than 2 entries filled)."""
    ppy, rf = evaluate_cfg["periods_per_year"], evaluate_cfg["risk_free"] / evaluate_cfg["periods_per_year"]
    e = record.equity
    r = returns_of(e["equity"].to_numpy(float)) if len(e) > 1 else np.zeros(0)
    out = Section()
    out.add("label", LABEL)
    for key, row in (("start", 0), ("end", -1)):
        if len(e):
            out.add(key, str(e["date"].iloc[row].date()))
        else:
            out.put(key, None, "no ledger entry yet")
    out.put("entries_filled", record.filled)
    out.put("entries_pending", record.pending)
    out.put("sessions", len(r))
    out.put("execution_mismatches", len(record.mismatched))
    no_ic = "fewer than 3 labelled live predictions, or no spread in them"
    out.put("live_ic", _ic(live_pred.dropna(subset=["label"])), no_ic)
    out.put("backtest_ic", _ic(backtest_pred.dropna(subset=["label"])), no_ic)
    out.put("labelled_live_predictions", int(live_pred["label"].notna().sum()))
    if record.filled < MIN_ENTRIES:
        why = f"fewer than {MIN_ENTRIES} weekly entries filled ({record.filled})"
        for key in ("equity_end", "total_return", "mean_daily_return", "sharpe", "psr", "consistent"):
            out.put(key, None, why)
        return out
    mom = sharpe_moments(r, rf)
    mean = float(r.mean())
    ci = _backtest_interval(backtest_equity, len(r), evaluate_cfg)
    out.put("equity_end", float(e["equity"].iloc[-1]))
    out.put("total_return", float(e["equity"].iloc[-1] / e["equity"].iloc[0] - 1.0))
    out.put("mean_daily_return", mean)
    out.put(
        "sharpe", None if mom.sr is None else mom.sr * math.sqrt(ppy), "zero volatility or fewer than 3 daily returns"
    )
    out.add("psr", probabilistic_sharpe_ratio(mom.sr, mom.n, mom.skew, mom.kurtosis))
    out.interval("backtest_interval", ci)
    inside = None if ci["low"] is None else int(ci["low"] <= mean <= ci["high"])
    out.put("consistent", inside, ci["reason"])
    return out


def _backtest_interval(backtest_equity: pd.DataFrame, n: int, cfg: dict[str, Any]) -> dict:
    """Bootstrap interval of the mean of n consecutive-block-resampled backtest daily returns."""
    bt = returns_of(backtest_equity["strategy"].to_numpy(float))
    return bootstrap_ci(bt, lambda x: float(np.mean(x[:n])), cfg["bootstrap_reps"], cfg["seed"], cfg["alpha"])
