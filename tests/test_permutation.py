"""The batched permutation null: the same shuffles and the same Sharpe ratio per shuffle as one
backtest per shuffle (`permutation_test` over `run_backtest`), to 1e-12; the batched kernel against
the kernel; the fallback for path-dependent controls."""

import logging

import numpy as np
import pandas as pd
import pytest

from lib.evaluation.performance import returns_of, sharpe_of
from lib.evaluation.permutation import _value_sets, null_predictions, null_test, permutation_sharpes, shuffle_in_time
from lib.portfolio.backtest import run_backtest
from lib.portfolio.batch import BatchedBacktest, strategy_equities
from lib.portfolio.kernel import execute, execute_batch
from lib.portfolio.long_short import NOT_RANK, long_short_book
from lib.tables import IN_UNIVERSE, LONG_SHORT, STRATEGY
from tests.helpers import default_params, gbm_bars

TICKERS = ("A", "B", "C", "D", "E")


def _market(gaps: bool = False, seed: int = 0):
    prices = gbm_bars(260, TICKERS, seed=seed)
    if gaps:  # E starts late, D ends early (delisted), C misses a few days
        dates = prices["date"].drop_duplicates().sort_values().to_numpy()
        drop = (
            ((prices["ticker"] == "E") & (prices["date"] < dates[120]))
            | ((prices["ticker"] == "D") & (prices["date"] > dates[200]))
            | ((prices["ticker"] == "C") & prices["date"].isin(dates[150:153]))
        )
        prices = prices[~drop].reset_index(drop=True)
    rng = np.random.default_rng(seed + 1)
    preds = prices.loc[prices["date"] >= prices["date"].iloc[60], ["date", "ticker"]].reset_index(drop=True)
    return prices, preds.assign(prediction=rng.normal(0.0, 0.01, len(preds)), label=np.nan)


def _with_universe(preds):
    """B is a member only from the 100th prediction date on, C leaves after the 150th."""
    dates = np.sort(preds["date"].unique())
    out = ((preds["ticker"] == "B") & (preds["date"] < dates[100])) | (
        (preds["ticker"] == "C") & (preds["date"] > dates[150])
    )
    return preds.assign(**{IN_UNIVERSE: (~out).astype(int)})


def _loop(prices, preds, bt, n, seed):
    def sharpe(pr):
        return sharpe_of(returns_of(run_backtest(prices, pr, bt, 5).equity[STRATEGY].to_numpy()), 252, 0.0)

    return null_test(sharpe, preds, bt, n, seed)


CONFIGS = {
    "threshold": {},
    "threshold_short": {"allow_short": True, "threshold": 0.002},
    "rank": {"rule": "rank", "top_k": 2},
    "rank_short": {"rule": "rank", "top_k": 2, "allow_short": True},
    "rank_signal_close": {"rule": "rank", "top_fraction": 0.4, "rank_weighting": "signal", "fill": "close"},
    "vol_sizing": {"sizing": "volatility", "vol_window": 10, "min_abs_prediction": 0.003, "max_position": 0.3},
    "book_vol_trend": {"sizing": "volatility", "vol_scope": "book", "vol_window": 10, "trend_window": 20},
    "kelly_short": {"sizing": "kelly", "allow_short": True, "max_gross": 0.8, "max_net": 0.5},
}


@pytest.mark.parametrize("gaps", [False, True])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batched_permutations_equal_the_loop(name, gaps):
    """Same seed, same shuffles, same Sharpe per shuffle as one backtest each (costs on: 10 bps per side)."""
    bt = {**default_params()["backtest"], **CONFIGS[name]}
    assert bt["commission_bps"] + bt["slippage_bps"] > 0
    prices, preds = _market(gaps)
    loop = _loop(prices, preds, bt, 6, seed=7)
    batched = permutation_sharpes(prices, preds, bt, 5, 252, 0.0, 6, 7)
    assert batched["n"] == loop["n"] == 6 and batched["dropped"] == loop["dropped"]
    assert batched["observed"] == pytest.approx(loop["observed"], rel=0, abs=1e-12)
    np.testing.assert_allclose(batched["null"], loop["null"], rtol=0, atol=1e-12)
    assert batched["pvalue"] == loop["pvalue"]
    assert len(set(np.round(batched["null"], 9))) > 1  # the shuffles differ: the check is not vacuous


