"""Portfolio backtest: one cash pool for all tickers, a sizing/risk POLICY, one execution KERNEL.

Layout (the order function / portfolio split of vectorbt):

* POLICY, path-independent part (`target_book`, built from `lib.portfolio.policy`): predictions and
  prices -> target weights on decision days (rule -> filters -> sizing -> limits).
* KERNEL (`execute`): (cash, shares, target weights, fill prices, cost rate[, limits]) ->
  (cash, shares, fills). The one place where money moves; both engines call it. It also keeps
  the whole book within the gross/net/position limits when held tickers have no order (or no
  price) on the row, since the policy cannot see holdings.
* VECTORIZED engine (`run_vectorized`): targets known up front, a loop over order rows only,
  vectorised across tickers, array slices for the days in between (as the per-ticker engine it
  replaced did; that engine is kept as the test oracle `tests.helpers.slice_simulate`).
* EVENT engine (`run_event`): one session at a time, bar -> orders -> fills -> mark ->
  path-dependent policy (stops, drawdown control, daily position limits) -> orders.
* `run_portfolio`: policy + the engine named by `engine` (`auto`: vectorized unless a
  path-dependent control is on). On what both support the engines agree to 1e-9 relative.

Accounting. Target w_i is a fraction of the whole equity E = cash + sum_i shares_i * P_i, with
P_i the fill price (the last close for a ticker that does not trade on that row). Target shares
= w_i * E / P_i; |delta| <= 1e-9 relative (1e-12 absolute) is float dust and skipped. Sells
first; their proceeds minus costs go to the pool; then buys, scaled down pro rata when cash
(after sells, floored at 0) cannot pay for all of them plus costs. With one ticker this is
exactly `tests.helpers.slice_simulate`'s rule: a buy is capped at cash / (P (1 + c)), so w = 1 from
flat buys E / (P (1 + c)) shares. Cost = c * |traded notional|, c = (commission + slippage)
bps / 1e4, paid from cash. Fractional shares; shorts allowed (short-sale proceeds are cash).
Fills at the next open (decided at the close before) or at the decision day's close. Equity
is marked at the close (the last close carried over gaps). A ticker whose prices end before
the data does (NaN from some date on) is sold at its last close, with costs, on the first
session without a price (reason `delisted`, and a logged line); a ticker that starts later
enters on its first order with a price.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.params import check_backtest, check_rank_cap, fully_invested, path_dependent
from lib.portfolio.calendar import decision_days
from lib.portfolio.policy import (
    alive,
    apply_limits,
    live_close,
    magnitude_filter,
    rank_rule,
    realised_vol,
    size_book_volatility,
    size_kelly,
    size_volatility,
    sma,
    threshold_rule,
    trend_filter,
    vol_regime_scale,
)

log = logging.getLogger(__name__)

DUST_REL, DUST_ABS = 1e-9, 1e-12
REASONS = ("rebalance", "stop_loss", "trailing_stop", "drawdown_cut", "drawdown_restore", "delisted", "cap")
TRADE_COLUMNS = ["row", "date", "asset", "ticker", "side", "shares", "price", "notional", "cost", "reason"]


def _fail(key: str, message: str) -> PipelineError:
    return PipelineError(f"backtest.{key} {message}")


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PortfolioConfig:
    """Every number of the portfolio backtest; field names are the keys under `backtest:` in
    params.yaml (`PortfolioConfig.from_params(params["backtest"])`). None turns a control off."""

    # execution
    fill: str = "next_open"  # next_open | close (of the decision day)
    rebalance: str = "weekly"  # weekly | monthly | daily (decision days, when dates are given)
    commission_bps: float = 5.0  # per side, of traded notional
    slippage_bps: float = 5.0  # per side, of traded notional
    initial_cash: float = 100_000.0
    engine: str = "auto"  # auto | vectorized | event
    # rule
    rule: str = "threshold"  # threshold | rank
    threshold: float = 0.0  # threshold rule: long above, short below -threshold (allow_short)
    allow_short: bool = False  # threshold: short below -threshold; rank: short the bottom k
    top_k: int | None = None  # rank: names per side ...
    top_fraction: float | None = None  # ... or this fraction of the names with a prediction
    rank_weighting: str = "equal"  # equal | signal (|prediction|-weighted)
    min_tickers: int = 1  # rank: fewer predictions on a decision day -> no trade that day
    # filters
    min_abs_prediction: float = 0.0  # flat when |prediction| is smaller
    trend_window: int | None = None  # long only above the N-day SMA, short only below
    vol_regime_window: int | None = None  # long-run window of the volatility-regime filter
    vol_regime_quantile: float = 0.8  # vol above this quantile of its own history ...
    vol_regime_scale: float = 0.0  # ... scales the target by this (0 = flat)
    # sizing
    sizing: str = "equal"  # equal | volatility | kelly
    vol_window: int = 20  # trailing sessions of realised vol (sizing and regime filter)
    target_vol: float = 0.15  # annualised, volatility sizing
    vol_scope: str = "position"  # position | book
    kelly_fraction: float = 0.5  # half-Kelly
    kelly_cap: float = 1.0  # max |weight| from Kelly
    horizon: int = 5  # sessions the prediction covers (Kelly: mu and sigma^2 over it)
    periods_per_year: int = 252
    # limits
    max_position: float = 1.0  # |weight| of one ticker
    max_gross: float = 1.0  # sum |weight|
    max_net: float = 1.0  # |sum weight|
    daily_limits: bool = False  # event engine: trim drift above the limits at each close
    limit_tolerance: float = 0.01  # drift allowed above a limit before a `cap` trim
    # risk controls (event engine)
    stop_loss: float | None = None  # fraction below (long) / above (short) the entry price
    trailing_stop: float | None = None  # fraction below the highest high (long) since entry
    drawdown_cut: float | None = None  # drawdown from the equity peak that cuts exposure
    drawdown_restore: float = 0.05  # drawdown at which full exposure comes back (< drawdown_cut)
    drawdown_factor: float = 0.5  # exposure multiplier while cut (0 = flat)

    def __post_init__(self) -> None:
        """The ranges and rules of params.yaml's backtest section (lib.params, the one copy), with its messages.
        What needs the data (windows longer than the history, top_k above the tickers) is checked in `target_book`."""
        check_backtest(vars(self))

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> PortfolioConfig:
        """The config from the `backtest:` section of params.yaml (keys it does not know are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})

    @property
    def cost_rate(self) -> float:
        return (self.commission_bps + self.slippage_bps) / 1e4

    @property
    def path_dependent(self) -> bool:
        return path_dependent(vars(self))

    @property
    def limits(self) -> dict[str, float]:
        return {"max_position": self.max_position, "max_gross": self.max_gross, "max_net": self.max_net}

    @property
    def resolved_engine(self) -> str:
        if self.engine != "auto":
            return self.engine
        return "event" if self.path_dependent else "vectorized"

    @property
    def fully_invested(self) -> bool:
        """Rank top-k long-only with equal sizing: the book is meant to hold min(1, max_gross)."""
        return fully_invested(vars(self))

    def check_cap(self, k: int) -> None:
        check_rank_cap(self.max_position, self.max_gross, k)


