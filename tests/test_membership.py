"""The point-in-time universe (data.membership): the file's checks, the member mask, and its effect on
every book: only members are ranked and bought, a leaver is sold at the next fill, a later joiner changes
nothing dated before it joins (the perturbation test), and an end-to-end stage run trades members only."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.data.membership import load_membership
from lib.errors import PipelineError
from lib.params import validate_params
from lib.portfolio.backtest import next_orders, portfolio_config, run_backtest
from lib.portfolio.calendar import decision_days
from lib.portfolio.targets import target_book
from lib.tables import IN_UNIVERSE
from tests.helpers import default_params, gbm_bars, run_stages, small_params, stage_commands, write_params

TICKERS = ["AAA", "BBB", "CCC"]
N, TEST = 200, 150


def _file(tmp_path, text: str, name: str = "m.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _one_line_error(tmp_path, text: str, known=TICKERS) -> str:
    with pytest.raises(PipelineError) as info:
        load_membership(_file(tmp_path, text), known)
    message = str(info.value)
    assert "\n" not in message and "m.csv" in message
    return message


# ------------------------------------------------------------------------------------------ the file


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ticker,start\nAAA,2020-01-01\n", r"missing column\(s\) \['end'\]"),
        ("ticker,start,end,weight\nAAA,2020-01-01,,1\n", r"unknown column\(s\) \['weight'\]"),
        ("ticker,start,end\n", "no membership rows"),
        ("ticker,start,end\nAAA,2020-01-01,\nBBB,2020-13-01,\n", r"line 3: start '2020-13-01' is not a date.*BBB"),
        ("ticker,start,end\nAAA,2020-01-01,01/02/2021\n", r"line 2: end '01/02/2021' is not a date.*AAA"),
        ("ticker,start,end\nAAA,,2021-01-01\n", r"line 2: start '' is not a date"),
        ("ticker,start,end\nAAA,2020-01-01,\n,2020-01-01,\n", "line 3: empty ticker"),
        ("ticker,start,end\nAAA,2020-01-01,\nXYZ,2020-01-01,\n", r"line 3: ticker XYZ is not in the price table"),
        ("ticker,start,end\nBBB,2021-01-01,2020-12-31\n", r"line 2: ticker BBB ends \(2020-12-31\) before it starts"),
        (
            "ticker,start,end\nAAA,2021-01-01,\nBBB,2020-01-01,\nAAA,2020-01-01,2021-01-01\n",
            r"lines 2 and 4: intervals of ticker AAA overlap",
        ),
        ("ticker,start,end\nCCC,2020-01-01,\nCCC,2019-01-01,\n", r"lines 2 and 3: intervals of ticker CCC overlap"),
    ],
)
def test_each_bad_file_is_one_line_naming_file_line_and_ticker(tmp_path, text, expected):
    assert re.search(expected, _one_line_error(tmp_path, text))


def test_missing_file_names_the_key(tmp_path):
    with pytest.raises(PipelineError, match=r"data.membership: file .*nope.csv not found"):
        load_membership(tmp_path / "nope.csv", TICKERS)


@pytest.mark.parametrize("bad", ["/abs/data/universe/x.csv", "data/other/x.csv", "data/universe/x.txt", "x.csv"])
def test_params_want_a_csv_in_the_tracked_folder(bad):
    p = default_params()
    p["data"]["membership"] = bad
    with pytest.raises(PipelineError, match=r"^params.yaml: data.membership must be a .csv file in data/universe/"):
        validate_params(p)
    p["data"]["membership"] = "data/universe/../universe/sp500.csv"
    assert validate_params(p)["data"]["membership"] == "data/universe/../universe/sp500.csv"
    p["data"]["membership"] = None
    assert validate_params(p)["data"]["membership"] is None


def test_is_member_matches_a_plain_check_of_each_interval(tmp_path):
    text = (
        "ticker,start,end\nAAA,2020-01-06,2020-02-03\nAAA,2020-03-02,\n"
        "BBB,2020-01-01,2020-01-31\nBBB,2020-02-04,2020-02-04\n"
    )
    m = load_membership(_file(tmp_path, text), TICKERS)
    dates = pd.bdate_range("2019-12-30", "2020-04-30")
    got = m.panel(dates, TICKERS)
    intervals = pd.read_csv(_file(tmp_path, text), keep_default_na=False)
    want = np.zeros((len(dates), len(TICKERS)), bool)
    for row in intervals.itertuples():  # the oracle: one interval at a time
        end = pd.Timestamp(row.end) if row.end else pd.Timestamp.max
        want[:, TICKERS.index(row.ticker)] |= (dates >= pd.Timestamp(row.start)) & (dates <= end)
    np.testing.assert_array_equal(got, want)
    assert got[dates.get_loc("2020-02-03"), 0] and not got[dates.get_loc("2020-02-04"), 0]  # both ends inclusive
    assert got[dates.get_loc("2020-02-04"), 1] and not got[:, 2].any()  # a one-day interval; CCC has no row
    assert got[-1, 0]  # an open end
    marked = m.mark(pd.DataFrame({"date": [dates[2], dates[10]], "ticker": ["BBB", "CCC"], "prediction": 0.0}))
    assert marked[IN_UNIVERSE].tolist() == [1, 0] and marked[IN_UNIVERSE].dtype == np.int8


# ------------------------------------------------------------------------------------------ the books


def _market(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prices of AAA, BBB, CCC and positive predictions over the last TEST sessions (CCC's the highest)."""
    prices = gbm_bars(N, tuple(TICKERS), seed=seed)
    dates = pd.DatetimeIndex(sorted(prices["date"].unique()))[-TEST:]
    rng = np.random.default_rng(seed)
    preds = pd.DataFrame(
        {
            "date": np.repeat(dates, len(TICKERS)),
            "ticker": np.tile(TICKERS, len(dates)),
            "fold": 0,
            "prediction": np.tile([0.01, 0.02, 0.03], len(dates)) + rng.uniform(0, 0.001, len(dates) * 3),
            "label": 0.0,
        }
    )
    return prices, preds


