"""The exchange calendar (lib/data/calendar.py, exchange_calendars XNYS): sessions, the next session, the last
session of a week or month, when the signal's orders execute, and validation's gaps in sessions."""

import numpy as np
import pandas as pd
import pytest

from lib.data import calendar as cal
from lib.data.validation import validate_prices
from lib.errors import PipelineError
from lib.params import validate_params
from lib.portfolio.calendar import decision_days, execution_date
from tests.helpers import default_params


def _days(*dates: str) -> list[str]:
    return [str(pd.Timestamp(d).date()) for d in dates]


@pytest.mark.parametrize(
    ("as_of", "executes"),
    [
        ("2024-07-03", "2024-07-05"),  # Wednesday before Independence Day
        ("2024-03-28", "2024-04-01"),  # Thursday before Good Friday
        ("2024-09-13", "2024-09-16"),  # a plain Friday
        ("2019-12-31", "2020-01-02"),  # New Year's Day
        ("2001-09-10", "2001-09-17"),  # the exchange closed after 11 September
        ("2024-07-06", "2024-07-08"),  # a Saturday: the next session all the same
    ],
)
def test_orders_execute_on_the_next_real_session(as_of, executes):
    assert str(cal.next_session("XNYS", as_of).date()) == executes
    assert str(execution_date(pd.Timestamp(as_of), "next_open", "XNYS").date()) == executes
    assert execution_date(pd.Timestamp(as_of), "close", "XNYS") == pd.Timestamp(as_of)


def test_sessions_are_the_real_nyse_ones():
    assert _days(*cal.sessions("XNYS", "2024-07-01", "2024-07-08")) == _days(
        "2024-07-01", "2024-07-02", "2024-07-03", "2024-07-05", "2024-07-08"
    )
    assert len(cal.sessions("XNYS", "2023-01-01", "2023-12-31")) == 250
    assert len(cal.sessions("XNYS", "2024-01-01", "2024-12-31")) == 252
    assert cal.sessions("XNYS", "2001-09-11", "2001-09-14").empty
    assert "2025-01-09" not in _days(*cal.sessions("XNYS", "2025-01-06", "2025-01-10"))  # President Carter's funeral


def test_the_bundled_sample_has_every_session_and_nothing_else():
    """data/sample/SOURCES.md says so: one row per XNYS session, so history decides on the same days as before."""
    from lib.data.providers import download
    from tests.helpers import ROOT

    cfg = {**default_params()["data"], "tickers": ["SPY"], "start": None, "end": None}
    dates = pd.DatetimeIndex(download(cfg, ROOT / "data" / "sample")["date"])
    assert _days(*dates) == _days(*cal.sessions("XNYS", dates[0], dates[-1]))


def test_last_session_of_each_week_and_month():
    weekly = cal.period_ends("XNYS", "2024-03-01", "2024-04-10", "weekly")
    assert _days(*weekly) == _days("2024-03-01", "2024-03-08", "2024-03-15", "2024-03-22", "2024-03-28", "2024-04-05")
    monthly = cal.period_ends("XNYS", "2024-01-01", "2024-12-31", "monthly")
    assert len(monthly) == 12 and _days(*monthly[[2, 7, 10]]) == _days("2024-03-28", "2024-08-30", "2024-11-29")
    assert cal.closes_period("XNYS", ["2024-03-28", "2024-07-03", "2024-07-05"], "weekly").tolist() == [
        True,
        False,
        True,
    ]


@pytest.mark.parametrize(
    ("last", "scheduled"),
    [("2024-03-28", True), ("2024-07-03", False), ("2024-07-05", True), ("2024-09-12", False)],
)
def test_the_final_row_is_a_decision_day_when_its_week_has_no_later_session(last, scheduled):
    dates = pd.DatetimeIndex([pd.Timestamp(last) - pd.Timedelta(days=7), pd.Timestamp(last)])
    assert decision_days(dates, "weekly", "XNYS").tolist() == [True, scheduled]
    assert decision_days(dates, "daily", "XNYS").all()


