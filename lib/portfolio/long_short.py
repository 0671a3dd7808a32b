"""The LONG-SHORT book of the rank rule: on each decision day long the top names and short the
bottom names by prediction, the same `top_k` / `top_fraction` per side (fewer on the short side
only when the two would overlap, as `lib.portfolio.policy.rank_rule` does), `rank_weighting` within
a side, each side half of equity: dollar-neutral (gross 1, net 0). It is where a cross-sectional
edge shows first, with market exposure taken out.

It runs on the strategy's calendar (decision days, first fill, reported window: `run_backtest`'s),
prices, costs and point-in-time universe, through the vectorized engine; the strategy's filters, sizing, limits and
path-dependent controls are not applied (each would break the neutrality). The threshold rule has
no ranking: the book is undefined there (None with the reason)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lib.portfolio.backtest import _book_trades, _grid
from lib.portfolio.config import PortfolioConfig
from lib.portfolio.ledger import PortfolioResult
from lib.portfolio.policy import rank_rule
from lib.portfolio.vectorized import run_vectorized
from lib.tables import LONG_SHORT, weight_column

NOT_RANK = "the long-short book needs backtest.rule=rank (top minus bottom by prediction); the threshold rule has none"


@dataclass(frozen=True)
class LongShortBook:
    targets: pd.DataFrame  # decision days x tickers: the target weights (long > 0, short < 0; NaN = no order)
    equity: pd.DataFrame  # date, long_short, long_short_weight (gross exposure / equity): run_backtest's window
    trades: pd.DataFrame  # TRADES, book = long_short
    result: PortfolioResult  # over the whole price history


def long_short_targets(
    pred: np.ndarray, cfg: PortfolioConfig, decide: np.ndarray, member: np.ndarray | None = None
) -> np.ndarray:
    """Target weights (T, N): on decision days with a prediction, the rank rule with shorting on,
    each side scaled to 1/2 of equity (sum of longs 1/2, of shorts -1/2); a day on which one side
    would be empty (fewer than 2 names) is flat; no order (NaN) elsewhere and on days with fewer
    than `min_tickers` predictions. `member` (T, N) bool, the point-in-time universe (None: every
    ticker): only members are ranked; a non-member gets 0 (sold) on a decision day."""
    pred = np.asarray(pred, float)
    if member is not None:
        pred = np.where(member, pred, np.nan)
    out = np.full(pred.shape, np.nan)
    rows = np.flatnonzero(np.asarray(decide, bool) & np.isfinite(pred).any(axis=1))
    if len(rows):
        out[rows] = long_short_weights(pred[rows], cfg)
    return out


def long_short_weights(p: np.ndarray, cfg: PortfolioConfig) -> np.ndarray:
    """`long_short_targets` on decision rows: predictions (R, N), or (S, R, N) for S prediction sets
    (row by row, so the sets never mix)."""
    w = rank_rule(
        p.reshape(-1, p.shape[-1]),
        top_k=cfg.top_k,
        top_fraction=cfg.top_fraction,
        allow_short=True,
        weighting=cfg.rank_weighting,
        min_tickers=cfg.min_tickers,
    ).reshape(p.shape)
    both = ((w > 0).any(axis=-1) & (w < 0).any(axis=-1))[..., None]
    return np.where(both, 0.5 * w, np.where(np.isnan(w), np.nan, 0.0))


def execution_config(cfg: PortfolioConfig) -> PortfolioConfig:
    """The strategy's execution (fill, costs, cash) without its policy: the long-short book's engine config."""
    return PortfolioConfig(
        fill=cfg.fill, commission_bps=cfg.commission_bps, slippage_bps=cfg.slippage_bps, initial_cash=cfg.initial_cash
    )


def long_short_book(
    prices: pd.DataFrame, predictions: pd.DataFrame, cfg: dict[str, Any], horizon: int, periods_per_year: int = 252
) -> tuple[LongShortBook | None, str]:
    """The long-short book of the model's `predictions` beside `run_backtest`'s books (same
    arguments), or (None, reason) for the threshold rule."""
    if cfg["rule"] != "rank":
        return None, NOT_RANK
    g = _grid(prices, predictions, cfg, horizon, periods_per_year)
    mk, pcfg = g.market, g.pcfg
    targets = long_short_targets(g.pred.to_numpy(), pcfg, g.decide, g.member)
    execution = execution_config(pcfg)
    res = run_vectorized(targets, close=mk.close, open_=mk.open, cfg=execution, dates=mk.dates, tickers=mk.tickers)
    start = max(g.first - 1, 0)
    equity = pd.DataFrame(
        {
            "date": mk.dates[start:],
            LONG_SHORT: res.equity[start:],
            weight_column(LONG_SHORT): np.nansum(np.abs(res.weights[start:]), axis=1),
        }
    )
    decided = ~np.isnan(targets).all(axis=1)
    wide = pd.DataFrame(targets[decided], index=mk.dates[decided].rename("date"), columns=mk.tickers)
    return LongShortBook(wide, equity, _book_trades(LONG_SHORT, res, start), res), ""
