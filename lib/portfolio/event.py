"""The EVENT engine (`run_event`): one session at a time, bar -> orders -> fills -> mark ->
path-dependent policy (stops, drawdown control, daily position limits) -> orders."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from lib.portfolio.config import PortfolioConfig, as_panel
from lib.portfolio.delisting import close_delisted
from lib.portfolio.kernel import execute, execute_one
from lib.portfolio.ledger import PortfolioResult, TradeLog, portfolio_result
from lib.portfolio.market import ExecutionPrices, execution_prices
from lib.portfolio.policy import apply_limits


def _columns(a: np.ndarray) -> Any:
    """Per-ticker access col[i][t] for the event loop: Python float lists for a few tickers
    (fast scalar reads), the transposed array (no copy) for many."""
    return [a[:, i].tolist() for i in range(a.shape[1])] if a.shape[1] <= 64 else a.T


class _Book:
    """Event-engine state in Python floats: cash, shares, stop levels, the extreme since entry."""

    def __init__(self, n_cols: int, cfg: PortfolioConfig, trades: TradeLog, mark: Any) -> None:
        self.n = n_cols
        self.mark = mark  # mark[i][t]: the value of a share of ticker i at the close of t
        self.cash = float(cfg.initial_cash)
        self.held = [0.0] * n_cols
        self.pos: list[int] = []  # tickers with shares != 0, in column order
        self.stop = [math.nan] * n_cols  # fixed stop level
        self.extreme = [math.nan] * n_cols  # highest high (long) / lowest low (short) since entry
        self.cost_rate = cfg.cost_rate
        self.stop_loss, self.trailing = cfg.stop_loss, cfg.trailing_stop
        self.trades = trades
        self.changes: list[tuple[int, list[float]]] = []

    def value(self, t: int) -> float:
        pos, held, mark = self.pos, self.held, self.mark
        if len(pos) == 1:
            return self.cash + held[pos[0]] * mark[pos[0]][t]
        return self.cash + sum(held[i] * mark[i][t] for i in pos)

    def weights(self, t: int, equity: float) -> np.ndarray:
        w = np.zeros(self.n)
        for i in self.pos:
            w[i] = self.held[i] * self.mark[i][t] / equity
        return w

    def trade(
        self,
        t: int,
        target: np.ndarray,
        price: np.ndarray,
        mark: np.ndarray,
        reason: str,
        limits: Mapping[str, float] | None = None,
    ) -> None:
        before = self.held
        if self.n == 1:
            p = float(price[0])
            self.cash, h, d = execute_one(self.cash, before[0], float(target[0]), p, self.cost_rate)
            if d == 0.0:
                return
            after, traded = [h], [0]
            self.trades.add(t, (d,), (p,), reason)
        else:
            self.cash, new, delta = execute(self.cash, np.array(before), target, price, mark, self.cost_rate, limits)
            traded = np.flatnonzero(delta).tolist()
            if not traded:
                return
            after = new.tolist()
            self.trades.add(t, delta, price, reason)
        for i in traded:
            old, new_i = before[i], after[i]
            if new_i == 0.0:
                self.stop[i] = self.extreme[i] = math.nan
            elif old == 0.0 or (old > 0.0) != (new_i > 0.0):  # a new position: its entry sets the stops
                entry = float(price[i])
                side = 1.0 if new_i > 0.0 else -1.0
                self.stop[i] = entry * (1.0 - side * self.stop_loss) if self.stop_loss is not None else math.nan
                self.extreme[i] = entry
        self.held = after
        self.pos = [i for i in range(self.n) if after[i] != 0.0]
        self.changes.append((t, after))

    def close_delisted(self, t: int, mk: ExecutionPrices, dates: Any, tickers: Any) -> None:
        cash, held = close_delisted(t, mk, self.cash, np.array(self.held), self.trades, self.cost_rate, dates, tickers)
        if held.tolist() != self.held:
            self.cash, self.held = cash, held.tolist()
            self.pos = [i for i in range(self.n) if self.held[i] != 0.0]
            for i in mk.delist[t][0].tolist():
                self.stop[i] = self.extreme[i] = math.nan
            self.changes.append((t, self.held))

    def check_stops(self, t: int, op: Any, hi: Any, lo: Any) -> None:
        """Stop-loss / trailing stop of each open position against the day's low (long) or high
        (short). A gap through the level fills at the open, otherwise at the level. The trailing
        level uses the extreme up to the day before (the entry price on the entry day)."""
        trailing, isnan = self.trailing, math.isnan
        for i in list(self.pos):
            o, h, lw = op[i][t], hi[i][t], lo[i][t]
            if isnan(o) or isnan(h) or isnan(lw):
                continue  # not trading today
            fixed = self.stop[i]
            if self.held[i] > 0.0:
                trail = self.extreme[i] * (1.0 - trailing) if trailing is not None else math.nan
                level = trail if isnan(fixed) else fixed if isnan(trail) else max(fixed, trail)
                if lw <= level:
                    self._stop_out(t, i, min(o, level), fixed, level)
                elif trailing is not None and h > self.extreme[i]:
                    self.extreme[i] = h
            else:
                trail = self.extreme[i] * (1.0 + trailing) if trailing is not None else math.nan
                level = trail if isnan(fixed) else fixed if isnan(trail) else min(fixed, trail)
                if h >= level:
                    self._stop_out(t, i, max(o, level), fixed, level)
                elif trailing is not None and lw < self.extreme[i]:
                    self.extreme[i] = lw

    def _stop_out(self, t: int, i: int, fill: float, fixed: float, level: float) -> None:
        target, price = np.full(self.n, np.nan), np.full(self.n, np.nan)
        target[i], price[i] = 0.0, fill
        mark = np.array([self.mark[j][max(t - 1, 0)] for j in range(self.n)])  # the last close: known intraday
        mark[i] = fill
        reason = "stop_loss" if fixed == level else "trailing_stop"
        self.trade(t, target, price, mark, reason)


class _RiskPolicy:
    """The path-dependent half of the POLICY, called by the event engine at every close with the
    portfolio's state: the drawdown control (its exposure multiplier and triggers), the day's
    rebalance targets (from `target_book`) times that multiplier, and the daily position limits."""

    def __init__(self, cfg: PortfolioConfig, targets: np.ndarray) -> None:
        self.cfg = cfg
        self.decisions = {t: targets[t] for t in np.flatnonzero(~np.isnan(targets).all(axis=1)).tolist()}
        self.drawdown_on = cfg.drawdown_cut is not None
        self.peak, self.cut, self.mult = float(cfg.initial_cash), False, 1.0
        self.last: np.ndarray | None = None  # the latest rebalance targets

    def on_close(self, t: int, equity: float, book: _Book) -> tuple[np.ndarray, str] | None:
        """Orders (target weights, NaN = none; reason) decided at this close, or None."""
        cfg, trigger = self.cfg, None
        if self.drawdown_on:
            self.peak = max(self.peak, equity)
            drawdown = 1.0 - equity / self.peak
            if not self.cut and drawdown >= cfg.drawdown_cut:
                self.cut, self.mult, trigger = True, cfg.drawdown_factor, "drawdown_cut"
            elif self.cut and drawdown <= cfg.drawdown_restore:
                self.cut, self.mult, trigger = False, 1.0, "drawdown_restore"
        row = self.decisions.get(t)
        if row is not None:
            self.last = row
            target = row * self.mult if self.mult != 1.0 else row
            if trigger == "drawdown_cut":  # held tickers without a target are cut too
                current = book.weights(t, equity)
                target = np.where(np.isnan(target) & (current != 0), current * self.mult, target)
            return target, trigger or "rebalance"
        if trigger == "drawdown_cut":
            current = book.weights(t, equity)
            return np.where(current != 0, current * self.mult, np.nan), trigger
        if trigger == "drawdown_restore":
            return (self.last, trigger) if self.last is not None else None
        if cfg.daily_limits and book.pos:
            current, tol = book.weights(t, equity), cfg.limit_tolerance
            if (
                np.abs(current).max() > cfg.max_position + tol
                or np.abs(current).sum() > cfg.max_gross + tol
                or abs(current.sum()) > cfg.max_net + tol
            ):
                trimmed = apply_limits(current, **cfg.limits)
                return np.where(np.abs(trimmed - current) > 0, trimmed, np.nan), "cap"
        return None


def run_event(
    targets: Any,
    *,
    close: Any,
    open_: Any = None,
    high: Any = None,
    low: Any = None,
    cfg: PortfolioConfig | None = None,
    dates: Any = None,
    tickers: Any = None,
) -> PortfolioResult:
    """EVENT engine, one session at a time: delistings -> orders pending from the last close fill
    at the open -> stops against the day's range -> mark at the close -> path-dependent policy
    (drawdown control, rebalance targets times the drawdown multiplier, daily limits) -> orders,
    filled at this close (fill=close) or the next open. Without path-dependent controls it gives
    `run_vectorized`'s equity, trades and weights (same kernel on the same rows).

    Drawdown control: at each close, drawdown = 1 - equity / running peak. When it reaches
    `drawdown_cut`, every position is scaled by `drawdown_factor` (reason drawdown_cut) and later
    rebalance targets too; when it falls back to `drawdown_restore` or less, the last rebalance
    targets are restored in full (drawdown_restore). Daily limits (`daily_limits`): a position
    or the gross/net exposure that drifted more than `limit_tolerance` above its limit is
    trimmed back to it (cap). A stopped-out position stays flat until the next rebalance.
    Missing high/low default to max/min(open, close)."""
    cfg = cfg or PortfolioConfig()
    close = as_panel(close, "close")
    shape = close.shape
    open_ = None if open_ is None else as_panel(open_, "open", shape)
    targets = as_panel(targets, "targets", shape)
    mk = execution_prices(close, open_, cfg.fill)
    n_rows, n_cols = shape
    stops_on = cfg.stop_loss is not None or cfg.trailing_stop is not None
    if stops_on:
        op = open_ if open_ is not None else close
        with np.errstate(invalid="ignore"):
            hi = as_panel(high, "high", shape) if high is not None else np.fmax(op, close)
            lo = as_panel(low, "low", shape) if low is not None else np.fmin(op, close)
        hi = np.where(np.isfinite(close), hi, np.nan)
        op_c, hi_c, lo_c = _columns(op), _columns(hi), _columns(lo)
    trades = TradeLog(cfg.cost_rate)
    book = _Book(n_cols, cfg, trades, _columns(mk.mark))
    policy = _RiskPolicy(cfg, targets)
    equity, cash_s = [0.0] * n_rows, [0.0] * n_rows
    at_close, limits = cfg.fill == "close", cfg.limits
    pending: tuple[np.ndarray, str] | None = None
    for t in range(n_rows):
        if t in mk.delist:
            book.close_delisted(t, mk, dates, tickers)
        if pending is not None:  # decided at the last close, filled at this open
            book.trade(t, pending[0], mk.fill[t], mk.fill_mark(t), pending[1], limits)
            pending = None
        if stops_on and book.pos:
            book.check_stops(t, op_c, hi_c, lo_c)
        eq = book.value(t) if book.pos else book.cash
        order = policy.on_close(t, eq, book)
        if order is not None:
            if at_close:
                book.trade(t, order[0], mk.fill[t], mk.fill_mark(t), order[1], limits)
                eq = book.value(t) if book.pos else book.cash
            else:
                pending = order
        equity[t] = eq
        cash_s[t] = book.cash
    shares = np.zeros(shape)
    for k, (t, held) in enumerate(book.changes):
        end = book.changes[k + 1][0] if k + 1 < len(book.changes) else n_rows
        shares[t:end] = held
    return portfolio_result(np.array(equity), np.array(cash_s), shares, mk.mark, trades, "event", dates, tickers)
