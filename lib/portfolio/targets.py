"""The target book: the path-independent POLICY (rule -> filters -> sizing -> limits, from
`lib.portfolio.policy`) turns predictions and prices into target weights on decision days."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.portfolio.calendar import decision_days
from lib.portfolio.config import PortfolioConfig, as_panel, config_error
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


def _check_window(key: str, window: int | None, n_rows: int, extra: int = 0) -> None:
    if window is not None and window + extra > n_rows:
        raise config_error(
            key, f"({window}) is longer than the data ({n_rows} sessions): use a shorter window or more data"
        )


def decision_mask(n_rows: int, cfg: PortfolioConfig, dates: Any = None) -> np.ndarray:
    """Decision days: the last session of each period of `cfg.rebalance` when dates are given
    (`lib.portfolio.calendar.decision_days`), else every row."""
    if dates is None:
        return np.ones(n_rows, dtype=bool)
    return decision_days(pd.DatetimeIndex(dates), cfg.rebalance, cfg.calendar)


def target_book(
    predictions: Any, close: Any, cfg: PortfolioConfig, decide: Any = None, member: Any = None
) -> np.ndarray:
    """Path-independent POLICY: target weights (T, N) on decision days that have a prediction,
    NaN elsewhere (no order). Rule (`threshold`: +-1/n of equity, n = tickers alive; `rank`)
    -> filters (minimum |prediction|, trend) -> sizing (equal | volatility | kelly) -> the
    volatility-regime factor (a multiplier, so it acts as a filter on the target whichever the
    sizing; Kelly would overwrite it if applied first) -> limits. Row t uses predictions and
    prices up to the close of t only. `member` (T, N) bool, the point-in-time universe
    (`lib.data.membership`; None: every ticker): see `decision_targets`."""
    close = as_panel(close, "close")
    pred = as_panel(predictions, "predictions", close.shape)
    n_rows, n_cols = close.shape
    check_policy(cfg, close)
    decide = np.ones(n_rows, bool) if decide is None else np.asarray(decide, bool).reshape(-1)
    if decide.shape != (n_rows,):
        raise PipelineError(f"backtest: decide must have one flag per session ({n_rows}), got {decide.shape}")
    member = _universe(member, close.shape)
    if member is not None:
        pred = np.where(member, pred, np.nan)
    out = np.full((n_rows, n_cols), np.nan)
    rows = np.flatnonzero(decide & np.isfinite(pred).any(axis=1))
    if len(rows) == 0:
        return out
    out[rows] = decision_targets(pred[rows], close, cfg, rows, None if member is None else member[rows])
    return out


def _universe(member: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if member is None:
        return None
    m = np.asarray(member, bool)
    if m.shape != shape:
        raise PipelineError(f"backtest: member must be a (dates, tickers) mask of shape {shape}, got {m.shape}")
    return m


def _members_only(w: np.ndarray, member: np.ndarray | None) -> np.ndarray:
    """Outside the universe flat (0) on a row that has any target, so a member that leaves is sold at the
    next fill; a row without any target (the rank rule's min_tickers) stays NaN: no trade that day."""
    if member is None:
        return w
    return np.where(np.isfinite(w).any(axis=-1, keepdims=True) & ~member, 0.0, w)


def check_policy(cfg: PortfolioConfig, close: np.ndarray) -> None:
    """What the policy needs from the data: windows no longer than the history, top_k within the tickers."""
    n_rows, n_cols = close.shape
    _check_window("trend_window", cfg.trend_window, n_rows)
    if _vol_used(cfg):
        _check_window("vol_window", cfg.vol_window, n_rows, extra=1)
        _check_window("vol_regime_window", cfg.vol_regime_window, n_rows, extra=cfg.vol_window)
    if cfg.rule == "rank" and cfg.top_k is not None and cfg.top_k > n_cols:
        raise config_error("top_k", f"({cfg.top_k}) is more than the {n_cols} tickers")
    if cfg.rule == "rank" and cfg.top_fraction is not None and cfg.fully_invested:
        cfg.check_cap(max(math.floor(cfg.top_fraction * n_cols + 1e-9), 1))


def _vol_used(cfg: PortfolioConfig) -> bool:
    return cfg.sizing in ("volatility", "kelly") or cfg.vol_regime_window is not None


def _rule(
    p: np.ndarray, close: np.ndarray, cfg: PortfolioConfig, rows: np.ndarray, member: np.ndarray | None = None
) -> np.ndarray:
    if cfg.rule == "threshold":
        live = alive(close)[rows] if member is None else alive(close)[rows] & member
        return threshold_rule(p, live.sum(axis=1), cfg.threshold, cfg.allow_short)
    w = rank_rule(
        p.reshape(-1, p.shape[-1]),  # row by row: a leading axis of prediction sets is more rows
        top_k=cfg.top_k,
        top_fraction=cfg.top_fraction,
        allow_short=cfg.allow_short,
        weighting=cfg.rank_weighting,
        min_tickers=cfg.min_tickers,
    )
    return w.reshape(p.shape)


def decision_targets(
    p: np.ndarray, close: np.ndarray, cfg: PortfolioConfig, rows: np.ndarray, member: np.ndarray | None = None
) -> np.ndarray:
    """The policy's targets on decision rows `rows` (R,) of `close` (T, N), from their predictions
    `p`: (R, N), or (S, R, N) for S prediction sets at once (the permutation null), each set giving
    exactly what `target_book` gives it. Every step is row-wise or element-wise, so the sets
    share the price inputs (alive, trend, volatility) and never mix. `member` (R, N) bool, the
    point-in-time universe on those rows (None: every ticker): only members are ranked and bought
    (a non-member's prediction is ignored; the threshold rule's n counts the alive members), and a
    non-member gets 0 on a row with any target (`_members_only`)."""
    if member is not None:
        p = np.where(member, p, np.nan)
    w = _rule(p, close, cfg, rows, member)
    if cfg.min_abs_prediction > 0:
        w = magnitude_filter(w, p, cfg.min_abs_prediction)
    if cfg.trend_window is not None:
        w = trend_filter(w, live_close(close)[rows], sma(close, cfg.trend_window)[rows])
    vol = realised_vol(close, cfg.vol_window, cfg.periods_per_year) if _vol_used(cfg) else None
    if cfg.sizing == "volatility" and cfg.vol_scope == "position":
        w = size_volatility(w, vol[rows], cfg.target_vol)
    elif cfg.sizing == "volatility":
        returns = np.diff(np.log(live_close(close)), axis=0, prepend=np.nan)
        sets = w.reshape(-1, *w.shape[-2:])
        sized = [
            size_book_volatility(x, returns, rows, cfg.vol_window, cfg.target_vol, cfg.periods_per_year) for x in sets
        ]
        w = np.stack(sized).reshape(w.shape)
    elif cfg.sizing == "kelly":
        w = size_kelly(
            w,
            p,
            vol[rows],
            fraction=cfg.kelly_fraction,
            cap=cfg.kelly_cap,
            horizon=cfg.horizon,
            periods_per_year=cfg.periods_per_year,
        )
    if cfg.vol_regime_window is not None:
        w = w * vol_regime_scale(vol, cfg.vol_regime_window, cfg.vol_regime_quantile, cfg.vol_regime_scale)[rows]
    w = apply_limits(w, max_position=cfg.max_position, max_gross=cfg.max_gross, max_net=cfg.max_net)
    return _members_only(w, member)
