"""The execution KERNEL (`execute`): (cash, shares, target weights, fill prices, cost rate[, limits])
-> (cash, shares, fills). The one place where money moves; both engines call it. It also keeps
the whole book within the gross/net/position limits when held tickers have no order (or no
price) on the row, since the policy cannot see holdings.

Accounting. Target w_i is a fraction of the whole equity E = cash + sum_i shares_i * P_i, with
P_i the fill price (the last close for a ticker that does not trade on that row). Target shares
= w_i * E / P_i; |delta| <= 1e-9 relative (1e-12 absolute) is float dust and skipped. Sells
first; their proceeds minus costs go to the pool; then buys, scaled down pro rata when cash
(after sells, floored at 0) cannot pay for all of them plus costs. With one ticker this is
exactly `tests.helpers.slice_simulate`'s rule: a buy is capped at cash / (P (1 + c)), so w = 1 from
flat buys E / (P (1 + c)) shares. Cost = c * |traded notional|, c = (commission + slippage)
bps / 1e4, paid from cash. Fractional shares; shorts allowed (short-sale proceeds are cash).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from lib.portfolio.policy import apply_limits

DUST_REL, DUST_ABS = 1e-9, 1e-12


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


def execute(
    cash: float,
    held: np.ndarray,
    target: np.ndarray,
    price: np.ndarray,
    mark: np.ndarray,
    cost_rate: float,
    limits: Mapping[str, float] | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
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


def _execute_many(
    cash: float,
    held: np.ndarray,
    target: np.ndarray,
    price: np.ndarray,
    mark: np.ndarray,
    cost_rate: float,
    limits: Mapping[str, float] | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:
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


def _limit_with_holdings(
    target: np.ndarray,
    held: np.ndarray,
    price: np.ndarray,
    mark: np.ndarray,
    equity: float,
    limits: Mapping[str, float],
) -> np.ndarray:
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


# ----------------------------------------------------------------------------- many books at once


def execute_batch(
    cash: np.ndarray,
    held: np.ndarray,
    target: np.ndarray,
    price: np.ndarray,
    mark: np.ndarray,
    cost_rate: float | np.ndarray,
    limits: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`execute` for S books on the same prices at once (the permutation null's shuffles, the cost
    grid): cash (S,), held (S, N), target (S, N); price and mark (N,) as in `execute`; `cost_rate`
    one for all or one per book (S,). Returns (cash (S,), shares (S, N), delta (S, N)); each book
    gets `execute`'s result up to float rounding (the same rule, step by step, with the branches as
    masks). A book whose targets are all NaN is left as it is (no order: the caller would not have
    called `execute` for it)."""
    rate = np.asarray(cost_rate, float)
    rate = rate[:, None] if rate.ndim else rate
    missing = np.isnan(price)
    gaps = bool(missing.any())
    invested = held @ (np.where(missing, mark, price) if gaps else price)
    active = ~np.isnan(target).all(axis=1)
    if limits is not None:
        target = _limit_batch(target, held, price, mark, cash + invested, limits, gaps)
    tgt = target * (cash + invested)[:, None] / price
    delta = tgt - held
    delta[np.isnan(delta)] = 0.0
    size = np.abs(delta)
    dust = np.maximum(np.abs(held), np.abs(tgt))
    dust *= DUST_REL
    np.maximum(dust, DUST_ABS, out=dust)
    keep = (size > dust) & active[:, None]
    delta *= keep
    size *= keep
    p = np.nan_to_num(price) if gaps else price
    flow = size * rate
    flow += delta
    flow *= p
    out_buy = np.maximum(flow, 0.0).sum(axis=1)
    cash = cash - (flow.sum(axis=1) - out_buy)
    available = np.maximum(cash, 0.0)
    short = out_buy > available  # buys scaled down pro rata to the cash left
    if short.any():
        scale = np.where(short, available / np.where(short, out_buy, 1.0), 1.0)
        delta = np.where((delta > 0.0) & short[:, None], delta * scale[:, None], delta)
        scaled = np.where(delta > 0.0, (delta + np.abs(delta) * rate) * p, 0.0).sum(axis=1)
        out_buy = np.where(short, scaled, out_buy)
    cash = np.where(out_buy > 0.0, cash - out_buy, cash)
    return cash, held + delta, delta


def _limit_batch(
    target: np.ndarray,
    held: np.ndarray,
    price: np.ndarray,
    mark: np.ndarray,
    equity: np.ndarray,
    limits: Mapping[str, float],
    gaps: bool,
) -> np.ndarray:
    """`_limit_with_holdings` for the books that need it (a gap in the prices or a NaN target, a
    held ticker without an order or without a price, equity > 0); the others keep their targets."""
    no_price = np.isnan(price)
    fixed = no_price & (held != 0.0)
    hold = np.isnan(target) & (held != 0.0) & ~no_price
    needs = (gaps | np.isnan(target).any(axis=1)) & (fixed.any(axis=1) | hold.any(axis=1)) & (equity > 0)
    if not needs.any():
        return target
    with np.errstate(divide="ignore", invalid="ignore"):
        current = held * np.where(no_price, mark, price) / equity[:, None]
    book = np.where(fixed | hold, current, np.where(no_price, np.nan, target))
    limited = apply_limits(book, fixed=fixed, **limits)
    moved = np.abs(limited - current) > DUST_REL * np.abs(current)
    return np.where(needs[:, None], np.where((hold & ~moved) | no_price, np.nan, limited), target)
