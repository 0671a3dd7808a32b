"""The three books of a backtest, the next rebalance's orders, and P&L attribution.

Every book runs through the one-pool portfolio engines (`lib.portfolio.run`) on the same prices,
calendar and costs: the strategy (the model's predictions through the policy in
`backtest.*`), buy-and-hold (equal weights of the tickers alive at the first fill, never
rebalanced) and a momentum baseline (the same policy on the trailing `horizon` return, known at
the close). All three start on the strategy's first fill; the reported window opens at the
close before it, every book still in cash. The baseline models' books (`run_baseline_books`: other model
families' predictions on the same rows) run through the strategy's policy on the same calendar and window.
With a point-in-time universe (`data.membership`, marked in the predictions: `lib.portfolio.universe`) every
book ranks and buys members only, and buy-and-hold is reset to equal weights of the members whenever they change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.data.prices import adjusted, wide_table
from lib.errors import PipelineError
from lib.portfolio.calendar import decision_days
from lib.portfolio.config import PortfolioConfig
from lib.portfolio.ledger import PortfolioResult
from lib.portfolio.run import run_portfolio
from lib.portfolio.targets import target_book
from lib.portfolio.universe import buy_and_hold_targets, check_members, signal_members, universe_mask
from lib.portfolio.vectorized import run_vectorized
from lib.tables import BOOKS, KEYS, STRATEGY, weight_column

TRADES = ["date", "book", "ticker", "side", "shares", "price", "notional", "cost", "reason"]
ORDERS = [
    "ticker",
    "price",
    "shares_now",
    "weight_now",
    "target_weight",
    "target_shares",
    "side",
    "shares",
    "notional",
    "cost",
    "note",
]


@dataclass(frozen=True)
class MarketData:
    """Adjusted daily prices as (dates x tickers) arrays; NaN where a ticker has no bar."""

    dates: pd.DatetimeIndex
    tickers: list[str]
    close: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray

    @classmethod
    def from_prices(cls, prices: pd.DataFrame, tickers: list[str]) -> MarketData:
        missing = sorted(set(tickers) - set(prices["ticker"].unique()))  # unique first: no per-row str objects
        if missing:
            raise PipelineError(f"backtest: no prices for ticker(s) {missing}")
        px = adjusted(prices[prices["ticker"].isin(tickers)])
        close = wide_table(px, "adj_close", tickers)
        return cls(
            close.index,
            list(tickers),
            close.to_numpy(),
            *(wide_table(px, c, tickers).to_numpy() for c in ("adj_open", "adj_high", "adj_low")),
        )


@dataclass(frozen=True)
class BacktestResult:
    equity: pd.DataFrame  # date, <book> ..., <book>_weight ... (gross exposure / equity)
    weights: pd.DataFrame  # date, ticker, weight (strategy, held after the day's fills, at the close)
    trades: pd.DataFrame  # TRADES
    strategy: PortfolioResult  # the strategy book over the whole price history (for orders, attribution)
    market: MarketData
    start: int  # first row of the reported window


def portfolio_config(cfg: dict[str, Any], horizon: int, periods_per_year: int) -> PortfolioConfig:
    return PortfolioConfig.from_params({**cfg, "horizon": horizon, "periods_per_year": periods_per_year})


@dataclass(frozen=True)
class _Grid:
    """The strategy's calendar, shared by every book run on the model's predictions' rows: the prices, the
    config, the model's predictions (dates x tickers), the decision days from the first one with a
    prediction, and the first fill row."""

    market: MarketData
    pcfg: PortfolioConfig
    pred: pd.DataFrame
    decide: np.ndarray
    decided: np.ndarray
    first: int
    member: np.ndarray | None = None  # the point-in-time universe (lib.portfolio.universe); None: every ticker

    def book(self, pred: np.ndarray) -> PortfolioResult:
        """A book of `pred` (dates x tickers) through the policy, engine, prices and costs, on these decision days."""
        mk = self.market
        return run_portfolio(
            pred,
            close=mk.close,
            open_=mk.open,
            high=mk.high,
            low=mk.low,
            cfg=self.pcfg,
            dates=mk.dates,
            tickers=mk.tickers,
            decide=self.decide,
            member=self.member,
        )

    def wide(self, predictions: pd.DataFrame) -> pd.DataFrame:
        return predictions.pivot(index="date", columns="ticker", values="prediction").reindex(
            index=self.market.dates, columns=self.market.tickers
        )


def _grid(
    prices: pd.DataFrame, predictions: pd.DataFrame, cfg: dict[str, Any], horizon: int, periods_per_year: int
) -> _Grid:
    if predictions.empty:
        raise PipelineError("backtest: no predictions (run the predict stage)")
    tickers = sorted(predictions["ticker"].unique())
    mk = MarketData.from_prices(prices, tickers)
    pcfg = portfolio_config(cfg, horizon, periods_per_year)
    pred = predictions.pivot(index="date", columns="ticker", values="prediction").reindex(
        index=mk.dates, columns=tickers
    )
    decide = decision_days(mk.dates, pcfg.rebalance, pcfg.calendar) & (mk.dates >= predictions["date"].min())
    decided = np.flatnonzero(decide & pred.notna().any(axis=1).to_numpy())
    fill_lag = 0 if pcfg.fill == "close" else 1
    if len(decided) == 0 or decided[0] + fill_lag >= len(mk.dates):
        raise PipelineError(
            "backtest: the predictions contain no decision day with a fill after it; "
            "predict a longer period or use backtest.rebalance=daily"
        )
    decide &= np.arange(len(mk.dates)) >= decided[0]
    member = universe_mask(predictions, mk.dates, tickers)
    check_members(member, decided, mk.dates)
    return _Grid(mk, pcfg, pred, decide, decided, decided[0] + fill_lag, member)


def _book_trades(name: str, res: PortfolioResult, start: int) -> pd.DataFrame:
    """A book's fills from row `start` on, as TRADES."""
    t = res.trades
    t = t[t["row"] >= start]
    return pd.DataFrame(
        {
            "date": t["date"].to_numpy(),
            "book": name,
            "ticker": t["ticker"].astype(str),
            "side": t["side"].astype(str),
            "shares": t["shares"],
            "price": t["price"],
            "notional": t["notional"],
            "cost": t["cost"],
            "reason": t["reason"].astype(str),
        }
    )