@pytest.mark.parametrize("name", ["threshold_short", "rank_short"])
def test_batched_permutations_keep_the_point_in_time_universe(name):
    bt = {**default_params()["backtest"], **CONFIGS[name]}
    prices, preds = _market(gaps=True)
    preds = _with_universe(preds)
    loop = _loop(prices, preds, bt, 4, seed=5)
    batched = permutation_sharpes(prices, preds, bt, 5, 252, 0.0, 4, 5)
    assert batched["observed"] == pytest.approx(loop["observed"], rel=0, abs=1e-12)
    np.testing.assert_allclose(batched["null"], loop["null"], rtol=0, atol=1e-12)


def test_the_rank_null_ignores_each_dates_level_and_scale():
    """Under the rank rule (equal weights) only each date's order matters: a per-date shift and scale of
    the scores (what a model fit to the per-date IC leaves free) changes neither the book nor its null."""
    bt = {**default_params()["backtest"], **CONFIGS["rank"]}
    prices, preds = _market()
    dates = preds["date"].map({d: i for i, d in enumerate(np.sort(preds["date"].unique()))}).to_numpy()
    rng = np.random.default_rng(4)
    level, scale = rng.normal(0.0, 1.0, dates.max() + 1), rng.uniform(0.1, 10.0, dates.max() + 1)
    moved = preds.assign(prediction=level[dates] + scale[dates] * preds["prediction"])
    a = permutation_sharpes(prices, preds, bt, 5, 252, 0.0, 8, 2)
    b = permutation_sharpes(prices, moved, bt, 5, 252, 0.0, 8, 2)
    assert b["observed"] == pytest.approx(a["observed"], abs=1e-12)
    np.testing.assert_allclose(b["null"], a["null"], rtol=0, atol=1e-12)
    signal = {**bt, "rank_weighting": "signal"}  # levels matter there: shuffled as they are
    pd.testing.assert_frame_equal(null_predictions(moved, signal), moved)


def test_more_shuffles_than_one_pass_keep_the_draw_order():
    bt = {**default_params()["backtest"], "rule": "rank", "top_k": 2}
    prices, preds = _market()
    loop = _loop(prices, preds, bt, 40, seed=3)  # > SETS_PER_PASS
    batched = permutation_sharpes(prices, preds, bt, 5, 252, 0.0, 40, 3)
    np.testing.assert_allclose(batched["null"], loop["null"], rtol=0, atol=1e-12)


def test_path_dependent_controls_fall_back_to_the_loop(caplog):
    bt = {**default_params()["backtest"], "stop_loss": 0.02}
    prices, preds = _market()
    with caplog.at_level(logging.INFO, logger="lib.evaluation.permutation"):
        res = permutation_sharpes(prices, preds, bt, 5, 252, 0.0, 3, 1)
    assert "one backtest per shuffle (3): path-dependent controls" in caplog.text
    assert res == _loop(prices, preds, bt, 3, 1)


def test_the_shuffles_are_permutation_tests_shuffles():
    """The batched path draws shuffle k exactly as permutation_test does (same rng stream)."""

    _, preds = _market()
    rng = np.random.default_rng(11)
    expected = [preds["prediction"].to_numpy()] + [
        shuffle_in_time(preds, rng)["prediction"].to_numpy() for _ in range(3)
    ]
    (got,) = list(_value_sets(preds, 3, 11))
    np.testing.assert_array_equal(got, np.stack(expected))
    rng, values = np.random.default_rng(11), preds["prediction"].to_numpy()
    for k in range(1, 4):  # and the draws of the original loop over tickers
        want = values.copy()
        for idx in preds.groupby("ticker", sort=True).indices.values():
            want[idx] = values[idx][rng.permutation(len(idx))]
        np.testing.assert_array_equal(got[k], want)


