"""Weekly-rebalanced backtest: target weights -> fills -> daily equity, with costs.

Accounting (the same as the numpy reference in the peer bench and vectorbt's
`targetpercent`): each ticker trades its own equal slice of the starting cash. On an order
row, E = cash + shares * P_fill, target shares = w * E / P_fill; a buy is capped by cash
including costs (so w = 1 from flat buys E / (P (1 + c)) shares); cost = c * |traded
notional| is paid from cash. Fractional shares; float dust (|delta| <= 1e-9 relative) is
skipped. Equity is marked at the close. The loop runs over order rows only (about one a
week) and is vectorised across tickers; days in between are filled by array slices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.prices import adjusted, panel
from lib.strategy import decision_days, target_weights
from lib.tables import BOOKS, STRATEGY, weight_column

DUST_REL, DUST_ABS = 1e-9, 1e-12


@dataclass(frozen=True)
class Simulation:
    equity: np.ndarray  # (T, N) per-ticker slice value at each close
    shares: np.ndarray  # (T, N) shares held after each day's fills
    trades: pd.DataFrame  # row, asset, shares, price, notional, cost


def simulate(close: np.ndarray, fill_price: np.ndarray, orders: np.ndarray, cost_rate: float,
             cash_per_asset: float) -> Simulation:
    """Run target-weight `orders` ((T, N), NaN = no order) filled at `fill_price` on the same row.

    A NaN fill price (ticker not trading that day) skips its order; a NaN close before a
    ticker's first bar counts as 0, which is harmless because nothing can be held yet."""
    close = np.nan_to_num(pd.DataFrame(close).ffill().to_numpy(float))
    price, w = np.asarray(fill_price, float), np.asarray(orders, float)
    n_rows, n_assets = close.shape
    cash = np.full(n_assets, float(cash_per_asset))
    held = np.zeros(n_assets)
    equity, shares = np.empty((n_rows, n_assets)), np.empty((n_rows, n_assets))
    log: list[tuple[np.ndarray, ...]] = []
    prev = 0
    for t in np.flatnonzero(~np.isnan(w).all(axis=1)):
        equity[prev:t] = cash + held * close[prev:t]
        shares[prev:t] = held
        p = price[t]
        live = ~np.isnan(w[t]) & (p > 0)
        p = np.where(live, p, 1.0)
        value = cash + held * p
        target = np.where(live, np.nan_to_num(w[t]) * value / p, held)
        delta = target - held
        dust = np.abs(delta) <= np.maximum(DUST_REL * np.maximum(np.abs(held), np.abs(target)), DUST_ABS)
        delta[dust | ~live] = 0.0
        buy = delta > 0
        delta = np.where(buy, np.minimum(delta, np.maximum(cash, 0.0) / (p * (1.0 + cost_rate))), delta)
        notional = np.abs(delta) * p
        cost = notional * cost_rate
        cash = cash - delta * p - cost
        held = held + delta
        traded = np.flatnonzero(delta != 0)
        log.append((np.full(len(traded), t), traded, delta[traded], p[traded], notional[traded], cost[traded]))
        prev = t
    equity[prev:] = cash + held * close[prev:]
    shares[prev:] = held
    cols = ["row", "asset", "shares", "price", "notional", "cost"]
    trades = pd.DataFrame(dict(zip(cols, map(np.concatenate, zip(*log, strict=True)), strict=True))
                          if log else {c: [] for c in cols})
    return Simulation(equity, shares, trades)


def order_rows(targets: np.ndarray, fill: str) -> np.ndarray:
    """Move decision-day targets to the row they fill on: the same close, or the next open."""
    if fill == "close":
        return targets
    shifted = np.full_like(targets, np.nan)
    shifted[1:] = targets[:-1]
    return shifted


@dataclass(frozen=True)
class BacktestResult:
    equity: pd.DataFrame  # date, <book> ..., <book>_weight ... (see lib.tables)
    weights: pd.DataFrame  # date, ticker, weight (strategy, held after the day's fills, at the close)
    trades: pd.DataFrame  # date, book, ticker, side, shares, price, notional, cost


def run_backtest(prices: pd.DataFrame, predictions: pd.DataFrame, cfg: dict[str, Any], horizon: int) -> BacktestResult:
    """Strategy (model predictions), buy-and-hold benchmark and a momentum baseline on the same
    dates, prices and costs, all starting on the same fill: the strategy's first order.

    The window runs from the close before that fill (every book still in cash) to the last price."""
    if predictions.empty:
        raise PipelineError("backtest: no predictions (run the predict stage)")
    tickers = sorted(predictions["ticker"].unique())
    missing = sorted(set(tickers) - set(prices["ticker"]))
    if missing:
        raise PipelineError(f"backtest: no prices for ticker(s) {missing}")
    px = adjusted(prices[prices["ticker"].isin(tickers)])
    close_df = panel(px, "adj_close", tickers)
    dates = close_df.index
    close = close_df.to_numpy()
    fill_price = close if cfg["fill"] == "close" else panel(px, "adj_open", tickers).to_numpy()
    decide = (decision_days(dates, cfg["rebalance"]) & (dates >= predictions["date"].min()))[:, None]
    pred = predictions.pivot(index="date", columns="ticker", values="prediction").reindex(index=dates, columns=tickers)
    momentum = np.log(close_df).diff(horizon).to_numpy()  # trailing return, known at the close

    def book(signal: np.ndarray) -> np.ndarray:
        return order_rows(np.where(decide, target_weights(signal, cfg["threshold"], cfg["allow_short"]), np.nan),
                          cfg["fill"])

    books = {STRATEGY: book(pred.to_numpy())}
    ordered = np.flatnonzero(~np.isnan(books[STRATEGY]).all(axis=1))
    if len(ordered) == 0:
        raise PipelineError("backtest: the predictions contain no decision day with a fill after it; "
                            "predict a longer period or use backtest.rebalance=daily")
    first = ordered[0]
    hold = np.full(close.shape, np.nan)
    hold[first] = 1.0
    books["benchmark"] = hold
    books["momentum"] = np.where(np.arange(len(dates))[:, None] >= first, book(momentum), np.nan)
    window = slice(max(first - 1, 0), None)  # the close before the first fill: all books in cash
    dates, close, fill_price = dates[window], close[window], fill_price[window]
    cost_rate = (cfg["commission_bps"] + cfg["slippage_bps"]) / 1e4
    cash = cfg["initial_cash"] / len(tickers)
    out = pd.DataFrame({"date": dates})
    trades, weights = [], None
    for name in BOOKS:
        sim = simulate(close, fill_price, books[name][window], cost_rate, cash)
        total = sim.equity.sum(axis=1)
        exposure = np.nan_to_num(sim.shares * close)
        out[name] = total
        out[weight_column(name)] = exposure.sum(axis=1) / total
        t = sim.trades
        trades.append(pd.DataFrame({
            "date": dates[t["row"].to_numpy(int)], "book": name, "ticker": np.asarray(tickers)[t["asset"].to_numpy(int)],
            "side": np.where(t["shares"] > 0, "buy", "sell"), "shares": t["shares"], "price": t["price"],
            "notional": t["notional"], "cost": t["cost"]}))
        if name == STRATEGY:
            slice_w = exposure / np.where(sim.equity != 0, sim.equity, np.nan)
            weights = (pd.DataFrame(slice_w, index=dates.rename("date"), columns=pd.Index(tickers, name="ticker"))
                       .stack().rename("weight").reset_index())
    return BacktestResult(out[["date", *BOOKS, *map(weight_column, BOOKS)]], weights,
                          pd.concat(trades, ignore_index=True))