def _marked(tmp_path, preds: pd.DataFrame, text: str) -> pd.DataFrame:
    return load_membership(_file(tmp_path, "ticker,start,end\n" + text, "u.csv"), TICKERS).mark(preds)


def _cfg(rule: str) -> dict:
    cfg = default_params()["backtest"]
    if rule == "rank":
        cfg.update(rule="rank", top_k=1)
    return cfg


def _run(prices, preds, rule="threshold"):
    return run_backtest(prices, preds, _cfg(rule), 5, 252)


@pytest.mark.parametrize("rule", ["threshold", "rank"])
def test_every_member_on_every_date_changes_nothing(tmp_path, rule):
    prices, preds = _market()
    plain = _run(prices, preds, rule)
    everyone = _run(prices, _marked(tmp_path, preds, "AAA,2000-01-03,\nBBB,2000-01-03,\nCCC,2000-01-03,\n"), rule)
    pd.testing.assert_frame_equal(plain.equity, everyone.equity, check_exact=True)
    pd.testing.assert_frame_equal(plain.trades, everyone.trades, check_exact=True)


@pytest.mark.parametrize("rule", ["threshold", "rank"])
def test_a_ticker_outside_the_universe_never_trades(tmp_path, rule):
    prices, preds = _market()
    assert (_run(prices, preds, rule).trades["ticker"] == "CCC").any()  # without a universe it trades
    res = _run(prices, _marked(tmp_path, preds, "AAA,2000-01-03,\nBBB,2000-01-03,\n"), rule)
    assert not (res.trades["ticker"] == "CCC").any()  # no book: strategy, benchmark, momentum
    assert set(res.trades["book"]) == {"strategy", "benchmark", "momentum"}
    assert (res.weights.loc[res.weights["ticker"] == "CCC", "weight"] == 0).all()
    assert (res.strategy.shares[:, TICKERS.index("CCC")] == 0).all()