def test_history_decides_on_the_data_and_matches_the_weekday_rule_on_real_sessions():
    """Where the data has every session, the weekly decision days are the last session of each week, identical to
    the weekday rule for every row but a final row before a holiday."""
    days = cal.sessions("XNYS", "2015-01-01", "2024-03-28")
    new = decision_days(days, "weekly", "XNYS")
    iso = days.isocalendar()
    key = iso["year"].to_numpy() * 100 + iso["week"].to_numpy()
    old = np.r_[key[:-1] != key[1:], False]  # the weekday rule: Friday 29 March 2024 is a weekday
    assert (new[:-1] == old[:-1]).all() and new[-1] and not old[-1]
    assert (days[new] == cal.period_ends("XNYS", days[0], days[-1], "weekly")).all()


def test_missing_sessions_between_rows():
    before = ["2024-07-02", "2024-07-01", "2001-09-10", "2024-07-05", "2024-07-06"]
    after = ["2024-07-05", "2024-07-05", "2001-09-17", "2024-07-08", "2024-07-08"]
    assert cal.missing_sessions("XNYS", before, after).tolist() == [1, 2, 0, 0, 0]


def _bars(dates: list[str]) -> pd.DataFrame:
    n = len(dates)
    px = np.linspace(100, 101, n)
    return pd.DataFrame(
        {
            "date": pd.to_datetime(dates),
            "ticker": "A",
            "open": px,
            "high": px + 1,
            "low": px - 1,
            "close": px,
            "adj_close": px,
            "volume": 1e6,
        }
    )


def test_a_holiday_is_no_gap_a_missing_session_is():
    cfg = {**default_params()["validate"], "max_gap_sessions": 1}
    week_of_911 = _bars(["2001-09-07", "2001-09-10", "2001-09-17", "2001-09-18"])  # 4 weekdays, 0 sessions missing
    assert validate_prices(week_of_911, cfg, ["A"], "XNYS")[1] == []
    two_missing = _bars(["2024-06-28", "2024-07-01", "2024-07-05", "2024-07-08"])  # 2 and 3 July missing
    _, findings = validate_prices(two_missing, cfg, ["A"], "XNYS")
    assert [(f.rule, f.date, f.detail) for f in findings] == [
        ("gap", "2024-07-05", "2 XNYS sessions missing before this date")
    ]
    one_missing = _bars(["2024-07-01", "2024-07-02", "2024-07-05", "2024-07-08"])  # only 3 July: within the limit
    assert validate_prices(one_missing, cfg, ["A"], "XNYS")[1] == []


def test_gaps_follow_the_chosen_calendar():
    """The London exchange is open on 4 July 2024: there a row from 3 to 5 July misses one session."""
    cfg = {**default_params()["validate"], "max_gap_sessions": 1}
    bars = _bars(["2024-07-02", "2024-07-03", "2024-07-05"])
    assert cal.missing_sessions("XLON", ["2024-07-03"], ["2024-07-05"]).tolist() == [1]
    assert validate_prices(bars, cfg, ["A"], "XNYS")[1] == validate_prices(bars, cfg, ["A"], "XLON")[1] == []


def test_an_unknown_calendar_is_one_line_naming_the_key():
    p = default_params()
    p["data"]["calendar"] = "XNYZ"
    with pytest.raises(PipelineError, match=r"^params.yaml: data.calendar must be a calendar exchange_calendars knows"):
        validate_params(p)
    with pytest.raises(PipelineError, match=r"data.calendar .* got 'XNYZ'"):
        cal.next_session("XNYZ", "2024-07-03")
    p["data"]["calendar"] = "NYSE"  # an alias exchange_calendars knows
    assert validate_params(p)["data"]["calendar"] == "NYSE"


def test_the_calendar_is_built_once_and_grows_by_whole_years(monkeypatch):
    built = []
    real = cal._build
    monkeypatch.setattr(cal, "_CACHE", {})
    monkeypatch.setattr(cal, "_build", lambda *a: built.append(a) or real(*a))
    cal.next_sessions("XNYS", pd.bdate_range("2010-01-01", "2012-12-31"))
    cal.missing_sessions("XNYS", ["2011-03-01"], ["2011-04-01"])
    cal.sessions("XNYS", "2012-01-01", "2012-06-30")
    assert built == [("XNYS", 2010, 2013)]
    cal.next_session("XNYS", "2005-06-01")  # earlier: one rebuild covering both spans
    assert built[-1] == ("XNYS", 2005, 2013) and len(built) == 2