# ----------------------------------------------------------------------------- inputs


def _panel(x: Any, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or (shape is not None and a.shape != shape):
        raise PipelineError(f"backtest: {name} must be a (dates, tickers) array of shape {shape}, got {a.shape}")
    return a


def _check_window(key: str, window: int | None, n_rows: int, extra: int = 0) -> None:
    if window is not None and window + extra > n_rows:
        raise _fail(key, f"({window}) is longer than the data ({n_rows} sessions): use a shorter window or more data")


def decision_mask(n_rows: int, cfg: PortfolioConfig, dates: Any = None) -> np.ndarray:
    """Decision days: the last session of each period of `cfg.rebalance` when dates are given
    (`lib.portfolio.calendar.decision_days`), else every row."""
    if dates is None:
        return np.ones(n_rows, dtype=bool)
    return decision_days(pd.DatetimeIndex(dates), cfg.rebalance)


# ----------------------------------------------------------------------------- policy


def target_book(predictions: Any, close: Any, cfg: PortfolioConfig, decide: Any = None) -> np.ndarray:
    """Path-independent POLICY: target weights (T, N) on decision days that have a prediction,
    NaN elsewhere (no order). Rule (`threshold`: +-1/n of equity, n = tickers alive; `rank`)
    -> filters (minimum |prediction|, trend) -> sizing (equal | volatility | kelly) -> the
    volatility-regime factor (a multiplier, so it acts as a filter on the target whichever the
    sizing; Kelly would overwrite it if applied first) -> limits. Row t uses predictions and
    prices up to the close of t only."""
    close = _panel(close, "close")
    pred = _panel(predictions, "predictions", close.shape)
    n_rows, n_cols = close.shape
    vol_used = cfg.sizing in ("volatility", "kelly") or cfg.vol_regime_window is not None
    _check_window("trend_window", cfg.trend_window, n_rows)
    if vol_used:
        _check_window("vol_window", cfg.vol_window, n_rows, extra=1)
        _check_window("vol_regime_window", cfg.vol_regime_window, n_rows, extra=cfg.vol_window)
    if cfg.rule == "rank" and cfg.top_k is not None and cfg.top_k > n_cols:
        raise _fail("top_k", f"({cfg.top_k}) is more than the {n_cols} tickers")
    if cfg.rule == "rank" and cfg.top_fraction is not None and cfg.fully_invested:
        cfg.check_cap(max(math.floor(cfg.top_fraction * n_cols + 1e-9), 1))
    decide = np.ones(n_rows, bool) if decide is None else np.asarray(decide, bool).reshape(-1)
    if decide.shape != (n_rows,):
        raise PipelineError(f"backtest: decide must have one flag per session ({n_rows}), got {decide.shape}")
    out = np.full((n_rows, n_cols), np.nan)
    rows = np.flatnonzero(decide & np.isfinite(pred).any(axis=1))
    if len(rows) == 0:
        return out
    p = pred[rows]
    if cfg.rule == "threshold":
        w = threshold_rule(p, alive(close)[rows].sum(axis=1), cfg.threshold, cfg.allow_short)
    else:
        w = rank_rule(p, top_k=cfg.top_k, top_fraction=cfg.top_fraction, allow_short=cfg.allow_short,
                      weighting=cfg.rank_weighting, min_tickers=cfg.min_tickers)
    if cfg.min_abs_prediction > 0:
        w = magnitude_filter(w, p, cfg.min_abs_prediction)
    if cfg.trend_window is not None:
        w = trend_filter(w, live_close(close)[rows], sma(close, cfg.trend_window)[rows])
    vol = realised_vol(close, cfg.vol_window, cfg.periods_per_year) if vol_used else None
    if cfg.sizing == "volatility" and cfg.vol_scope == "position":
        w = size_volatility(w, vol[rows], cfg.target_vol)
    elif cfg.sizing == "volatility":
        returns = np.diff(np.log(live_close(close)), axis=0, prepend=np.nan)
        w = size_book_volatility(w, returns, rows, cfg.vol_window, cfg.target_vol, cfg.periods_per_year)
    elif cfg.sizing == "kelly":
        w = size_kelly(w, p, vol[rows], fraction=cfg.kelly_fraction, cap=cfg.kelly_cap, horizon=cfg.horizon,
                       periods_per_year=cfg.periods_per_year)
    if cfg.vol_regime_window is not None:
        w = w * vol_regime_scale(vol, cfg.vol_regime_window, cfg.vol_regime_quantile, cfg.vol_regime_scale)[rows]
    out[rows] = apply_limits(w, max_position=cfg.max_position, max_gross=cfg.max_gross, max_net=cfg.max_net)
    return out


# ----------------------------------------------------------------------------- kernel


def execute_one(cash: float, held: float, target: float, price: float, cost_rate: float) -> tuple[float, float, float]:
    """`execute` for one ticker, in Python floats (the same arithmetic, no array overhead):
    returns (cash, shares, delta). NaN target or a price that is not > 0: no trade."""
    if math.isnan(target) or not price > 0.0:
        return cash, held, 0.0
    tgt = target * (cash + held * price) / price
    delta = tgt - held
    if abs(delta) <= max(DUST_REL * max(abs(held), abs(tgt)), DUST_ABS):
        return cash, held, 0.0
    if delta > 0.0:
        delta = min(delta, max(cash, 0.0) / (price * (1.0 + cost_rate)))
    cost = abs(delta) * price * cost_rate
    return cash - delta * price - cost, held + delta, delta


def execute(cash: float, held: np.ndarray, target: np.ndarray, price: np.ndarray, mark: np.ndarray,
            cost_rate: float, limits: Mapping[str, float] | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """The execution KERNEL: one order row for the whole book. Returns (cash, shares, delta).

    held (N,) shares; target (N,) weights of total equity, NaN = no order; price (N,) fill
    prices, > 0, NaN = not trading (its order is skipped); mark (N,) finite value of a share of
    a ticker that does not trade here (its last close). See the module docstring for the rule
    (sells first, buys scaled pro rata to the cash left, costs from cash). `limits`
    (max_position, max_gross, max_net; `lib.portfolio.policy.apply_limits`): when some held tickers have
    no order on the row, their current weights count towards the limits too, and everything
    is scaled down together if the book would break them."""
    if held.shape[0] == 1:
        c, h, d = execute_one(cash, float(held[0]), float(target[0]), float(price[0]), cost_rate)
        return c, np.array([h]), np.array([d])
    return _execute_many(cash, held, target, price, mark, cost_rate, limits)


def _execute_many(cash: float, held: np.ndarray, target: np.ndarray, price: np.ndarray, mark: np.ndarray,
                  cost_rate: float, limits: Mapping[str, float] | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    # Few, whole-array numpy calls: per-call overhead, not arithmetic, is the cost at N ~ 500.
    invested = held @ price
    gaps = math.isnan(invested)
    if gaps:  # some ticker does not trade on this row: value it at its mark, trade it at 0 shares
        missing = np.isnan(price)
        invested = held @ np.where(missing, mark, price)
        price = np.where(missing, np.nan, price)
    if limits is not None and (gaps or math.isnan(np.add.reduce(target))):
        target = _limit_with_holdings(target, held, price, mark, cash + invested, limits)
    tgt = target * (cash + invested) / price  # NaN: no order or no price
    delta = tgt - held
    if math.isnan(np.add.reduce(delta)):
        delta[np.isnan(delta)] = 0.0
    size = np.abs(delta)
    dust = np.maximum(np.abs(held), np.abs(tgt))
    dust *= DUST_REL
    np.maximum(dust, DUST_ABS, out=dust)  # NaN where tgt is NaN: delta is 0 there already
    keep = size > dust
    delta *= keep
    size *= keep
    p = np.nan_to_num(price) if gaps else price
    flow = size * cost_rate
    flow += delta
    flow *= p  # cash out of the pool, costs included: > 0 for a buy, < 0 for a sell (c < 1)
    out_buy = np.maximum(flow, 0.0).sum()
    cash = cash - (flow.sum() - out_buy)  # sells first
    if out_buy > 0.0:
        available = max(cash, 0.0)
        if out_buy > available:  # buys scaled down pro rata to the cash left
            buy = delta > 0.0
            delta = np.where(buy, delta * (available / out_buy), delta)
            out_buy = np.where(buy, (delta + np.abs(delta) * cost_rate) * p, 0.0).sum()
        cash = cash - out_buy
    return cash, held + delta, delta


def _limit_with_holdings(target: np.ndarray, held: np.ndarray, price: np.ndarray, mark: np.ndarray, equity: float,
                         limits: Mapping[str, float]) -> np.ndarray:
    """Targets that keep the whole book within the limits: a held ticker without an order counts
    at its current weight (and gets an order only if the limits scale it); a held ticker that
    cannot trade on the row counts as fixed; a flat one that cannot trade is left out."""
    no_price = np.isnan(price)
    fixed = no_price & (held != 0.0)
    hold = np.isnan(target) & (held != 0.0) & ~no_price
    if not (fixed.any() or hold.any()) or not equity > 0:
        return target
    current = held * np.where(no_price, mark, price) / equity
    book = np.where(fixed | hold, current, np.where(no_price, np.nan, target))
    limited = apply_limits(book, fixed=fixed, **limits)
    moved = np.abs(limited - current) > DUST_REL * np.abs(current)
    return np.where((hold & ~moved) | no_price, np.nan, limited)


# ----------------------------------------------------------------------------- market data


@dataclass(frozen=True)
class _Market:
    mark: np.ndarray  # (T, N) close carried over gaps, 0 before a ticker's start: the value of a share
    fill: np.ndarray  # (T, N) fill price of an order row (open or close), NaN = not trading
    lag: bool  # fills at the open: a share that does not trade is worth the previous close
    delist: dict[int, tuple[np.ndarray, np.ndarray]]  # row -> (assets, last close) closed out on that row

    def fill_mark(self, t: int) -> np.ndarray:
        """Value of a share that does not trade on order row t (its last known close)."""
        if not self.lag:
            return self.mark[t]
        return self.mark[t - 1] if t > 0 else np.zeros(self.mark.shape[1])


def _market(close: np.ndarray, open_: np.ndarray | None, fill: str) -> _Market:
    if fill == "close":
        fill_px = close
    else:
        if open_ is None:
            raise _fail("fill", "is next_open but no open prices were given")
        fill_px = open_
    if not np.nanmin(fill_px, initial=np.inf) > 0:
        fill_px = np.where(fill_px > 0, fill_px, np.nan)  # a price <= 0 is no price
    if math.isfinite(np.add.reduce(close, axis=None)):  # no gaps: one pass, no temporary
        return _Market(close, fill_px, fill != "close", {})
    valid = np.isfinite(close)
    mark = np.nan_to_num(pd.DataFrame(close).ffill().to_numpy())
    delist: dict[int, tuple[list[int], list[float]]] = {}
    if not valid[-1].all():
        n_rows = close.shape[0]
        last = n_rows - 1 - np.argmax(valid[::-1], axis=0)
        for i in np.flatnonzero(valid.any(axis=0) & (last < n_rows - 1)).tolist():
            assets, prices = delist.setdefault(int(last[i]) + 1, ([], []))
            assets.append(i)
            prices.append(float(close[last[i], i]))
    return _Market(mark, fill_px, fill != "close", {t: (np.array(a), np.array(p)) for t, (a, p) in delist.items()})


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PortfolioResult:
    equity: np.ndarray  # (T,) cash + positions at each close, after the day's fills
    cash: np.ndarray  # (T,)
    shares: np.ndarray  # (T, N) held after the day's fills
    marks: np.ndarray  # (T, N) the close each share is valued at (carried over gaps, 0 before the start)
    engine: str  # vectorized | event
    log: _Trades = field(repr=False, compare=False)
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


class _Trades:
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
        return pd.DataFrame({
            "row": rows, "date": rows if dates is None else pd.DatetimeIndex(dates)[rows], "asset": asset,
            "ticker": ticker, "side": pd.Categorical.from_codes((shares < 0).astype(np.int8), categories=["buy", "sell"]),
            "shares": shares, "price": price, "notional": notional, "cost": notional * self.cost_rate,
            "reason": pd.Categorical.from_codes(reasons, categories=list(REASONS))})


def _result(equity: np.ndarray, cash: np.ndarray, shares: np.ndarray, mark: np.ndarray, trades: _Trades,
            engine: str, dates: Any, tickers: Any) -> PortfolioResult:
    return PortfolioResult(equity, cash, shares, mark, engine, trades, dates, tickers)


def _log_delisting(t: int, asset: int, shares: float, price: float, dates: Any, tickers: Any) -> None:
    name = tickers[asset] if tickers is not None else f"ticker #{asset}"
    when = str(pd.Timestamp(dates[t]).date()) if dates is not None else f"row {t}"
    log.warning("backtest: %s has no price from %s on: closed %.6g shares at its last close %.6g (delisted)",
                name, when, shares, price)


def _close_delisted(t: int, mk: _Market, cash: float, held: np.ndarray, trades: _Trades, cost_rate: float,
                    dates: Any, tickers: Any) -> tuple[float, np.ndarray]:
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


# ----------------------------------------------------------------------------- vectorized engine


def run_vectorized(targets: Any, *, close: Any, open_: Any = None, cfg: PortfolioConfig | None = None,
                   dates: Any = None, tickers: Any = None) -> PortfolioResult:
    """VECTORIZED engine: decision-day `targets` (T, N) known up front (NaN = no order) are
    moved to their fill row (the same close, or the next open) and executed by the kernel; the loop
    runs over order rows (and delisting rows) only, days in between are array slices."""
    cfg = cfg or PortfolioConfig()
    if cfg.path_dependent:
        raise _fail("engine", "vectorized cannot run path-dependent controls (stop_loss, trailing_stop, "
                              "drawdown_cut, daily_limits): use event or auto")
    close = _panel(close, "close")
    open_ = None if open_ is None else _panel(open_, "open", close.shape)
    targets = _panel(targets, "targets", close.shape)
    mk = _market(close, open_, cfg.fill)
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
    trades = _Trades(cost_rate)
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
        return _result(equity, cash_s, shares, mk.mark, trades, "vectorized", dates, tickers)
    for t in rows:
        equity[prev:t] = cash + mk.mark[prev:t] @ held
        cash_s[prev:t] = cash
        shares[prev:t] = held
        if t in mk.delist:
            cash, held = _close_delisted(t, mk, cash, held, trades, cost_rate, dates, tickers)
        if has_order[t]:
            cash, held, delta = execute(cash, held, targets[t - lag], mk.fill[t], mk.fill_mark(t), cost_rate, limits)
            trades.add(t, delta, mk.fill[t], "rebalance")
        prev = t
    equity[prev:] = cash + mk.mark[prev:] @ held
    cash_s[prev:] = cash
    shares[prev:] = held
    return _result(equity, cash_s, shares, mk.mark, trades, "vectorized", dates, tickers)


# ----------------------------------------------------------------------------- event engine


def _columns(a: np.ndarray) -> Any:
    """Per-ticker access col[i][t] for the event loop: Python float lists for a few tickers
    (fast scalar reads), the transposed array (no copy) for many."""
    return [a[:, i].tolist() for i in range(a.shape[1])] if a.shape[1] <= 64 else a.T


class _Book:
    """Event-engine state in Python floats: cash, shares, stop levels, the extreme since entry."""

    def __init__(self, n_cols: int, cfg: PortfolioConfig, trades: _Trades, mark: Any) -> None:
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

    def trade(self, t: int, target: np.ndarray, price: np.ndarray, mark: np.ndarray, reason: str,
              limits: Mapping[str, float] | None = None) -> None:
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

    def close_delisted(self, t: int, mk: _Market, dates: Any, tickers: Any) -> None:
        cash, held = _close_delisted(t, mk, self.cash, np.array(self.held), self.trades, self.cost_rate, dates,
                                     tickers)
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
            if (np.abs(current).max() > cfg.max_position + tol or np.abs(current).sum() > cfg.max_gross + tol
                    or abs(current.sum()) > cfg.max_net + tol):
                trimmed = apply_limits(current, **cfg.limits)
                return np.where(np.abs(trimmed - current) > 0, trimmed, np.nan), "cap"
        return None


def run_event(targets: Any, *, close: Any, open_: Any = None, high: Any = None, low: Any = None,
              cfg: PortfolioConfig | None = None, dates: Any = None, tickers: Any = None) -> PortfolioResult:
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
    close = _panel(close, "close")
    shape = close.shape
    open_ = None if open_ is None else _panel(open_, "open", shape)
    targets = _panel(targets, "targets", shape)
    mk = _market(close, open_, cfg.fill)
    n_rows, n_cols = shape
    stops_on = cfg.stop_loss is not None or cfg.trailing_stop is not None
    if stops_on:
        op = open_ if open_ is not None else close
        with np.errstate(invalid="ignore"):
            hi = _panel(high, "high", shape) if high is not None else np.fmax(op, close)
            lo = _panel(low, "low", shape) if low is not None else np.fmin(op, close)
        hi = np.where(np.isfinite(close), hi, np.nan)
        op_c, hi_c, lo_c = _columns(op), _columns(hi), _columns(lo)
    trades = _Trades(cfg.cost_rate)
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
    return _result(np.array(equity), np.array(cash_s), shares, mk.mark, trades, "event", dates, tickers)


# ----------------------------------------------------------------------------- entry point


def run_portfolio(predictions: Any, *, close: Any, open_: Any = None, high: Any = None, low: Any = None,
                  cfg: PortfolioConfig | None = None, dates: Any = None, tickers: Any = None,
                  decide: Any = None) -> PortfolioResult:
    """Policy + engine. predictions, close, open_, high, low: (T, N) arrays of the same shape
    (adjusted prices; NaN where a ticker has no bar or no prediction). `decide` (T,) bool marks
    decision days; default: `decision_mask(T, cfg, dates)`. `cfg.engine`: auto picks the event
    engine only when a path-dependent control is on."""
    cfg = cfg or PortfolioConfig()
    close = _panel(close, "close")
    if decide is None:
        decide = decision_mask(close.shape[0], cfg, dates)
    targets = target_book(predictions, close, cfg, decide)
    if cfg.resolved_engine == "vectorized":
        return run_vectorized(targets, close=close, open_=open_, cfg=cfg, dates=dates, tickers=tickers)
    return run_event(targets, close=close, open_=open_, high=high, low=low, cfg=cfg, dates=dates, tickers=tickers)
