"""Technical and calendar features per ticker, and the forward-return label.

Every feature at date t uses bars up to t only (rolling and recursive windows look back),
and every feature is a ratio or a return, so rescaling a ticker's whole history by a
constant (what a later dividend does to back-adjusted prices) leaves it unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.api.indexers import BaseIndexer

from lib.data.prices import adjusted
from lib.tables import KEYS, LABEL, LABEL_END


def _ratio(num: pd.Series, den: pd.Series, fill: float) -> pd.Series:
    """num/den with `fill` where den is 0 (flat windows), NaN kept where inputs are NaN."""
    out = num / den.where(den != 0)
    return out.where(den != 0, fill).where(den.notna())


class _Groups:
    """Segment boundaries of a table sorted by ticker: every operation below restarts at each
    ticker's first row, so one call over the whole long table equals one call per ticker."""

    def __init__(self, codes: np.ndarray) -> None:
        n = len(codes)
        first = np.ones(n, dtype=bool)
        first[1:] = codes[1:] != codes[:-1]
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], n)
        sizes = ends - starts
        self.codes = codes
        self.row_start = np.repeat(starts, sizes)  # first row of each row's ticker
        self.row_end = np.repeat(ends, sizes)  # one past its last row

    def shift(self, x: pd.Series, k: int) -> pd.Series:
        """`x.shift(k)` within each ticker (k < 0 looks ahead)."""
        values = x.to_numpy(dtype=float)
        out = np.full(len(values), np.nan)
        idx = np.arange(len(values)) - k
        ok = (idx >= self.row_start) & (idx < self.row_end)
        out[ok] = values[idx[ok]]
        return pd.Series(out, index=x.index)

    def rolling(self, x: pd.Series, window: int) -> Any:
        """`x.rolling(window)` within each ticker: pandas' own kernels on the whole column, with
        each window clipped at its ticker's first row (a window never spans two tickers)."""
        return x.rolling(_TickerWindow(starts=self.row_start, window_size=window), min_periods=window)

    def ewm(self, x: pd.Series, **kwargs: Any) -> pd.Series:
        """`x.ewm(**kwargs).mean()` within each ticker (pandas' grouped kernel restarts per ticker)."""
        out = x.groupby(self.codes, sort=True).ewm(**kwargs).mean()
        return pd.Series(out.to_numpy(), index=x.index)


