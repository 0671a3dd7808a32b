"""The prices an engine fills and marks at (`ExecutionPrices`): fills at the next open (decided
at the close before) or at the decision day's close; equity marked at the close (the last close
carried over gaps, 0 before a ticker's start); and the rows where a ticker whose prices end
before the data does is closed out (`lib.portfolio.delisting`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.portfolio.config import config_error


@dataclass(frozen=True)
class ExecutionPrices:
    mark: np.ndarray  # (T, N) close carried over gaps, 0 before a ticker's start: the value of a share
    fill: np.ndarray  # (T, N) fill price of an order row (open or close), NaN = not trading
    lag: bool  # fills at the open: a share that does not trade is worth the previous close
    delist: dict[int, tuple[np.ndarray, np.ndarray]]  # row -> (assets, last close) closed out on that row

    def fill_mark(self, t: int) -> np.ndarray:
        """Value of a share that does not trade on order row t (its last known close)."""
        if not self.lag:
            return self.mark[t]
        return self.mark[t - 1] if t > 0 else np.zeros(self.mark.shape[1])


def execution_prices(close: np.ndarray, open_: np.ndarray | None, fill: str) -> ExecutionPrices:
    if fill == "close":
        fill_px = close
    else:
        if open_ is None:
            raise config_error("fill", "is next_open but no open prices were given")
        fill_px = open_
    if not np.nanmin(fill_px, initial=np.inf) > 0:
        fill_px = np.where(fill_px > 0, fill_px, np.nan)  # a price <= 0 is no price
    if math.isfinite(np.add.reduce(close, axis=None)):  # no gaps: one pass, no temporary
        return ExecutionPrices(close, fill_px, fill != "close", {})
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
    return ExecutionPrices(
        mark, fill_px, fill != "close", {t: (np.array(a), np.array(p)) for t, (a, p) in delist.items()}
    )