def test_a_member_that_leaves_is_sold_at_the_next_fill_by_every_book(tmp_path):
    prices, preds = _market()
    dates = pd.DatetimeIndex(sorted(preds["date"].unique()))
    end = dates[60]
    res = _run(prices, _marked(tmp_path, preds, f"AAA,2000-01-03,\nBBB,2000-01-03,{end.date()}\nCCC,2000-01-03,\n"))
    mk = res.market
    decide = decision_days(mk.dates, "weekly")
    first_after = mk.dates[decide & (mk.dates > end)][0]
    fill = mk.dates[mk.dates.get_loc(first_after) + 1]  # next_open
    bbb = res.trades[res.trades["ticker"] == "BBB"]
    for book in ("strategy", "benchmark", "momentum"):
        mine = bbb[bbb["book"] == book]
        assert mine["date"].max() <= fill, book
        if book != "momentum":  # momentum holds BBB only while its trailing return is positive
            assert (mine["date"] < fill).any() and mine.loc[mine["date"] == fill, "side"].tolist() == ["sell"], book
    col = TICKERS.index("BBB")
    row = mk.dates.get_loc(fill)
    assert res.strategy.shares[row - 1, col] > 0 and (res.strategy.shares[row:, col] == 0).all()


@pytest.mark.parametrize("rule", ["threshold", "rank"])
def test_a_ticker_that_joins_later_changes_nothing_before_it_joins(tmp_path, rule):
    """The perturbation test on membership: add an interval for CCC starting after T; no target, weight,
    trade or equity dated <= T changes, and later decisions do."""
    prices, preds = _market()
    dates = pd.DatetimeIndex(sorted(preds["date"].unique()))
    t_cut, joins = dates[70], dates[71]
    before = _marked(tmp_path, preds, "AAA,2000-01-03,\nBBB,2000-01-03,\n")
    after = _marked(tmp_path, preds, f"AAA,2000-01-03,\nBBB,2000-01-03,\nCCC,{joins.date()},\n")
    a, b = _run(prices, before, rule), _run(prices, after, rule)
    mk = a.market
    cfg = portfolio_config(_cfg(rule), 5, 252)
    pred = preds.pivot(index="date", columns="ticker", values="prediction").reindex(index=mk.dates)
    panel = {
        k: m.pivot(index="date", columns="ticker", values=IN_UNIVERSE).reindex(index=mk.dates).fillna(0).to_numpy() > 0
        for k, m in (("a", before), ("b", after))
    }
    decide = decision_days(mk.dates, "weekly")
    ta, tb = (target_book(pred.to_numpy(), mk.close, cfg, decide, panel[k]) for k in ("a", "b"))
    early = mk.dates <= t_cut
    np.testing.assert_array_equal(ta[early], tb[early])
    assert not np.array_equal(ta[~early], tb[~early], equal_nan=True)  # later decisions change
    for name in ("equity", "weights", "trades"):
        x, y = getattr(a, name), getattr(b, name)
        pd.testing.assert_frame_equal(
            x[x["date"] <= t_cut].reset_index(drop=True), y[y["date"] <= t_cut].reset_index(drop=True), check_exact=True
        )
    late = a.equity["date"] > t_cut
    assert not np.array_equal(a.equity.loc[late, "strategy"], b.equity.loc[late, "strategy"])
    assert (b.trades.loc[b.trades["book"] == "strategy", "ticker"] == "CCC").any()
    assert b.trades.loc[b.trades["ticker"] == "CCC", "date"].min() > joins


@pytest.mark.parametrize("rule", ["threshold", "rank"])
def test_evaluate_reruns_see_the_same_universe_from_member_rows_only(tmp_path, rule):
    """evaluate keeps member rows only (`members_only`); the backtest's reruns, one at a time or batched for
    the permutation null, read the same mask from them: the same books, to the bit."""
    from lib.portfolio.batch import strategy_equities
    from stages.evaluate import members_only

    prices, preds = _market()
    marked = _marked(tmp_path, preds, "AAA,2000-01-03,\nBBB,2000-01-03,2020-05-01\nCCC,2020-06-01,\n")
    full, kept = _run(prices, marked, rule), members_only(marked)
    assert len(kept) < len(marked) and (kept[IN_UNIVERSE] == 1).all()
    pd.testing.assert_frame_equal(full.equity, _run(prices, kept, rule).equity, check_exact=True)
    for table in (marked, kept):
        _dates, equity = strategy_equities(prices, table, [table["prediction"].to_numpy()[None]], _cfg(rule), 5, 252)
        np.testing.assert_allclose(equity[0], full.equity["strategy"], rtol=1e-12)


