"""The rebalance calendar shared by the signal and the backtest: decision days and when orders execute, on the
exchange's real sessions (`lib.data.calendar`, `data.calendar`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.data.calendar import DEFAULT_CALENDAR, closes_period, next_session, period_key


def decision_days(dates: pd.DatetimeIndex, rebalance: str, calendar: str = DEFAULT_CALENDAR) -> np.ndarray:
    """True on the last session of each week/month that the data has (every row for `daily`).

    The next row tells whether a row is its period's last. The final row, which has no next row, counts if the
    exchange calendar has no later session in its period: a Thursday before Good Friday closes its week, a
    Wednesday before 4 July does not. (Where the data has every session, this is the last real session of each
    period; where it misses the period's last sessions, its last row there decides.)"""
    dates = pd.DatetimeIndex(dates)
    if len(dates) == 0:
        return np.zeros(0, dtype=bool)
    key = period_key(dates, rebalance)
    return np.concatenate([key[:-1] != key[1:], closes_period(calendar, dates[-1:], rebalance)])


def execution_date(as_of: pd.Timestamp, fill: str, calendar: str = DEFAULT_CALENDAR) -> pd.Timestamp:
    """When orders decided at the close of `as_of` execute: that close, or the next real session's open
    (3 July 2024 -> 5 July 2024 on XNYS)."""
    if fill == "close":
        return pd.Timestamp(as_of)
    return next_session(calendar, as_of)
