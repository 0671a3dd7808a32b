"""Delistings: a ticker whose prices end before the data does (NaN from some date on) is sold
at its last close, with costs, on the first session without a price (reason `delisted`, and a
logged line); a ticker that starts later enters on its first order with a price."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from lib.portfolio.kernel import execute
from lib.portfolio.ledger import TradeLog
from lib.portfolio.market import ExecutionPrices

# The engines' delisting lines; lib.evaluation.study quiets this logger during its re-runs.
log = logging.getLogger(__name__)


def _log_delisting(t: int, asset: int, shares: float, price: float, dates: Any, tickers: Any) -> None:
    name = tickers[asset] if tickers is not None else f"ticker #{asset}"
    when = str(pd.Timestamp(dates[t]).date()) if dates is not None else f"row {t}"
    log.warning(
        "backtest: %s has no price from %s on: closed %.6g shares at its last close %.6g (delisted)",
        name,
        when,
        shares,
        price,
    )


def close_delisted(
    t: int,
    mk: ExecutionPrices,
    cash: float,
    held: np.ndarray,
    trades: TradeLog,
    cost_rate: float,
    dates: Any,
    tickers: Any,
) -> tuple[float, np.ndarray]:
    assets, last = mk.delist[t]
    assets, last = assets[held[assets] != 0.0], last[held[assets] != 0.0]
    if len(assets) == 0:
        return cash, held
    n_cols = held.shape[0]
    target, price = np.full(n_cols, np.nan), np.full(n_cols, np.nan)
    target[assets], price[assets] = 0.0, last
    before = held.copy()
    cash, held, delta = execute(cash, held, target, price, mk.fill_mark(t), cost_rate)
    trades.add(t, delta, price, "delisted")
    for i, p in zip(assets.tolist(), last.tolist(), strict=True):
        _log_delisting(t, i, before[i], p, dates, tickers)
    return cash, held
