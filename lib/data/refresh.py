"""Incremental refresh of stored bars: for each ticker ask the vendor only for the bars from the last few stored
ones on, check that those overlapping bars are still what the vendor says, and append the new ones.

A stored bar that the vendor now reports differently (beyond `data.refresh_tolerance`, relative), or no longer
reports, means a split, a dividend (the vendor rescales its whole adjusted history) or a revision: that ticker is
refetched in full, with one log line naming it and the first differing date. Nothing is written here: the caller
writes the result atomically, and only when every ticker succeeded (`refresh_bars` raises otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.tables import COLUMNS, PRICE_COLUMNS

log = logging.getLogger(__name__)

Fetch = Callable[[str, str | None], pd.DataFrame]  # (ticker, start or None: all history) -> date + PRICE_COLUMNS


@dataclass(frozen=True)
class TickerUpdate:
    """What a refresh did to one ticker: the date it asked the vendor for bars from (None: all history), the bars
    it got, how many of them are new (after the last stored bar), its last bar now, and why it was fetched in full
    (None: it was not; "not in the store"; "differs from YYYY-MM-DD (columns)")."""

    ticker: str
    asked_from: str | None
    received: int
    new: int
    last: str
    refetched: str | None = None


@dataclass(frozen=True)
class Refresh:
    """The refreshed bars (the long table `COLUMNS`, sorted by ticker then date; tickers not asked for kept as
    they were) and one `TickerUpdate` per ticker asked for."""

    bars: pd.DataFrame
    updates: list[TickerUpdate]

    @property
    def changed(self) -> bool:
        """Whether anything differs from the store it started from (new bars or a refetched ticker)."""
        return any(u.new or u.refetched for u in self.updates)


def _day(d: object) -> str:
    return str(pd.Timestamp(d).date())


def first_difference(stored: pd.DataFrame, now: pd.DataFrame, tolerance: float) -> tuple[str, str] | None:
    """The first date where two runs of one ticker's bars (date + PRICE_COLUMNS) disagree, and how: a bar only one
    of them has, or the columns that differ by more than `tolerance` relative to the stored value (NaN equals NaN).
    None when they agree."""
    a = stored.set_index(stored["date"].to_numpy().astype("datetime64[D]"))[PRICE_COLUMNS]
    b = now.set_index(now["date"].to_numpy().astype("datetime64[D]"))[PRICE_COLUMNS]
    union = a.index.union(b.index)
    if not (a.index.equals(union) and b.index.equals(union)):
        first = union.difference(a.index.intersection(b.index))[0]
        return _day(first), ("a bar the vendor no longer has" if first in a.index else "a bar the store lacks")
    x, y = a.to_numpy(float), b.to_numpy(float)
    bad = ~(np.isclose(y, x, rtol=tolerance, atol=0.0, equal_nan=True) | (x == y))
    rows = np.flatnonzero(bad.any(axis=1))
    if len(rows) == 0:
        return None
    cols = [c for c, flag in zip(PRICE_COLUMNS, bad[rows[0]], strict=True) if flag]
    return _day(union[rows[0]]), ",".join(cols)


def _fewer(ticker: str, old: pd.DataFrame, full: pd.DataFrame, source: str) -> None:
    """A full refetch must cover the stored span with at least as many bars as the store holds there."""
    span = (full["date"] >= old["date"].iloc[0]) & (full["date"] <= old["date"].iloc[-1])
    if int(span.sum()) < len(old):
        raise PipelineError(
            f"refresh: {source} returned {int(span.sum())} bars for {ticker} from {_day(old['date'].iloc[0])} to "
            f"{_day(old['date'].iloc[-1])}, fewer than the {len(old)} stored: nothing written (the vendor dropped "
            "history; keep the store, or delete it to accept the vendor's)"
        )


def _update_one(
    ticker: str, old: pd.DataFrame, fetch: Fetch, start: str | None, overlap: int, tolerance: float, source: str
) -> tuple[pd.DataFrame, TickerUpdate]:
    """One ticker: its bars after the refresh (date + PRICE_COLUMNS) and what was done."""
    if old.empty:
        full = fetch(ticker, start)
        return full, TickerUpdate(ticker, start, len(full), len(full), _day(full["date"].iloc[-1]), "not in the store")
    last = old["date"].iloc[-1]
    tail = old.iloc[-min(overlap, len(old)) :]
    since = _day(tail["date"].iloc[0])
    got = fetch(ticker, since)
    new = got[got["date"] > last]
    diff = first_difference(tail, got[got["date"] <= last], tolerance)
    if diff is None:
        bars = pd.concat([old, new], ignore_index=True)
        return bars, TickerUpdate(ticker, since, len(got), len(new), _day(bars["date"].iloc[-1]))
    log.warning(
        "%s: the stored bars differ from %s's from %s (%s): a split, dividend or revision; refetching it in full",
        ticker,
        source,
        diff[0],
        diff[1],
    )
    full = fetch(ticker, start)
    _fewer(ticker, old, full, source)
    n_new = int((full["date"] > last).sum())
    why = f"differs from {diff[0]} ({diff[1]})"
    return full, TickerUpdate(ticker, start, len(full), n_new, _day(full["date"].iloc[-1]), why)


def refresh_bars(
    stored: pd.DataFrame | None,
    tickers: list[str],
    fetch: Fetch,
    start: str | None,
    overlap: int,
    tolerance: float,
    source: str,
) -> Refresh:
    """Refresh `tickers` in `stored` (the long table, or None: nothing stored yet) from `fetch`.

    A ticker with stored bars is asked for bars from its `overlap`-th last stored bar on; one without is fetched
    from `start` (data.start). Every ticker is tried; if any fetch fails, one PipelineError names every failing
    ticker and the first failure, and nothing is returned to write (the store stays as it was). A vendor that
    returns fewer bars over the stored span than the store holds is an error too."""
    stored = stored if stored is not None else pd.DataFrame(columns=COLUMNS)
    by_ticker = {t: g.drop(columns="ticker").reset_index(drop=True) for t, g in stored.groupby("ticker", sort=False)}
    empty = pd.DataFrame(columns=["date", *PRICE_COLUMNS])
    parts, updates, failed = [], [], {}
    for ticker in tickers:
        try:
            bars, update = _update_one(ticker, by_ticker.get(ticker, empty), fetch, start, overlap, tolerance, source)
        except PipelineError as exc:
            if str(exc).startswith("refresh: "):  # fewer bars than stored: stop at once
                raise
            failed[ticker] = str(exc)
            continue
        parts.append(bars.assign(ticker=ticker))
        updates.append(update)
    if failed:
        first = next(iter(failed.values()))
        raise PipelineError(
            f"refresh: fetching failed for {len(failed)} of {len(tickers)} ticker(s): {', '.join(failed)} "
            f"(first: {first}); nothing written, the store is as it was"
        )
    kept = stored[~stored["ticker"].isin(tickers)]
    table = pd.concat([kept, *parts] if len(kept) else parts, ignore_index=True)[COLUMNS]
    table = table.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
    return Refresh(table, updates)
