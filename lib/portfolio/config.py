"""The portfolio backtest's settings (`PortfolioConfig`, the `backtest:` section of params.yaml,
checked by `lib.params`) and the checks of its inputs: every panel a (dates, tickers) float array."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from lib.data.calendar import DEFAULT_CALENDAR
from lib.errors import PipelineError
from lib.params import check_backtest, check_rank_cap, fully_invested, path_dependent


def config_error(key: str, message: str) -> PipelineError:
    return PipelineError(f"backtest.{key} {message}")


@dataclass(frozen=True)
class PortfolioConfig:
    """Every number of the portfolio backtest; field names are the keys under `backtest:` in
    params.yaml (`PortfolioConfig.from_params(params["backtest"])`). None turns a control off."""

    # execution
    fill: str = "next_open"  # next_open | close (of the decision day)
    rebalance: str = "weekly"  # weekly | monthly | daily (decision days, when dates are given)
    calendar: str = DEFAULT_CALENDAR  # data.calendar: the exchange's sessions (lib.data.calendar) decide the final row
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


def as_panel(x: Any, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or (shape is not None and a.shape != shape):
        raise PipelineError(f"backtest: {name} must be a (dates, tickers) array of shape {shape}, got {a.shape}")
    return a
