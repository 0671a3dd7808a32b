"""The BATCHED engine: many prediction sets of one strategy (the permutation null's shuffles) through
the vectorized engine's loop at once. Targets are an (S, R, N) array on the R decision rows (the
policy runs once for all sets, `lib.portfolio.targets.decision_targets`), the loop runs over order
rows once for all S books, and each step of the kernel (`lib.portfolio.kernel.execute_batch`) works
on (S, N). Each book's equity equals `run_vectorized`'s on its own targets up to float rounding
(tested to 1e-12 on the Sharpe ratio). `BatchedBacktest` sets the backtest up once and runs it
for many prediction sets (`equities`) or many costs (`at_costs`: the cost sensitivity).
Path-dependent controls need the event engine: not here (`batch_unsupported` says why)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lib.portfolio.backtest import _grid
from lib.portfolio.config import PortfolioConfig
from lib.portfolio.kernel import execute_batch
from lib.portfolio.long_short import NOT_RANK, execution_config, long_short_weights
from lib.portfolio.market import execution_prices
from lib.portfolio.targets import check_policy, decision_targets
from lib.portfolio.universe import buy_and_hold_targets
from lib.tables import LONG_SHORT, STRATEGY

CHUNK_CELLS = 4_000_000  # targets per chunk of sets (S x R x N): bounds memory at 402 tickers


def batch_unsupported(cfg: PortfolioConfig) -> str:
    """Why the batched engine cannot run this config ("" when it can)."""
    if cfg.resolved_engine != "vectorized":
        return "path-dependent controls (stop_loss, trailing_stop, drawdown_cut, daily_limits) need the event engine"
    return ""


def run_batch(
    targets: np.ndarray,
    rows: np.ndarray,
    *,
    close: np.ndarray,
    open_: np.ndarray | None,
    cfg: PortfolioConfig,
    cost_rate: Any = None,
) -> np.ndarray:
    """Equity (S, T) of S books: `targets` (S, R, N) decided on rows `rows` (R,) of `close` (T, N)
    (NaN = no order), filled at the same close or the next open, delistings closed out at the last
    close, as `lib.portfolio.vectorized.run_vectorized` does for one book. `cost_rate`: one per book
    (S,) or one for all (default `cfg.cost_rate`)."""
    mk = execution_prices(close, open_, cfg.fill)
    n_rows, n_cols = close.shape
    n_sets = targets.shape[0]
    rate = np.broadcast_to(np.asarray(cfg.cost_rate if cost_rate is None else cost_rate, float), (n_sets,))
    lag = 1 if mk.lag else 0
    fills = np.asarray(rows, int) + lag
    order = {int(t): j for j, t in enumerate(fills.tolist()) if t < n_rows}
    cash, held = np.full(n_sets, float(cfg.initial_cash)), np.zeros((n_sets, n_cols))
    equity = np.empty((n_sets, n_rows))
    prev = 0
    for t in sorted(set(order) | set(mk.delist)):
        equity[:, prev:t] = cash[:, None] + held @ mk.mark[prev:t].T
        if t in mk.delist:
            cash, held = _close_delisted(t, mk, cash, held, rate)
        if t in order:
            cash, held, _ = execute_batch(
                cash, held, targets[:, order[t]], mk.fill[t], mk.fill_mark(t), rate, cfg.limits
            )
        prev = t
    equity[:, prev:] = cash[:, None] + held @ mk.mark[prev:].T
    return equity


def _close_delisted(t: int, mk: Any, cash: np.ndarray, held: np.ndarray, rate: np.ndarray) -> tuple:
    """`lib.portfolio.delisting.close_delisted` for every book (without its log line: the backtest logged it)."""
    assets, last = mk.delist[t]
    n_cols = held.shape[1]
    target, price = np.full(held.shape, np.nan), np.full(n_cols, np.nan)
    target[:, assets], price[assets] = 0.0, last
    cash, held, _ = execute_batch(cash, held, target, price, mk.fill_mark(t), rate)
    return cash, held


class BatchedBacktest:
    """`lib.portfolio.backtest.run_backtest`'s strategy (`book` = STRATEGY) or the long-short book
    (`book` = LONG_SHORT, `lib.portfolio.long_short`), and buy-and-hold, set up once from the real
    `predictions` (same arguments), then run for many prediction sets or costs in batched passes.
    The calendar, first fill, universe and window are the real predictions' (a set only moves values
    between a ticker's dated rows). Raises ValueError when the strategy needs the event engine, or
    for the long-short book of the threshold rule."""

    def __init__(
        self,
        prices: pd.DataFrame,
        predictions: pd.DataFrame,
        cfg: dict[str, Any],
        horizon: int,
        periods_per_year: int = 252,
        book: str = STRATEGY,
    ) -> None:
        g = _grid(prices, predictions, cfg, horizon, periods_per_year)
        why = batch_unsupported(g.pcfg) if book == STRATEGY else (NOT_RANK if g.pcfg.rule != "rank" else "")
        if book not in (STRATEGY, LONG_SHORT) or why:
            raise ValueError(f"BatchedBacktest: {why or f'no batched book {book!r}'}")
        check_policy(g.pcfg, g.market.close)
        self.book = book
        self._g, self._mk, self._rows = g, g.market, g.decided
        self._member = None if g.member is None else g.member[g.decided]
        self.start = max(g.first - 1, 0)
        self.dates = g.market.dates[self.start :]  # the reported window, row for row run_backtest's equity
        where_row = pd.Index(self._rows).get_indexer(self._mk.dates.get_indexer(pd.DatetimeIndex(predictions["date"])))
        on_row = np.flatnonzero(where_row >= 0)  # predictions dated on a decision row: the only ones a target uses
        self._on_row = on_row
        self._cell = (where_row[on_row], pd.Index(self._mk.tickers).get_indexer(predictions["ticker"])[on_row])
        self._real = predictions["prediction"].to_numpy(float)

    def equities(self, value_sets: Any) -> np.ndarray:
        """The book's equity (S, window) for prediction sets: `value_sets` yields arrays
        (S_chunk, len(predictions)), each row a `prediction` column for the rows of `predictions`
        (finite wherever the real one is); chunked by CHUNK_CELLS."""
        mk, rows = self._mk, self._rows
        step = max(1, CHUNK_CELLS // (len(rows) * len(mk.tickers)))
        out = [np.empty((0, len(self.dates)))]
        for values in value_sets:
            values = np.atleast_2d(np.asarray(values, float))
            for lo in range(0, len(values), step):
                out.append(self._run(values[lo : lo + step]))
        return np.concatenate(out)

    def _run(self, chunk: np.ndarray, cost_rate: Any = None) -> np.ndarray:
        mk, rows, pcfg = self._mk, self._rows, self._g.pcfg
        p = np.full((len(chunk), len(rows), len(mk.tickers)), np.nan)
        p[:, self._cell[0], self._cell[1]] = chunk[:, self._on_row]
        if self.book == LONG_SHORT:
            targets = long_short_weights(p if self._member is None else np.where(self._member, p, np.nan), pcfg)
            pcfg = execution_config(pcfg)
        else:
            targets = decision_targets(p, mk.close, pcfg, rows, self._member)
        equity = run_batch(targets, rows, close=mk.close, open_=mk.open, cfg=pcfg, cost_rate=cost_rate)
        return equity[:, self.start :]

    def at_costs(self, costs_bps: Any) -> dict[str, np.ndarray]:
        """Equity (C, window) of the book (key `book`) and of buy-and-hold ("benchmark") for each cost of
        `costs_bps` (total bps per side of traded notional, as commission_bps = cost and
        slippage_bps = 0 give it to `run_backtest`), on the real predictions."""
        rate = np.asarray(costs_bps, float).reshape(-1) / 1e4
        strategy = self._run(np.repeat(self._real[None, :], len(rate), axis=0), rate)
        mk, g = self._mk, self._g
        hold = buy_and_hold_targets(mk.close, g.decided, g.member)
        hold_rows = np.flatnonzero(~np.isnan(hold).all(axis=1))
        execution = PortfolioConfig(fill=g.pcfg.fill, initial_cash=g.pcfg.initial_cash)
        held = np.repeat(hold[hold_rows][None], len(rate), axis=0)
        bench = run_batch(held, hold_rows, close=mk.close, open_=mk.open, cfg=execution, cost_rate=rate)
        return {self.book: strategy, "benchmark": bench[:, self.start :]}


def strategy_equities(
    prices: pd.DataFrame,
    predictions: pd.DataFrame,
    value_sets: Any,
    cfg: dict[str, Any],
    horizon: int,
    periods_per_year: int = 252,
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """`BatchedBacktest(prices, predictions, cfg, horizon, periods_per_year).equities(value_sets)`
    with the window's dates."""
    bt = BatchedBacktest(prices, predictions, cfg, horizon, periods_per_year)
    return bt.dates, bt.equities(value_sets)
