"""Trading rule shared by the signal and the backtest: decision days and target weights."""
from __future__ import annotations

import numpy as np
import pandas as pd


def target_weights(pred: np.ndarray, threshold: float, allow_short: bool) -> np.ndarray:
    """+1 when the predicted log return exceeds `threshold`, -1 below `-threshold` if shorting,
    else 0 (flat); NaN stays NaN (no prediction: no order)."""
    pred = np.asarray(pred, dtype=float)
    w = np.where(pred > threshold, 1.0, 0.0)
    if allow_short:
        w = np.where(pred < -threshold, -1.0, w)
    return np.where(np.isnan(pred), np.nan, w)


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


def order_rows(targets: np.ndarray, fill: str) -> np.ndarray:
    """Move decision-day targets to the row they fill on: the same close, or the next open."""
    if fill == "close":
        return targets
    shifted = np.full_like(targets, np.nan)
    shifted[1:] = targets[:-1]
    return shifted