def run_backtest(
    prices: pd.DataFrame, predictions: pd.DataFrame, cfg: dict[str, Any], horizon: int, periods_per_year: int = 252
) -> BacktestResult:
    """Strategy, buy-and-hold and momentum on the same dates, prices and costs, from the same first fill."""
    g = _grid(prices, predictions, cfg, horizon, periods_per_year)
    mk, pcfg, decided, first = g.market, g.pcfg, g.decided, g.first
    tickers = mk.tickers
    momentum = np.log(pd.DataFrame(mk.close).ffill()).diff(horizon).to_numpy()  # trailing return, known at t
    hold = buy_and_hold_targets(mk.close, decided, g.member)
    books = {
        STRATEGY: g.book(g.pred.to_numpy()),
        "benchmark": run_vectorized(
            hold,
            close=mk.close,
            open_=mk.open,
            cfg=PortfolioConfig(
                fill=pcfg.fill,
                commission_bps=pcfg.commission_bps,
                slippage_bps=pcfg.slippage_bps,
                initial_cash=pcfg.initial_cash,
            ),
            dates=mk.dates,
            tickers=tickers,
        ),
        "momentum": g.book(momentum),
    }
    start = max(first - 1, 0)
    dates = mk.dates[start:]
    out = pd.DataFrame({"date": dates})
    trades = []
    for name in BOOKS:
        res = books[name]
        out[name] = res.equity[start:]
        out[weight_column(name)] = np.nansum(np.abs(res.weights[start:]), axis=1)
        trades.append(_book_trades(name, res, start))
    w = books[STRATEGY].weights[start:]
    weights = (
        pd.DataFrame(w, index=dates.rename("date"), columns=pd.Index(tickers, name="ticker"))
        .stack()
        .rename("weight")
        .reset_index()
    )
    return BacktestResult(
        out[["date", *BOOKS, *map(weight_column, BOOKS)]],
        weights,
        pd.concat(trades, ignore_index=True)[TRADES],
        books[STRATEGY],
        mk,
        start,
    )


