"""The point-in-time universe in the backtest: the membership mask the predict stage marks in the
predictions (`lib.tables.IN_UNIVERSE`, from `data.membership`), its check on decision days, and the
buy-and-hold book over it.

Without the column every ticker is a member on every date and nothing changes. With it, a (date,
ticker) is a member where its row says 1; a pair without a row is not (so a table from which the
non-member rows were dropped gives the same mask). Every book (strategy, momentum, the baseline models)
ranks and buys members only (`lib.portfolio.targets.decision_targets`); buy-and-hold holds the same names.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.tables import IN_UNIVERSE


def universe_mask(predictions: pd.DataFrame, dates: pd.DatetimeIndex, tickers: list[str]) -> np.ndarray | None:
    """(dates x tickers) bool from the predictions' IN_UNIVERSE column (missing pair: not a member), or None
    without the column (every ticker a member)."""
    if IN_UNIVERSE not in predictions.columns:
        return None
    wide = predictions.pivot(index="date", columns="ticker", values=IN_UNIVERSE).reindex(index=dates, columns=tickers)
    return wide.fillna(0).to_numpy() > 0


def check_members(member: np.ndarray | None, rows: np.ndarray, dates: pd.DatetimeIndex) -> None:
    """Every decision row in `rows` has at least one member, else one line naming the first date without."""
    if member is None:
        return
    empty = np.asarray(rows)[~member[rows].any(axis=1)]
    if len(empty):
        raise PipelineError(
            f"backtest: no ticker is a member of the universe (data.membership) on the decision date "
            f"{dates[empty[0]].date()}: fix the membership file or shorten the period (data.start, data.end)"
        )


def buy_and_hold_targets(close: np.ndarray, decided: np.ndarray, member: np.ndarray | None) -> np.ndarray:
    """Buy-and-hold's targets (T, N), NaN where it places no order: equal weights of the tickers with a price
    on the first decision row `decided[0]`, then held. With a universe, the tickers are the members with a
    price, and the book is reset to equal weights of them on each later decision row where the membership
    differs from the decision row before (an index fund's reconstitution): leavers sold, joiners bought,
    held in between. Uses only the membership known on each row."""
    hold = np.full(close.shape, np.nan)
    rows = np.asarray(decided[:1])
    if member is not None and len(decided) > 1:
        changed = (member[decided[1:]] != member[decided[:-1]]).any(axis=1)
        rows = np.concatenate([rows, np.asarray(decided[1:])[changed]])
    alive = np.isfinite(close[rows])
    if member is not None:
        alive &= member[rows]
    hold[rows] = np.where(alive, 1.0 / np.maximum(alive.sum(axis=1, keepdims=True), 1), 0.0)
    return hold


def signal_members(signal: pd.DataFrame, tickers: list[str], as_of: str) -> np.ndarray | None:
    """The tickers of the next rebalance's signal that are members on its as-of date (signal.json's
    IN_UNIVERSE per signal), or None without the column; a ticker without a signal is not a member."""
    if IN_UNIVERSE not in signal.columns:
        return None
    member = signal.set_index("ticker")[IN_UNIVERSE].reindex(tickers).fillna(False).to_numpy(bool)
    if not member.any():
        raise PipelineError(
            f"backtest: no ticker is a member of the universe (data.membership) on the as-of date {as_of}: "
            "no ticker can get a target; fix the membership file"
        )
    return member