def test_execute_batch_equals_execute_book_by_book():
    rng = np.random.default_rng(0)
    n_sets, n = 7, 6
    price = rng.uniform(20, 80, n)
    price[4] = np.nan  # no price today
    mark = rng.uniform(20, 80, n)
    held = rng.normal(0, 300, (n_sets, n))
    cash = rng.uniform(-5e3, 5e4, n_sets)
    target = rng.normal(0, 0.4, (n_sets, n))
    target[1, 2] = np.nan  # a held ticker without an order: the limits count it
    target[3] = np.nan  # no order at all: untouched
    target[5] = held[5] * np.nan_to_num(price) / (cash[5] + held[5] @ np.where(np.isnan(price), mark, price))  # dust
    limits = {"max_position": 0.3, "max_gross": 1.0, "max_net": 0.4}
    c, h, d = execute_batch(cash, held, target, price, mark, 1e-3, limits)
    for s in range(n_sets):
        if np.isnan(target[s]).all():
            assert c[s] == cash[s] and (h[s] == held[s]).all()
            continue
        cs, hs, ds = execute(cash[s], held[s], target[s], price, mark, 1e-3, limits)
        assert c[s] == pytest.approx(cs, rel=1e-12)
        np.testing.assert_allclose(h[s], hs, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(d[s], ds, rtol=1e-12, atol=1e-9)


def test_the_window_and_first_fill_are_the_backtests():
    bt = default_params()["backtest"]
    prices, preds = _market(gaps=True)
    dates, eq = strategy_equities(prices, preds, [preds["prediction"].to_numpy()[None, :]], bt, 5)
    res = run_backtest(prices, preds, bt, 5)
    assert pd.DatetimeIndex(res.equity["date"]).equals(dates)
    np.testing.assert_allclose(eq[0], res.equity[STRATEGY].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("gaps", [False, True])
@pytest.mark.parametrize("name", ["threshold_short", "rank", "vol_sizing"])
def test_the_cost_grid_batched_equals_one_backtest_per_cost(name, gaps):
    """Strategy and buy-and-hold at each cost (commission = cost, slippage 0, as the cost sensitivity
    reruns them), in one batched pass, equal run_backtest's equity to 1e-12 relative."""
    bt = {**default_params()["backtest"], **CONFIGS[name]}
    prices, preds = _market(gaps)
    costs = [0.0, 10.0, 37.5, 100.0]
    got = BatchedBacktest(prices, preds, bt, 5).at_costs(costs)
    for i, c in enumerate(costs):
        eq = run_backtest(prices, preds, {**bt, "commission_bps": c, "slippage_bps": 0.0}, 5).equity
        np.testing.assert_allclose(got[STRATEGY][i], eq[STRATEGY].to_numpy(), rtol=1e-12)
        np.testing.assert_allclose(got["benchmark"][i], eq["benchmark"].to_numpy(), rtol=1e-12)
    assert got[STRATEGY][0, -1] > got[STRATEGY][-1, -1]  # costs bite


def test_batched_backtest_refuses_path_dependent_controls():
    prices, preds = _market()
    with pytest.raises(ValueError, match="path-dependent controls"):
        BatchedBacktest(prices, preds, {**default_params()["backtest"], "trailing_stop": 0.1}, 5)


def _long_short_loop(prices, preds, bt, n, seed):
    def sharpe(pr):
        return sharpe_of(returns_of(long_short_book(prices, pr, bt, 5)[0].equity[LONG_SHORT].to_numpy()), 252, 0.0)

    return null_test(sharpe, preds, bt, n, seed)


@pytest.mark.parametrize("universe", [False, True])
@pytest.mark.parametrize("name", ["rank", "rank_signal_close"])
def test_the_long_short_null_batched_equals_the_loop(name, universe):
    bt = {**default_params()["backtest"], **CONFIGS[name]}
    prices, preds = _market(gaps=True)
    preds = _with_universe(preds) if universe else preds
    loop = _long_short_loop(prices, preds, bt, 4, seed=2)
    batched = permutation_sharpes(prices, preds, bt, 5, 252, 0.0, 4, 2, book=LONG_SHORT)
    assert batched["observed"] == pytest.approx(loop["observed"], rel=0, abs=1e-12)
    np.testing.assert_allclose(batched["null"], loop["null"], rtol=0, atol=1e-12)


def test_the_long_short_null_is_undefined_for_the_threshold_rule():
    prices, preds = _market()
    res = permutation_sharpes(prices, preds, default_params()["backtest"], 5, 252, 0.0, 3, 0, book=LONG_SHORT)
    assert res["observed"] is None and res["pvalue"] is None and res["reason"] == NOT_RANK and res["null"] == []


def test_the_long_short_cost_grid_batched():
    bt = {**default_params()["backtest"], **CONFIGS["rank_short"]}
    prices, preds = _market(gaps=True)
    got = BatchedBacktest(prices, preds, bt, 5, book=LONG_SHORT).at_costs([0.0, 25.0])
    for i, c in enumerate([0.0, 25.0]):
        book, _ = long_short_book(prices, preds, {**bt, "commission_bps": c, "slippage_bps": 0.0}, 5)
        np.testing.assert_allclose(got[LONG_SHORT][i], book.equity[LONG_SHORT].to_numpy(), rtol=1e-12)
