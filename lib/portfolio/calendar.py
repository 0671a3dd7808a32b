"""The rebalance calendar shared by the signal and the backtest: decision days and when orders execute."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _period(dates: pd.DatetimeIndex, rebalance: str) -> np.ndarray:
    if rebalance == "weekly":
        iso = dates.isocalendar()
        return iso["year"].to_numpy(np.int64) * 100 + iso["week"].to_numpy(np.int64)
    if rebalance == "monthly":
        return dates.year.to_numpy(np.int64) * 12 + dates.month.to_numpy(np.int64)
    return np.arange(len(dates), dtype=np.int64)


def decision_days(dates: pd.DatetimeIndex, rebalance: str) -> np.ndarray:
    """True on the last session of each week/month (every session for `daily`).

    The next row tells whether a session is the period's last. For the final row, which has
    no next row, the calendar decides: it counts if the next weekday opens a new period.
    """
    dates = pd.DatetimeIndex(dates)
    if len(dates) == 0:
        return np.zeros(0, dtype=bool)
    key = _period(dates, rebalance)
    nxt = pd.DatetimeIndex([np.busday_offset(dates[-1].date(), 1, roll="forward")])
    last_key = _period(dates[-1:].append(nxt), rebalance)
    return np.concatenate([key[:-1] != key[1:], [last_key[0] != last_key[1]]])


def execution_date(as_of: pd.Timestamp, fill: str) -> pd.Timestamp:
    """When orders decided at the close of `as_of` execute: that close, or the next weekday's open
    (exchange holidays are not known here: the fill is then the first session after it)."""
    if fill == "close":
        return pd.Timestamp(as_of)
    return pd.Timestamp(np.busday_offset(pd.Timestamp(as_of).date(), 1, roll="forward"))
