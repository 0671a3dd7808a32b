"""Price-table helpers shared by features and backtest: total-return adjusted OHLC, wide tables."""

from __future__ import annotations

import pandas as pd


def adjusted(df: pd.DataFrame) -> pd.DataFrame:
    """Add `adj_open/adj_high/adj_low`: open/high/low scaled by adj_close/close (dividends and splits).

    Returns are always taken from `adj_close`; every derived quantity is a ratio, so the
    constant rescaling that a later dividend applies to back-adjusted history changes nothing.
    """
    factor = df["adj_close"] / df["close"]
    return df.assign(adj_open=df["open"] * factor, adj_high=df["high"] * factor, adj_low=df["low"] * factor)


def wide_table(df: pd.DataFrame, column: str, tickers: list[str] | None = None) -> pd.DataFrame:
    """One column of the long table as a wide one: dates x tickers (NaN where a ticker has no row)."""
    wide = df.pivot(index="date", columns="ticker", values=column).sort_index()
    return wide if tickers is None else wide.reindex(columns=tickers)
