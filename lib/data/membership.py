"""A point-in-time universe: an index's membership history (`data.membership`, a CSV `ticker,start,end`).

Each row is one interval in which `ticker` was a member, dates YYYY-MM-DD, both ends inclusive; an
empty `end` means still a member. The file lives in MEMBERSHIP_DIR (dvc.yaml tracks that folder, so
an edited file reruns what depends on it). Membership filters decisions, never features: a ticker's
features may use its history from before it joined.

No look-ahead: whether (t, ticker) is a member depends only on the intervals that contain t, which an
index publishes when a change takes effect; nothing dated after t is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.tables import IN_UNIVERSE

MEMBERSHIP_COLUMNS = ["ticker", "start", "end"]
_OPEN_END = np.iinfo(np.int64).max  # `end` empty: still a member
_SPAN = 1 << 33  # composite key ticker_code * _SPAN + day; |day| < 2**32 for any datetime64[ns] date


@dataclass(frozen=True)
class Membership:
    """The intervals of one membership file, sorted by ticker then start (no two of a ticker overlap)."""

    source: str  # the file, for messages
    tickers: tuple[str, ...]  # the distinct tickers with an interval, sorted
    code: np.ndarray  # (K,) index into `tickers` of each interval
    start: np.ndarray  # (K,) first day of membership (days since 1970-01-01), inclusive
    end: np.ndarray  # (K,) last day, inclusive (_OPEN_END: still a member)

    def is_member(self, dates: Any, tickers: Any) -> np.ndarray:
        """Element-wise: was tickers[i] a member on dates[i]? A ticker without an interval never is.
        Vectorised: one searchsorted over the (ticker, start) keys, no loop over rows or intervals."""
        days = _days(dates)
        qcode = pd.Categorical(np.asarray(tickers, dtype=object), categories=list(self.tickers)).codes.astype(np.int64)
        if days.shape != qcode.shape:
            raise PipelineError(
                f"{self.source}: is_member needs one ticker per date, got {days.shape} and {qcode.shape}"
            )
        keys = self.code * _SPAN + self.start
        idx = np.searchsorted(keys, qcode * _SPAN + days, side="right") - 1  # the last interval starting <= day
        safe = np.clip(idx, 0, None)
        return (qcode >= 0) & (idx >= 0) & (self.code[safe] == qcode) & (days <= self.end[safe])

    def mark(self, table: pd.DataFrame) -> pd.DataFrame:
        """`table` (date, ticker, ...) with IN_UNIVERSE: 1 where the ticker is a member on the row's date, else 0
        (int8: a number column, as every non-date, non-text column of a stage's table)."""
        return table.assign(**{IN_UNIVERSE: self.is_member(table["date"], table["ticker"]).astype(np.int8)})

    def panel(self, dates: Any, tickers: list[str]) -> np.ndarray:
        """(dates x tickers) bool: membership on each date of each ticker."""
        d = pd.DatetimeIndex(dates)
        return self.is_member(
            np.repeat(d.to_numpy(), len(tickers)), np.tile(np.asarray(tickers, object), len(d))
        ).reshape(len(d), len(tickers))


def _days(dates: Any) -> np.ndarray:
    return pd.DatetimeIndex(np.asarray(dates)).to_numpy().astype("datetime64[D]").astype(np.int64)


def _parse_dates(df: pd.DataFrame, column: str, path: Path, optional: bool) -> np.ndarray:
    """Days since 1970 of a YYYY-MM-DD column; an empty `end` (optional) is _OPEN_END."""
    text = df[column].str.strip()
    parsed = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
    blank = text == ""
    bad = parsed.isna() & ~(blank & optional)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise PipelineError(
            f"{path}, line {i + 2}: {column} {df[column].iloc[i]!r} is not a date YYYY-MM-DD "
            f"(ticker {df['ticker'].iloc[i]})"
        )
    days = parsed.to_numpy().astype("datetime64[D]").astype(np.int64)
    return np.where(blank.to_numpy(), _OPEN_END, days) if optional else days


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"data.membership: file {path} not found (a CSV ticker,start,end)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{path}: not a readable CSV file ({reason})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in MEMBERSHIP_COLUMNS if c not in df.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {missing}; a membership file has columns ticker,start,end")
    extra = [c for c in df.columns if c not in MEMBERSHIP_COLUMNS]
    if extra:
        raise PipelineError(f"{path}: unknown column(s) {extra}; a membership file has columns ticker,start,end")
    if df.empty:
        raise PipelineError(f"{path}: no membership rows (ticker,start,end)")
    df["ticker"] = df["ticker"].str.strip()
    blank = np.flatnonzero((df["ticker"] == "").to_numpy())
    if len(blank):
        raise PipelineError(f"{path}, line {blank[0] + 2}: empty ticker")
    return df


def _check_intervals(path: Path, df: pd.DataFrame, start: np.ndarray, end: np.ndarray, order: np.ndarray) -> None:
    """No interval ends before it starts; no two intervals of one ticker share a day (ends are inclusive)."""
    reversed_ = np.flatnonzero(end < start)
    if len(reversed_):
        i = reversed_[0]
        raise PipelineError(
            f"{path}, line {i + 2}: ticker {df['ticker'].iloc[i]} ends ({df['end'].iloc[i]}) before it starts "
            f"({df['start'].iloc[i]})"
        )
    tick = df["ticker"].to_numpy()[order]
    clash = np.flatnonzero((tick[1:] == tick[:-1]) & (start[order][1:] <= end[order][:-1]))
    if len(clash):
        a, b = sorted((int(order[clash[0]]), int(order[clash[0] + 1])))
        raise PipelineError(
            f"{path}, lines {a + 2} and {b + 2}: intervals of ticker {tick[clash[0]]} overlap "
            f"({df['start'].iloc[a]}..{df['end'].iloc[a] or 'open'} and {df['start'].iloc[b]}..{df['end'].iloc[b] or 'open'})"
        )


def load_membership(path: str | Path, known: list[str]) -> Membership:
    """Read and check a membership file against `known`, the tickers of the price table (data.tickers).
    Each problem is one line naming the file, line and ticker: a missing column, a bad date, an empty
    ticker, a ticker not in `known`, an interval that ends before it starts, two overlapping intervals."""
    path = Path(path)
    df = _read(path)
    start = _parse_dates(df, "start", path, optional=False)
    end = _parse_dates(df, "end", path, optional=True)
    unknown = np.flatnonzero(~df["ticker"].isin(set(known)).to_numpy())
    if len(unknown):
        i = unknown[0]
        raise PipelineError(
            f"{path}, line {i + 2}: ticker {df['ticker'].iloc[i]} is not in the price table (data.tickers: "
            f"{len(known)} tickers); drop its rows or add it to data.tickers"
        )
    order = np.lexsort((start, df["ticker"].to_numpy()))
    _check_intervals(path, df, start, end, order)
    tickers = tuple(sorted(set(df["ticker"])))
    code = pd.Categorical(df["ticker"].to_numpy()[order], categories=list(tickers)).codes.astype(np.int64)
    return Membership(str(path), tickers, code, start[order], end[order])
