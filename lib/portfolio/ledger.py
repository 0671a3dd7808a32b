"""The trade log (`TradeLog`, fills in the order they happen) and the result of a run
(`PortfolioResult`: equity, cash, shares, marks; trades and weights built on first use)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

REASONS = ("rebalance", "stop_loss", "trailing_stop", "drawdown_cut", "drawdown_restore", "delisted", "cap")
TRADE_COLUMNS = ["row", "date", "asset", "ticker", "side", "shares", "price", "notional", "cost", "reason"]


@dataclass(frozen=True)
class PortfolioResult:
    equity: np.ndarray  # (T,) cash + positions at each close, after the day's fills
    cash: np.ndarray  # (T,)
    shares: np.ndarray  # (T, N) held after the day's fills
    marks: np.ndarray  # (T, N) the close each share is valued at (carried over gaps, 0 before the start)
    engine: str  # vectorized | event
    log: TradeLog = field(repr=False, compare=False)
    dates: Any = field(default=None, repr=False, compare=False)
    tickers: Any = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def trades(self) -> pd.DataFrame:
        """One row per fill (TRADE_COLUMNS), in the order they happened; side, reason and ticker
        are categorical. Built from the engine's log on first use."""
        return self.log.frame(self.dates, self.tickers, self.shares.shape[1])

    @functools.cached_property
    def weights(self) -> np.ndarray:
        """(T, N) weight of each ticker at the close: shares * close / equity (computed on first use)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.shares * self.marks / np.where(self.equity != 0, self.equity, np.nan)[:, None]


class TradeLog:
    """Fills in the order they happen. Each call stores a whole row (shares traded per ticker,
    0 = none, and the prices), so the hot loop does no indexing; the table is built once."""

    def __init__(self, cost_rate: float) -> None:
        self.cost_rate = cost_rate
        self.rows: list[int] = []
        self.reasons: list[int] = []
        self.deltas: list[Any] = []
        self.prices: list[Any] = []

    def add(self, row: int, delta: Any, price: Any, reason: str) -> None:
        """delta, price: (N,) shares traded (0 = no fill) and fill prices of one call."""
        self.rows.append(row)
        self.reasons.append(REASONS.index(reason))
        self.deltas.append(delta)
        self.prices.append(price)

    def frame(self, dates: Any, tickers: Any, n_cols: int) -> pd.DataFrame:
        deltas = np.array(self.deltas, dtype=float).reshape(-1, n_cols)
        prices = np.array(self.prices, dtype=float).reshape(-1, n_cols)
        flat = np.flatnonzero(deltas)
        call, asset = np.divmod(flat, n_cols)
        shares, price = deltas.ravel()[flat], prices.ravel()[flat]
        rows = np.array(self.rows, dtype=np.int64)[call] if len(call) else np.zeros(0, np.int64)
        reasons = np.array(self.reasons, dtype=np.int8)[call] if len(call) else np.zeros(0, np.int8)
        notional = np.abs(shares) * price
        if tickers is None:
            ticker: Any = asset
        elif len(set(tickers)) == len(tickers):
            ticker = pd.Categorical.from_codes(asset, categories=list(tickers))
        else:
            ticker = np.asarray(tickers, dtype=object)[asset]
        return pd.DataFrame(
            {
                "row": rows,
                "date": rows if dates is None else pd.DatetimeIndex(dates)[rows],
                "asset": asset,
                "ticker": ticker,
                "side": pd.Categorical.from_codes((shares < 0).astype(np.int8), categories=["buy", "sell"]),
                "shares": shares,
                "price": price,
                "notional": notional,
                "cost": notional * self.cost_rate,
                "reason": pd.Categorical.from_codes(reasons, categories=list(REASONS)),
            }
        )


def portfolio_result(
    equity: np.ndarray,
    cash: np.ndarray,
    shares: np.ndarray,
    mark: np.ndarray,
    trades: TradeLog,
    engine: str,
    dates: Any,
    tickers: Any,
) -> PortfolioResult:
    return PortfolioResult(equity, cash, shares, mark, engine, trades, dates, tickers)
