"""A portfolio backtest in one call (`run_portfolio`): the target book, then the engine named by
`engine` (`auto`: vectorized unless a path-dependent control is on). On what both support the
engines agree to 1e-9 relative."""

from __future__ import annotations

from typing import Any

from lib.portfolio.config import PortfolioConfig, as_panel
from lib.portfolio.event import run_event
from lib.portfolio.ledger import PortfolioResult
from lib.portfolio.targets import decision_mask, target_book
from lib.portfolio.vectorized import run_vectorized


def run_portfolio(
    predictions: Any,
    *,
    close: Any,
    open_: Any = None,
    high: Any = None,
    low: Any = None,
    cfg: PortfolioConfig | None = None,
    dates: Any = None,
    tickers: Any = None,
    decide: Any = None,
    member: Any = None,
) -> PortfolioResult:
    """Policy + engine. predictions, close, open_, high, low: (T, N) arrays of the same shape
    (adjusted prices; NaN where a ticker has no bar or no prediction). `decide` (T,) bool marks
    decision days; default: `decision_mask(T, cfg, dates)`. `member` (T, N) bool: the point-in-time
    universe (None: every ticker; `lib.portfolio.targets.decision_targets`). `cfg.engine`: auto picks the event
    engine only when a path-dependent control is on."""
    cfg = cfg or PortfolioConfig()
    close = as_panel(close, "close")
    if decide is None:
        decide = decision_mask(close.shape[0], cfg, dates)
    targets = target_book(predictions, close, cfg, decide, member)
    if cfg.resolved_engine == "vectorized":
        return run_vectorized(targets, close=close, open_=open_, cfg=cfg, dates=dates, tickers=tickers)
    return run_event(targets, close=close, open_=open_, high=high, low=low, cfg=cfg, dates=dates, tickers=tickers)