class _TickerWindow(BaseIndexer):
    """Trailing window of `window_size` rows that starts no earlier than the row's ticker."""

    def get_window_bounds(
        self,
        num_values: int = 0,
        min_periods: int | None = None,
        center: bool | None = None,
        closed: str | None = None,
        step: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        end = np.arange(1, num_values + 1, dtype=np.int64)
        start = np.maximum(end - self.window_size, self.starts).astype(np.int64)
        return start, end


CALENDAR = ("dow_sin", "dow_cos", "month_sin", "month_cos")  # the same for every ticker on a date


def sorted_bars(prices: pd.DataFrame) -> tuple[pd.DataFrame, _Groups]:
    """The price table sorted by ticker then date, with adjusted OHLC (`lib.data.prices.adjusted`),
    and its ticker segments: what every feature set is computed from."""
    g = prices[prices["ticker"].notna()].sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
    grp = _Groups(pd.factorize(g["ticker"], sort=False)[0])
    return adjusted(g), grp


def labelled_table(g: pd.DataFrame, grp: _Groups, f: dict[str, pd.Series], horizon: int) -> pd.DataFrame:
    """`date, ticker, <features f>, label, label_end` over the rows of `sorted_bars`; warm-up rows
    (any feature NaN or infinite) dropped. The last `horizon` rows of each ticker keep a NaN label:
    they feed the live signal."""
    logc = np.log(g["adj_close"])
    label = (grp.shift(logc, -horizon) - logc).to_numpy()
    ahead = np.arange(len(g)) + horizon  # the ticker's own horizon-th next row realises the label
    dates = g["date"].to_numpy("datetime64[ns]")
    label_end = np.where(ahead < grp.row_end, dates[np.minimum(ahead, len(g) - 1)], np.datetime64("NaT"))
    keep = np.ones(len(g), dtype=bool)
    for values in f.values():
        keep &= np.isfinite(values.to_numpy(dtype=float))
    rows = np.flatnonzero(keep)
    block = np.empty((len(f), len(rows)))  # the kept rows, copied once, one feature per row
    for row, values in zip(block, f.values(), strict=True):
        np.take(values.to_numpy(dtype=float), rows, out=row)
    out = pd.DataFrame(block.T, columns=list(f), copy=False)
    out.insert(0, "ticker", g["ticker"].to_numpy()[rows])
    out.insert(0, "date", g["date"].to_numpy()[rows])
    out[LABEL] = np.where(np.isinf(label), np.nan, label)[rows]
    out[LABEL_END] = label_end[rows]
    return out


def build_features(prices: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """The basic set (`features.set: basic`): long table `date, ticker, <features>, label, label_end`,
    sorted by ticker then date; warm-up rows (any feature NaN) dropped.

    Computed over the whole long table at once: shifts, rolling windows and recursive averages
    restart at each ticker's first row, giving exactly (bit for bit) what a per-ticker
    computation gives.
    """
    g, grp = sorted_bars(prices)
    c, h, lo = g["adj_close"], g["adj_high"], g["adj_low"]
    logc = np.log(c)
    r1 = logc - grp.shift(logc, 1)
    f: dict[str, pd.Series] = {}
    for w in cfg["return_windows"]:
        f[f"ret_{w}"] = logc - grp.shift(logc, w)
    for w in cfg["sma_windows"]:
        f[f"sma_ratio_{w}"] = c / grp.rolling(c, w).mean() - 1
    for w in cfg["ema_windows"]:
        f[f"ema_ratio_{w}"] = c / grp.ewm(c, span=w, adjust=False, min_periods=w) - 1

    def wilder(x: pd.Series, window: int) -> pd.Series:
        return grp.ewm(x, alpha=1.0 / window, adjust=False, min_periods=window)

    gain, loss = wilder(r1.clip(lower=0), cfg["rsi_window"]), wilder(-r1.clip(upper=0), cfg["rsi_window"])
    f["rsi"] = _ratio(gain, gain + loss, 0.5) - 0.5
    fast = grp.ewm(c, span=cfg["macd_fast"], adjust=False, min_periods=cfg["macd_fast"])
    slow = grp.ewm(c, span=cfg["macd_slow"], adjust=False, min_periods=cfg["macd_slow"])
    macd = (fast - slow) / c
    signal = grp.ewm(macd, span=cfg["macd_signal"], adjust=False, min_periods=cfg["macd_signal"])
    f["macd"], f["macd_signal"], f["macd_hist"] = macd, signal, macd - signal
    w = cfg["bollinger_window"]
    mid, sd = grp.rolling(c, w).mean(), grp.rolling(c, w).std(ddof=0)
    f["bollinger_pctb"] = _ratio(c - (mid - cfg["bollinger_k"] * sd), 2 * cfg["bollinger_k"] * sd, 0.5)
    prev = grp.shift(c, 1)
    true_range = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1, skipna=False)
    f["atr"] = wilder(true_range, cfg["atr_window"]) / c
    for w in cfg["vol_windows"]:
        f[f"rvol_{w}"] = grp.rolling(r1, w).std()
    lv = np.log1p(g["volume"])
    w = cfg["volume_window"]
    f["volume_z"] = _ratio(lv - grp.rolling(lv, w).mean(), grp.rolling(lv, w).std(), 0.0)
    if cfg["calendar"]:
        dow, month = g["date"].dt.dayofweek, g["date"].dt.month - 1
        cycles = (np.sin(2 * np.pi * dow / 5), np.cos(2 * np.pi * dow / 5))
        cycles += (np.sin(2 * np.pi * month / 12), np.cos(2 * np.pi * month / 12))
        f.update(zip(CALENDAR, cycles, strict=True))
    return labelled_table(g, grp, f, cfg["horizon"])


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in (*KEYS, LABEL, LABEL_END)]
