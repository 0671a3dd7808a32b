import numpy as np
import pandas as pd
import pytest

from lib.backtest import order_rows, run_backtest, simulate
from lib.strategy import decision_days
from tests.helpers import ROOT, default_params, gbm_bars

# Equity of the peer bench's numpy reference simulator (shared/bench, agreeing with vectorbt and
# backtrader) for the weekly SMA(50) strategy on tests/data/sp500.csv, 10 bps, 100,000 cash.
REFERENCE = {
    "close": {"1999-12-30": 90065.5169950084, "2002-12-26": 69724.4727460406, "2008-12-10": 73693.5697926294,
              "2014-11-25": 99376.5338692626, "2018-12-31": 95934.5571861478},
    "next_open": {"1999-12-30": 90065.5169950084, "2002-12-26": 69722.9144224620, "2008-12-10": 73683.4147075021,
                  "2014-11-25": 100563.0699427284, "2018-12-31": 99589.2321421250},
}


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_equity_matches_the_numpy_reference(fill):
    px = pd.read_csv(ROOT / "tests" / "data" / "sp500.csv", parse_dates=["date"]).set_index("date")
    close = px["close"]
    sma_long = (close > close.rolling(50, min_periods=50).mean()).astype(float).to_numpy()
    targets = np.where(decision_days(px.index, "weekly"), sma_long, np.nan)[:, None]
    price = px[["close" if fill == "close" else "open"]].to_numpy()
    sim = simulate(close.to_numpy()[:, None], price, order_rows(targets, fill), 0.001, 100_000.0)
    equity = pd.Series(sim.equity[:, 0], index=px.index)
    for day, ref in REFERENCE[fill].items():
        assert equity[day] == pytest.approx(ref, rel=1e-9, abs=0), day
    assert len(sim.trades) == 168  # the bench's order count for both fills


def test_hand_computed_long_then_flat():
    close = np.array([[10.0], [11.0], [12.0], [12.0], [9.0]])
    orders = np.array([[1.0], [np.nan], [0.0], [np.nan], [np.nan]])
    sim = simulate(close, close, orders, 0.01, 1000.0)
    shares = 1000 / (10 * 1.01)
    cash_after = 12 * shares * 0.99
    np.testing.assert_allclose(sim.equity[:, 0], [10 * shares, 11 * shares, cash_after, cash_after, cash_after],
                               rtol=1e-12)
    assert sim.trades["cost"].sum() == pytest.approx(0.01 * (10 * shares + 12 * shares))


def test_short_position_profits_when_price_falls():
    close = np.array([[100.0], [90.0], [80.0]])
    sim = simulate(close, close, np.array([[-1.0], [np.nan], [np.nan]]), 0.0, 100.0)
    np.testing.assert_allclose(sim.equity[:, 0], [100.0, 110.0, 120.0])


def test_zero_weights_never_trade():
    close = np.full((5, 2), 50.0)
    sim = simulate(close, close, np.zeros((5, 2)), 0.001, 10.0)
    assert sim.trades.empty and (sim.equity == 10.0).all()


def _predictions(prices, start, value):
    days = prices.loc[prices["date"] >= start, ["date", "ticker"]]
    return days.assign(prediction=value, label=np.nan)


def test_run_backtest_books_and_costs():
    cfg = default_params()["backtest"]
    prices = gbm_bars(300, ("A", "B"))
    preds = _predictions(prices, prices["date"].iloc[100], 0.01)  # always long: same as buy-and-hold but weekly fills
    res = run_backtest(prices, preds, cfg, 5)
    eq = res.equity
    assert eq["strategy"].iloc[0] == cfg["initial_cash"] == eq["benchmark"].iloc[0] == eq["momentum"].iloc[0]
    assert set(res.trades["book"]) == {"strategy", "benchmark", "momentum"}
    bench = res.trades[res.trades["book"] == "benchmark"]
    assert len(bench) == 2 and (bench["date"] == eq["date"].iloc[1]).all()  # next open after day 0
    assert (res.weights["weight"].between(0, 1 + 1e-9)).all()
    flat = run_backtest(prices, _predictions(prices, prices["date"].iloc[100], -0.01), cfg, 5)
    assert (flat.equity["strategy"] == cfg["initial_cash"]).all() and flat.equity["strategy_weight"].eq(0).all()


@pytest.mark.parametrize("fill", ["next_open", "close"])
@pytest.mark.parametrize("first_day", [100, 101, 102, 103, 104])
def test_every_book_starts_on_the_strategy_first_fill(fill, first_day):
    """Buy-and-hold enters on the strategy's first fill, whatever weekday predictions start on; momentum
    cannot trade before it; the window opens at the close before it, with every book still in cash."""
    cfg = {**default_params()["backtest"], "fill": fill}
    prices = gbm_bars(300, ("A", "B"))
    res = run_backtest(prices, _predictions(prices, prices["date"].iloc[first_day], 0.01), cfg, 5)
    first = {b: g["date"].min() for b, g in res.trades.groupby("book")}
    assert first["strategy"] == first["benchmark"] <= first["momentum"], first
    eq = res.equity
    assert eq["date"].iloc[1] == first["strategy"]
    assert eq.loc[0, ["strategy", "benchmark", "momentum"]].eq(cfg["initial_cash"]).all()
    np.testing.assert_allclose(eq["strategy"].iloc[:6], eq["benchmark"].iloc[:6], rtol=1e-12)  # both all in


def test_costs_are_charged():
    cfg = default_params()["backtest"]
    prices = gbm_bars(300, ("A",))
    preds = _predictions(prices, prices["date"].iloc[100], 0.01)
    free = run_backtest(prices, preds, {**cfg, "commission_bps": 0.0, "slippage_bps": 0.0}, 5)
    paid = run_backtest(prices, preds, cfg, 5)
    assert paid.equity["strategy"].iloc[-1] < free.equity["strategy"].iloc[-1]
    assert paid.trades["cost"].sum() == pytest.approx(paid.trades["notional"].sum() * 1e-3)