def test_no_member_on_a_decision_date_is_one_line_naming_the_date(tmp_path):
    prices, preds = _market()
    dates = pd.DatetimeIndex(sorted(preds["date"].unique()))
    end = dates[40]
    with pytest.raises(PipelineError) as info:
        _run(prices, _marked(tmp_path, preds, f"AAA,2000-01-03,{end.date()}\n"))
    first_after = dates[decision_days(dates, "weekly") & (dates > end)][0]
    assert f"decision date {first_after.date()}" in str(info.value) and "\n" not in str(info.value)


def test_next_orders_target_members_only(tmp_path):
    prices, preds = _market()
    cfg = _cfg("threshold")
    res = _run(prices, preds)
    signal = pd.DataFrame({"ticker": TICKERS, "prediction": [0.01, 0.02, 0.03], "as_of": "2020-10-16"})
    everyone = next_orders(res, signal, cfg, 5, 252, None)
    assert (everyone["target_weight"] > 0).all()
    some = next_orders(res, signal.assign(**{IN_UNIVERSE: [True, False, True]}), cfg, 5, 252, None)
    np.testing.assert_allclose(some["target_weight"], [0.5, 0.0, 0.5])
    with pytest.raises(PipelineError, match=r"^backtest: no ticker is a member .* as-of date 2020-10-16"):
        next_orders(res, signal.assign(**{IN_UNIVERSE: False}), cfg, 5, 252, None)


# ------------------------------------------------------------------------------------------ the stages


@pytest.mark.slow
def test_a_membership_file_changes_which_tickers_trade_end_to_end(tmp_path, monkeypatch):
    """The real stages in a temp folder: without a universe both tickers trade; with one that lists SPY only,
    no book trades TLT, the predictions and the signal mark it, its order targets 0, and evaluate runs."""
    import shutil

    from tests.helpers import ROOT

    shutil.copytree(ROOT / "data" / "sample", tmp_path / "data" / "sample")
    monkeypatch.chdir(tmp_path)
    p = small_params()
    p["evaluate"]["baseline_models"] = []
    p["model"]["arch"] = "ridge"  # seconds to train: the universe acts after the model
    write_params(tmp_path, p)
    stages = list(stage_commands())  # dvc.yaml's order
    run_stages(*stages[: stages.index("backtest") + 1])
    trades = pd.read_csv("reports/backtest/trades.csv")
    assert {"SPY", "TLT"} <= set(trades["ticker"])
    os.makedirs("data/universe", exist_ok=True)
    (tmp_path / "data/universe/spy.csv").write_text("ticker,start,end\nSPY,2016-01-04,\n")
    p["data"]["membership"] = "data/universe/spy.csv"
    write_params(tmp_path, p)
    run_stages("predict", "backtest", "evaluate")
    trades = pd.read_csv("reports/backtest/trades.csv")
    assert set(trades["ticker"]) == {"SPY"} and set(trades["book"]) == {"strategy", "benchmark", "momentum"}
    preds = pd.read_parquet("data/predictions.parquet")
    assert preds.groupby("ticker")[IN_UNIVERSE].unique().map(list).to_dict() == {"SPY": [1], "TLT": [0]}
    signal = {s["ticker"]: s[IN_UNIVERSE] for s in json.loads(Path("reports/signal.json").read_text())["signals"]}
    assert signal == {"SPY": True, "TLT": False}
    orders = pd.read_csv("reports/orders.csv").set_index("ticker")
    assert orders.loc["TLT", "target_weight"] == 0.0
    assert json.loads(Path("reports/metrics.json").read_text())["predictions"]
