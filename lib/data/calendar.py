"""The exchange calendar: the sessions an exchange is open, from `exchange_calendars` (`data.calendar`; XNYS, the
NYSE, by default: its real holidays and unscheduled closures, e.g. 4 July, Good Friday, 11-14 September 2001).

Calendars are computed by rules, offline. One calendar per name is built per process (about 0.3 s) and cached as
its session array and a day-by-day running count; the span grows by whole years when a later call asks for dates
outside it. Every function works on whole arrays of dates (array lookups in that count), never one
exchange_calendars call per row.

Dates are compared as days (`datetime64[D]`): a timestamp's time of day is ignored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.schema import SCHEMA

DEFAULT_CALENDAR = "XNYS"  # params.yaml data.calendar
PERIODS = ("weekly", "monthly", "daily")  # backtest.rebalance


@dataclass(frozen=True)
class _Span:
    """The sessions of one calendar over whole years [first, last], with a day-by-day count for O(1) lookups."""

    first: int  # first year
    last: int  # last year
    days: np.ndarray  # the sessions, sorted datetime64[D]
    base: int  # day number of 1 January of `first`
    below: np.ndarray  # below[k]: sessions before day base + k (k = 0 ... days in the span)

    @classmethod
    def of(cls, first: int, last: int, days: np.ndarray) -> _Span:
        base = int(np.datetime64(f"{first}-01-01", "D").astype(np.int64))
        n = int(np.datetime64(f"{last}-12-31", "D").astype(np.int64)) - base + 1
        flags = np.zeros(n, dtype=np.int64)
        flags[days.astype(np.int64) - base] = 1
        return cls(first, last, days, base, np.concatenate([[0], np.cumsum(flags)]))

    def before(self, dates: np.ndarray) -> np.ndarray:
        """For each date, the number of sessions strictly before it."""
        return self.below[dates.astype(np.int64) - self.base]

    def upto(self, dates: np.ndarray) -> np.ndarray:
        """For each date, the number of sessions up to and including it."""
        return self.below[dates.astype(np.int64) - self.base + 1]


_CACHE: dict[str, _Span] = {}  # one span of sessions per calendar name


def _days(dates: Any) -> np.ndarray:
    """Dates (a scalar, list, Series, DatetimeIndex or datetime64 array) -> a datetime64[D] array."""
    if isinstance(dates, np.ndarray) and dates.dtype.kind == "M":
        return dates.astype("datetime64[D]")
    return np.asarray(pd.DatetimeIndex(np.atleast_1d(np.asarray(dates, dtype="datetime64[ns]"))), dtype="datetime64[D]")


def _build(name: str, first_year: int, last_year: int) -> np.ndarray:
    import exchange_calendars as xcals  # about 0.4 s to import: only when a calendar is needed

    SCHEMA["data"]["calendar"].check("data.calendar", name)  # an unknown name: the params message
    try:
        with warnings.catch_warnings():  # exchange_calendars 4.13 on pandas 3: deprecation notices only
            warnings.simplefilter("ignore")
            cal = xcals.get_calendar(name, start=f"{first_year}-01-01", end=f"{last_year}-12-31")
    except (ValueError, NotImplementedError, xcals.errors.CalendarError) as exc:  # a span outside its bounds
        raise PipelineError(
            f"data.calendar {name}: exchange_calendars cannot compute sessions for {first_year}-{last_year} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})"
        ) from None
    return np.asarray(cal.sessions, dtype="datetime64[D]")


def _span(name: str, first: Any, last: Any) -> _Span:
    """The cached sessions of calendar `name` over whole years covering [first, last] and the year after `last`
    (so that the next session after any date up to `last` is known); rebuilt over the union when outside it."""
    lo, hi = int(pd.Timestamp(first).year), int(pd.Timestamp(last).year) + 1
    cached = _CACHE.get(name)
    if cached is not None and cached.first <= lo and hi <= cached.last:
        return cached
    if cached is not None:
        lo, hi = min(lo, cached.first), max(hi, cached.last)
    _CACHE[name] = _Span.of(lo, hi, _build(name, lo, hi))
    return _CACHE[name]


def all_sessions(name: str, first: Any, last: Any) -> np.ndarray:
    """Every session of calendar `name` over whole years covering [first, last] (and the year after), as a sorted
    datetime64[D] array; computed once per process and name."""
    return _span(name, first, last).days


def sessions(name: str, start: Any, end: Any) -> pd.DatetimeIndex:
    """The sessions of calendar `name` from `start` to `end`, both inclusive (midnight timestamps)."""
    s, e = _days([start, end])
    span = _span(name, s, e)
    return pd.DatetimeIndex(span.days[int(span.before(s)) : int(span.upto(e))]).as_unit("ns")


def next_sessions(name: str, dates: Any) -> np.ndarray:
    """For each date, the first session strictly after it (datetime64[D]); a holiday or a weekend date works too."""
    d = _days(dates)
    if len(d) == 0:
        return d
    span = _span(name, d.min(), d.max())
    return span.days[span.upto(d)]


def next_session(name: str, date: Any) -> pd.Timestamp:
    """The first session strictly after `date` (3 July 2024 -> 5 July 2024 on XNYS; Thursday 28 March 2024 ->
    Monday 1 April 2024, Good Friday being closed)."""
    return pd.Timestamp(next_sessions(name, [date])[0])


def missing_sessions(name: str, before: Any, after: Any) -> np.ndarray:
    """For each pair (before[i], after[i]), the number of sessions strictly between the two dates (int64): 0 for
    consecutive sessions, and 0 across a holiday (2 July -> 5 July 2024 misses only 3 July: 1)."""
    b, a = _days(before), _days(after)
    if len(b) == 0:
        return np.zeros(0, dtype=np.int64)
    span = _span(name, min(b.min(), a.min()), max(b.max(), a.max()))
    return np.maximum(span.before(a) - span.upto(b), 0)


def period_key(dates: Any, period: str) -> np.ndarray:
    """An int64 per date naming its rebalance period: ISO year * 100 + ISO week (`weekly`), year * 12 + month
    (`monthly`), or the row number (`daily`: every row its own period)."""
    idx = pd.DatetimeIndex(dates)
    if period == "weekly":
        iso = idx.isocalendar()
        return iso["year"].to_numpy(np.int64) * 100 + iso["week"].to_numpy(np.int64)
    if period == "monthly":
        return idx.year.to_numpy(np.int64) * 12 + idx.month.to_numpy(np.int64)
    if period == "daily":
        return np.arange(len(idx), dtype=np.int64)
    raise PipelineError(f"period must be one of {list(PERIODS)}, got {period!r}")


def closes_period(name: str, dates: Any, period: str) -> np.ndarray:
    """True where no session of calendar `name` follows the date within its week/month, i.e. the date is (at or
    after) the last real session of its period; always True for `daily`. Thursday 28 March 2024 closes its week
    (Good Friday), Wednesday 3 July 2024 does not (Friday 5 July is open)."""
    d = _days(dates)
    if period == "daily" or len(d) == 0:
        return np.ones(len(d), dtype=bool)
    nxt = next_sessions(name, d)
    return period_key(d, period) != period_key(nxt, period)


def period_ends(name: str, start: Any, end: Any, period: str) -> pd.DatetimeIndex:
    """The last session of each week/month (every session for `daily`) from `start` to `end`, inclusive."""
    days = sessions(name, start, end)
    return days[closes_period(name, days, period)]
