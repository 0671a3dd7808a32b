import numpy as np
import pandas as pd
import pytest

from lib.errors import PipelineError
from lib.validate import check_schema, failure_message, fatal_findings, report, validate_prices
from tests.conftest import default_params, gbm_bars


@pytest.fixture
def cfg():
    return default_params()["validate"]


def _rules(findings):
    return sorted({(f.rule, f.date) for f in findings})


def test_clean_data_has_no_findings(cfg):
    df = gbm_bars(200, ("A", "B"))
    clean, findings = validate_prices(df, cfg, ["A", "B"])
    assert findings == [] and len(clean) == 400


def test_each_rule_is_found_with_ticker_and_date(cfg):
    df = gbm_bars(100, ("A",))
    d = df["date"].dt.strftime("%Y-%m-%d")
    df.loc[10, "close"] = np.nan
    df.loc[20, "low"] = -1.0
    df.loc[30, "high"] = df.loc[30, ["open", "close"]].min() * 0.5
    df.loc[40, "volume"] = -5
    df.loc[60:66, "close"] = df.loc[60, "close"]
    df.loc[80:, ["open", "high", "low", "close", "adj_close"]] *= 2.0  # an unadjusted 1:2 reverse split
    df = pd.concat([df, df.iloc[[50]]])  # duplicate date, out of order
    _, findings = validate_prices(df, cfg, ["A"])
    rules = _rules(findings)
    for rule, i in [("nan", 10), ("non_positive_price", 20), ("ohlc_bounds", 30), ("negative_volume", 40),
                    ("duplicate_date", 50), ("stale_close", 66), ("one_day_move", 80)]:
        assert (rule, d[i]) in rules, rule
    assert ("unsorted_dates", None) in rules
    assert all(f.ticker == "A" for f in findings)


def test_gap_in_sessions(cfg):
    df = gbm_bars(100, ("A",)).drop(index=range(40, 48))
    _, findings = validate_prices(df, cfg, ["A"])
    assert [(f.rule, f.detail) for f in findings] == [("gap", "8 weekdays missing before this date")]


def test_fail_policy_message_names_ticker_date_rule(cfg):
    df = gbm_bars(100, ("A",))
    df.loc[10, "close"] = np.nan
    _, findings = validate_prices(df, cfg, ["A"])
    fatal = fatal_findings(findings, "fail")
    msg = failure_message(fatal, "reports/validation.json")
    assert msg.startswith(f"validation failed: A {df['date'][10].date()} rule=nan")
    assert "validate.policy=repair" in msg


def test_repair_fixes_and_lists_every_repair(cfg):
    cfg["policy"] = "repair"
    df = gbm_bars(100, ("A",))
    df.loc[10, "close"] = np.nan
    df.loc[30, "high"] = 1.0
    df.loc[40, "volume"] = -5
    clean, findings = validate_prices(df, cfg, ["A"])
    assert fatal_findings(findings, "repair") == []
    assert len(clean) == 99
    assert (clean["high"] >= clean[["open", "close"]].max(axis=1)).all() and (clean["volume"] >= 0).all()
    assert {f.action for f in findings} == {"dropped row", "clamped high", "set to 0"}
    rep = report(df, clean, findings, "repair")
    assert rep["passed"] and rep["by_rule"] == {"nan": 1, "ohlc_bounds": 1, "negative_volume": 1}
    assert rep["tickers"]["A"] == {"rows_in": 100, "rows_out": 99, "first": "2020-01-01", "last": "2020-05-19"}


def test_missing_ticker_is_fatal_even_under_repair(cfg):
    cfg["policy"] = "repair"
    _, findings = validate_prices(gbm_bars(50, ("A",)), cfg, ["A", "ZZZ"])
    assert [(f.ticker, f.rule) for f in fatal_findings(findings, "repair")] == [("ZZZ", "missing_ticker")]


def test_schema_errors_name_row_and_column():
    df = gbm_bars(5, ("A",))
    with pytest.raises(PipelineError, match=r"missing column\(s\) \['volume'\]"):
        check_schema(df.drop(columns="volume"), "prices.csv")
    df["close"] = df["close"].astype(object)
    df.loc[3, "close"] = "oops"
    with pytest.raises(PipelineError, match="prices.csv, row 4: close 'oops' is not a number"):
        check_schema(df, "prices.csv")
