import numpy as np
import pandas as pd
import pytest

from lib.errors import PipelineError
from lib.portfolio.backtest import attribution, next_orders, read_positions, run_backtest
from lib.portfolio.calendar import decision_days
from lib.portfolio.policy import target_weights
from tests.helpers import default_params, gbm_bars, order_rows, slice_simulate


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


@pytest.mark.parametrize("fill", ["next_open", "close"])
def test_one_ticker_default_rule_equals_the_foundation_engine(fill):
    """One cash pool with one ticker and the threshold rule is today's per-ticker engine, to 1e-9."""
    cfg = {**default_params()["backtest"], "fill": fill}
    prices = gbm_bars(400, ("A",), seed=3)
    rng = np.random.default_rng(1)
    preds = _predictions(prices, prices["date"].iloc[150], 0.0).assign(prediction=lambda d: rng.normal(0, 0.01, len(d)))
    res = run_backtest(prices, preds, cfg, 5)
    px = prices.set_index("date")
    factor = px["adj_close"] / px["close"]
    close, price = (
        px[["adj_close"]].to_numpy(),
        (px[["adj_close"]] if fill == "close" else (px["open"] * factor).to_frame()).to_numpy(),
    )
    pred = preds.set_index("date")["prediction"].reindex(px.index).to_numpy()[:, None]
    decide = decision_days(px.index, "weekly")[:, None]
    orders = order_rows(np.where(decide, target_weights(pred, 0.0, False), np.nan), fill)
    equity, _ = slice_simulate(close, price, orders, 1e-3, cfg["initial_cash"])
    window = px.index.get_indexer(res.equity["date"])
    np.testing.assert_allclose(res.equity["strategy"], equity[window, 0], rtol=1e-9, atol=0)


def test_attribution_adds_up_to_the_total_return():
    cfg = {**default_params()["backtest"], "allow_short": True}
    prices = gbm_bars(300, ("A", "B", "C"))
    rng = np.random.default_rng(0)
    preds = _predictions(prices, prices["date"].iloc[100], 0.0).assign(prediction=lambda d: rng.normal(0, 0.01, len(d)))
    res = run_backtest(prices, preds, cfg, 5)
    contrib = attribution(res)
    total = res.equity["strategy"].iloc[-1] / res.equity["strategy"].iloc[0] - 1
    assert contrib["contribution"].sum() == pytest.approx(total, rel=1e-9)
    assert (contrib["pnl_short"] != 0).any() and (contrib["costs"] > 0).all()


def _orders_setup(tmp_path, positions_text=None):
    cfg = {**default_params()["backtest"], "min_order_value": 50.0}
    prices = gbm_bars(300, ("A", "B"))
    res = run_backtest(prices, _predictions(prices, prices["date"].iloc[100], 0.01), cfg, 5)
    path = tmp_path / "positions.csv"
    if positions_text is not None:
        path.write_text(positions_text)
    return cfg, prices, res, path


def test_orders_from_positions_are_hand_computed(tmp_path):
    """Threshold rule, two tickers, A up and B down: A at 1/2 of equity, B flat, from the user's holdings."""
    cfg, prices, res, path = _orders_setup(tmp_path, "ticker,shares\nA,10\nB,5\nCASH,1000\n")
    holdings = read_positions(path, ["A", "B"], allow_short=False)
    signal = pd.DataFrame({"ticker": ["A", "B"], "prediction": [0.02, -0.01]})
    orders = next_orders(res, signal, cfg, 5, 252, holdings).set_index("ticker")
    last = prices.groupby("ticker")["adj_close"].last()
    equity = 1000 + 10 * last["A"] + 5 * last["B"]
    assert orders.loc["A", "target_shares"] == pytest.approx(0.5 * equity / last["A"])
    assert orders.loc["A", "side"] == "buy" and orders.loc["A", "shares"] == pytest.approx(
        0.5 * equity / last["A"] - 10
    )
    assert orders.loc["B", "side"] == "sell" and orders.loc["B", "shares"] == pytest.approx(5)
    assert orders.loc["B", "cost"] == pytest.approx(5 * last["B"] * 1e-3)
    small = next_orders(res, signal, {**cfg, "min_order_value": 1e9}, 5, 252, holdings)
    assert (small["side"] == "none").all() and small["note"].str.contains("min_order_value").all()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ticker,shares\nZZZ,1\n", r"unknown ticker\(s\) \['ZZZ'\]"),
        ("ticker,shares\nA,-3\n", "line 2: negative share count -3"),
        ("ticker,qty\nA,3\n", "columns must be ticker,shares"),
        ("ticker,shares\nA,many\n", "line 2: shares 'many' is not a number"),
    ],
)
def test_bad_positions_file_is_a_clear_error(tmp_path, text, message):
    path = tmp_path / "positions.csv"
    path.write_text(text)
    with pytest.raises(PipelineError, match=message):
        read_positions(path, ["A", "B"], allow_short=False)


def test_params_switches_reach_the_engine():
    """Keys under backtest.* change the result in the direction expected, through run_backtest."""
    base = default_params()["backtest"]
    prices = gbm_bars(400, ("A", "B", "C", "D"), seed=5)
    rng = np.random.default_rng(2)
    preds = _predictions(prices, prices["date"].iloc[150], 0.0).assign(
        prediction=lambda d: rng.normal(0.001, 0.01, len(d))
    )
    rank = run_backtest(prices, preds, {**base, "rule": "rank", "top_k": 1}, 5)
    held = rank.weights.pivot(index="date", columns="ticker", values="weight").fillna(0).gt(1e-9).sum(axis=1)
    assert held.max() == 1 and held.iloc[-1] == 1
    stopped = run_backtest(prices, preds, {**base, "stop_loss": 0.01}, 5)
    assert (stopped.trades["reason"] == "stop_loss").any()
    equal = run_backtest(prices, preds, base, 5).equity["strategy"].pct_change().std()
    sized = run_backtest(prices, preds, {**base, "sizing": "volatility", "target_vol": 0.05}, 5)
    assert sized.equity["strategy"].pct_change().std() < equal
    with pytest.raises(PipelineError, match="backtest.max_position"):
        run_backtest(prices, preds, {**base, "rule": "rank", "top_k": 2, "max_position": 0.2}, 5)
