"""Technical and calendar features per ticker, and the forward-return label.

Every feature at date t uses bars up to t only (rolling and recursive windows look back),
and every feature is a ratio or a return, so rescaling a ticker's whole history by a
constant (what a later dividend does to back-adjusted prices) leaves it unchanged.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lib.prices import adjusted

KEYS = ["date", "ticker"]
LABEL = "label"


def _ratio(num: pd.Series, den: pd.Series, fill: float) -> pd.Series:
    """num/den with `fill` where den is 0 (flat windows), NaN kept where inputs are NaN."""
    out = num / den.where(den != 0)
    return out.where(den != 0, fill).where(den.notna())


def _wilder(x: pd.Series, window: int) -> pd.Series:
    return x.ewm(alpha=1.0 / window, adjust=False, min_periods=window).mean()


def ticker_features(g: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Features and label for one ticker's bars, sorted by date."""
    g = adjusted(g)
    c, h, lo = g["adj_close"], g["adj_high"], g["adj_low"]
    logc = np.log(c)
    r1 = logc.diff()
    f: dict[str, pd.Series] = {}
    for w in cfg["return_windows"]:
        f[f"ret_{w}"] = logc - logc.shift(w)
    for w in cfg["sma_windows"]:
        f[f"sma_ratio_{w}"] = c / c.rolling(w).mean() - 1
    for w in cfg["ema_windows"]:
        f[f"ema_ratio_{w}"] = c / c.ewm(span=w, adjust=False, min_periods=w).mean() - 1
    gain, loss = _wilder(r1.clip(lower=0), cfg["rsi_window"]), _wilder(-r1.clip(upper=0), cfg["rsi_window"])
    f["rsi"] = _ratio(gain, gain + loss, 0.5) - 0.5
    fast = c.ewm(span=cfg["macd_fast"], adjust=False, min_periods=cfg["macd_fast"]).mean()
    slow = c.ewm(span=cfg["macd_slow"], adjust=False, min_periods=cfg["macd_slow"]).mean()
    macd = (fast - slow) / c
    signal = macd.ewm(span=cfg["macd_signal"], adjust=False, min_periods=cfg["macd_signal"]).mean()
    f["macd"], f["macd_signal"], f["macd_hist"] = macd, signal, macd - signal
    w = cfg["bollinger_window"]
    mid, sd = c.rolling(w).mean(), c.rolling(w).std(ddof=0)
    f["bollinger_pctb"] = _ratio(c - (mid - cfg["bollinger_k"] * sd), 2 * cfg["bollinger_k"] * sd, 0.5)
    prev = c.shift(1)
    true_range = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1, skipna=False)
    f["atr"] = _wilder(true_range, cfg["atr_window"]) / c
    for w in cfg["vol_windows"]:
        f[f"rvol_{w}"] = r1.rolling(w).std()
    lv = np.log1p(g["volume"])
    w = cfg["volume_window"]
    f["volume_z"] = _ratio(lv - lv.rolling(w).mean(), lv.rolling(w).std(), 0.0)
    if cfg["calendar"]:
        dow, month = g["date"].dt.dayofweek, g["date"].dt.month - 1
        f["dow_sin"], f["dow_cos"] = np.sin(2 * np.pi * dow / 5), np.cos(2 * np.pi * dow / 5)
        f["month_sin"], f["month_cos"] = np.sin(2 * np.pi * month / 12), np.cos(2 * np.pi * month / 12)
    out = pd.DataFrame(f)
    out[LABEL] = logc.shift(-cfg["horizon"]) - logc
    out.insert(0, "ticker", g["ticker"].to_numpy())
    out.insert(0, "date", g["date"].to_numpy())
    return out


def build_features(prices: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Long table `date, ticker, <features>, label`; warm-up rows (any feature NaN) dropped.

    The last `horizon` rows of each ticker keep a NaN label: they feed the live signal.
    """
    parts = [ticker_features(g.sort_values("date").reset_index(drop=True), cfg)
             for _, g in prices.groupby("ticker", sort=False)]
    out = pd.concat(parts, ignore_index=True)
    cols = feature_columns(out)
    out = out.replace([np.inf, -np.inf], np.nan).dropna(subset=cols)
    return out.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)


def feature_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c not in (*KEYS, LABEL)]