def run_baseline_books(
    prices: pd.DataFrame,
    predictions: pd.DataFrame,
    books: Mapping[str, pd.DataFrame],
    cfg: dict[str, Any],
    horizon: int,
    periods_per_year: int = 252,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each of `books` (name -> its predictions: date, ticker, prediction, on the model's rows) through the
    strategy's policy, engine, prices and costs, on the strategy's decision days and reported window, both set
    by the model's `predictions` as in `run_backtest`. Returns the equity (date, <book>..., <book>_weight...),
    row for row on `run_backtest`'s dates, and the books' trades (TRADES)."""
    g = _grid(prices, predictions, cfg, horizon, periods_per_year)
    start = max(g.first - 1, 0)
    out = pd.DataFrame({"date": g.market.dates[start:]})
    keys = pd.MultiIndex.from_frame(predictions[KEYS]).sort_values()
    trades = [pd.DataFrame(columns=TRADES)]
    for name, book in books.items():
        if not pd.MultiIndex.from_frame(book[KEYS]).sort_values().equals(keys):
            raise PipelineError(
                f"backtest: book {name} has {len(book)} predictions, not on the model's {len(predictions)} "
                "(date, ticker) rows; rerun the predict stage"
            )
        res = g.book(g.wide(book).to_numpy())
        out[name] = res.equity[start:]
        out[weight_column(name)] = np.nansum(np.abs(res.weights[start:]), axis=1)
        trades.append(_book_trades(name, res, start))
    columns = ["date", *books, *map(weight_column, books)]
    return out[columns], pd.concat([t for t in trades if len(t)] or trades[:1], ignore_index=True)[TRADES]


def attribution(result: BacktestResult) -> pd.DataFrame:
    """Where the strategy's P&L came from, per ticker over the reported window: mark-to-market P&L
    of long and of short holdings (shares held at the previous close x the close-to-close move;
    fills at an open add the open-to-close part of the fill day), costs paid, and the net as a
    fraction of the starting equity. The nets sum to the total return."""
    res, mk, s = result.strategy, result.market, result.start
    marks, shares = res.marks[s:], res.shares[s:]
    held = shares[:-1]
    pnl = held * (marks[1:] - marks[:-1])  # position at the previous close, marked to this close
    trades = res.trades[res.trades["row"] > s]
    n = len(mk.tickers)
    # a fill at price p on row t: the traded shares earn (close_t - p) that day
    fill_pnl = np.zeros(n)
    fill_rows = trades["row"].to_numpy(int)
    np.add.at(
        fill_pnl,
        trades["asset"].to_numpy(int),
        trades["shares"].to_numpy() * (res.marks[fill_rows, trades["asset"].to_numpy(int)] - trades["price"]),
    )
    costs = np.bincount(trades["asset"].to_numpy(int), weights=trades["cost"].to_numpy(), minlength=n)
    long_ = np.where(held > 0, pnl, 0.0).sum(axis=0)
    short = np.where(held < 0, pnl, 0.0).sum(axis=0)
    net = long_ + short + fill_pnl - costs
    return pd.DataFrame(
        {
            "ticker": mk.tickers,
            "pnl_long": long_,
            "pnl_short": short,
            "pnl_fill_day": fill_pnl,
            "costs": costs,
            "net": net,
            "contribution": net / res.equity[s],
        }
    )


def read_positions(path: Any, tickers: list[str], allow_short: bool) -> tuple[float, np.ndarray] | None:
    """`positions.csv` (columns ticker, shares; the row `CASH` holds cash): the user's holdings, or None."""
    path = Path(path)
    if not path.exists():
        return None
    df = pd.read_csv(path, dtype={"ticker": str})
    if list(df.columns) != ["ticker", "shares"]:
        raise PipelineError(f"{path}: columns must be ticker,shares (a CASH row for cash), got {list(df.columns)}")
    shares = pd.to_numeric(df["shares"], errors="coerce")
    for i in np.flatnonzero(shares.isna().to_numpy()):
        raise PipelineError(f"{path}, line {i + 2}: shares {df['shares'].iloc[i]!r} is not a number")
    cash_rows = df["ticker"].str.upper() == "CASH"
    unknown = sorted(set(df.loc[~cash_rows, "ticker"]) - set(tickers))
    if unknown:
        raise PipelineError(f"{path}: unknown ticker(s) {unknown}; the pipeline trades {tickers}")
    bad = df.loc[~cash_rows & (shares < 0)] if not allow_short else df.iloc[:0]
    if len(bad):
        raise PipelineError(
            f"{path}, line {bad.index[0] + 2}: negative share count {bad['shares'].iloc[0]} for "
            f"{bad['ticker'].iloc[0]} (backtest.allow_short is false)"
        )
    held = np.zeros(len(tickers))
    for t, sh in zip(df.loc[~cash_rows, "ticker"], shares[~cash_rows], strict=True):
        held[tickers.index(t)] += sh
    return float(shares[cash_rows].sum()), held


def next_orders(
    result: BacktestResult,
    signal: pd.DataFrame,
    cfg: dict[str, Any],
    horizon: int,
    periods_per_year: int,
    holdings: tuple[float, np.ndarray] | None,
) -> pd.DataFrame:
    """The orders that move today's holdings to the policy's targets for the next rebalance.

    Targets come from the same policy as the backtest (rule, filters, sizing, limits), with the
    final model's predictions (`signal`: ticker, prediction) at the last close. Holdings are the
    user's (`holdings`) or the strategy's last state. Shares and notionals are estimated at the
    last close (the fill price is not known yet); an order smaller than `backtest.min_order_value`
    is dropped, and the `note` column says so."""
    mk, res = result.market, result.strategy
    pcfg = portfolio_config(cfg, horizon, periods_per_year)
    pred = np.full(mk.close.shape, np.nan)
    pred[-1] = signal.set_index("ticker")["prediction"].reindex(mk.tickers).to_numpy()
    decide = np.zeros(len(mk.dates), bool)
    decide[-1] = True
    as_of = str(signal["as_of"].max()) if "as_of" in signal.columns else str(mk.dates[-1].date())
    member = signal_members(signal, mk.tickers, as_of)
    member = None if member is None else np.broadcast_to(member, mk.close.shape)
    target = target_book(pred, mk.close, pcfg, decide, member)[-1]
    price = pd.DataFrame(mk.close).ffill().to_numpy()[-1]
    cash, held = holdings if holdings is not None else (float(res.cash[-1]), res.shares[-1].copy())
    equity = cash + float(np.nansum(held * price))
    target = np.nan_to_num(target)
    target_shares = target * equity / price
    delta = target_shares - held
    notional = np.abs(delta) * price
    small = notional < cfg["min_order_value"]
    note = np.where(small & (notional > 0), f"below backtest.min_order_value {cfg['min_order_value']:g}: not sent", "")
    delta = np.where(small, 0.0, delta)
    return pd.DataFrame(
        {
            "ticker": mk.tickers,
            "price": price,
            "shares_now": held,
            "weight_now": held * price / equity,
            "target_weight": target,
            "target_shares": target_shares,
            "side": np.where(delta > 0, "buy", np.where(delta < 0, "sell", "none")),
            "shares": np.abs(delta),
            "notional": np.abs(delta) * price,
            "cost": np.abs(delta) * price * pcfg.cost_rate,
            "note": note,
        }
    )[ORDERS]
