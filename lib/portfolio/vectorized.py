"""The VECTORIZED engine (`run_vectorized`): targets known up front, a loop over order rows only,
vectorised across tickers, array slices for the days in between (as the per-ticker engine it
replaced did; that engine is kept as the test oracle `tests.helpers.slice_simulate`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lib.portfolio.config import PortfolioConfig, as_panel, config_error
from lib.portfolio.delisting import close_delisted
from lib.portfolio.kernel import execute, execute_one
from lib.portfolio.ledger import PortfolioResult, TradeLog, portfolio_result
from lib.portfolio.market import execution_prices


def run_vectorized(
    targets: Any,
    *,
    close: Any,
    open_: Any = None,
    cfg: PortfolioConfig | None = None,
    dates: Any = None,
    tickers: Any = None,
) -> PortfolioResult:
    """VECTORIZED engine: decision-day `targets` (T, N) known up front (NaN = no order) are
    moved to their fill row (the same close, or the next open) and executed by the kernel; the loop
    runs over order rows (and delisting rows) only, days in between are array slices."""
    cfg = cfg or PortfolioConfig()
    if cfg.path_dependent:
        raise config_error(
            "engine",
            "vectorized cannot run path-dependent controls (stop_loss, trailing_stop, "
            "drawdown_cut, daily_limits): use event or auto",
        )
    close = as_panel(close, "close")
    open_ = None if open_ is None else as_panel(open_, "open", close.shape)
    targets = as_panel(targets, "targets", close.shape)
    mk = execution_prices(close, open_, cfg.fill)
    n_rows, n_cols = close.shape
    cost_rate, limits = cfg.cost_rate, cfg.limits
    lag = 1 if mk.lag else 0  # order row t fills the targets decided on row t - lag
    has_order = np.zeros(n_rows + lag, dtype=bool)
    has_order[lag:] = ~np.isnan(np.fmin.reduce(targets, axis=1))  # any target on the row (one pass)
    has_order = has_order[:n_rows]
    rows = np.flatnonzero(has_order).tolist()
    if mk.delist:
        rows = sorted(set(rows) | set(mk.delist))
    cash, held = float(cfg.initial_cash), np.zeros(n_cols)
    equity, cash_s, shares = np.empty(n_rows), np.empty(n_rows), np.empty((n_rows, n_cols))
    trades = TradeLog(cost_rate)
    prev = 0
    if n_cols == 1 and not mk.delist:  # one ticker: the same kernel in Python floats (execute_one)
        mark, h = mk.mark[:, 0], 0.0
        weight, price = targets[:, 0].tolist(), mk.fill[:, 0].tolist()
        for t in rows:
            equity[prev:t] = cash + mark[prev:t] * h
            cash_s[prev:t] = cash
            shares[prev:t, 0] = h
            cash, h, d = execute_one(cash, h, weight[t - lag], price[t], cost_rate)
            if d != 0.0:
                trades.add(t, (d,), (price[t],), "rebalance")
            prev = t
        equity[prev:] = cash + mark[prev:] * h
        cash_s[prev:] = cash
        shares[prev:, 0] = h
        return portfolio_result(equity, cash_s, shares, mk.mark, trades, "vectorized", dates, tickers)
    for t in rows:
        equity[prev:t] = cash + mk.mark[prev:t] @ held
        cash_s[prev:t] = cash
        shares[prev:t] = held
        if t in mk.delist:
            cash, held = close_delisted(t, mk, cash, held, trades, cost_rate, dates, tickers)
        if has_order[t]:
            cash, held, delta = execute(cash, held, targets[t - lag], mk.fill[t], mk.fill_mark(t), cost_rate, limits)
            trades.add(t, delta, mk.fill[t], "rebalance")
        prev = t
    equity[prev:] = cash + mk.mark[prev:] @ held
    cash_s[prev:] = cash
    shares[prev:] = held
    return portfolio_result(equity, cash_s, shares, mk.mark, trades, "vectorized", dates, tickers)
