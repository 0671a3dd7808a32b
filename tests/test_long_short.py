"""The long-short book of the rank rule: dollar-neutral at every rebalance, costs charged, equal to a
hand computation on three tickers, on run_backtest's window; undefined for the threshold rule."""

import numpy as np
import pandas as pd
import pytest

from lib.portfolio.backtest import run_backtest
from lib.portfolio.long_short import NOT_RANK, long_short_book
from lib.tables import IN_UNIVERSE, LONG_SHORT, weight_column
from tests.helpers import default_params, gbm_bars

RANK = {"rule": "rank", "top_k": 2}


def _case(tickers=("A", "B", "C", "D", "E", "F"), seed=0):
    prices = gbm_bars(200, tickers, seed=seed)
    rng = np.random.default_rng(seed)
    preds = prices.loc[prices["date"] >= prices["date"].iloc[40], ["date", "ticker"]].reset_index(drop=True)
    return prices, preds.assign(prediction=rng.normal(0, 0.01, len(preds)), label=np.nan)


@pytest.mark.parametrize("extra", [{}, {"top_fraction": 0.5, "top_k": None}, {"rank_weighting": "signal"}])
def test_dollar_neutral_at_every_rebalance(extra):
    cfg = {**default_params()["backtest"], **RANK, **extra}
    prices, preds = _case()
    book, reason = long_short_book(prices, preds, cfg, 5)
    assert reason == "" and book is not None
    t = book.targets.to_numpy()
    np.testing.assert_allclose(np.nansum(t, axis=1), 0.0, atol=1e-12)  # net 0
    np.testing.assert_allclose(np.nansum(np.abs(t), axis=1), 1.0, rtol=1e-12)  # gross 1
    assert ((t > 0).sum(axis=1) >= 1).all() and ((t < 0).sum(axis=1) >= 1).all()
    res = book.result
    opens = prices.pivot(index="date", columns="ticker", values="open").to_numpy() * 0.9  # adjusted like the closes
    fills = np.unique(res.trades["row"].to_numpy())
    assert len(fills) == len(book.targets)  # one fill row per decision
    for r in fills:  # after the fills, at the fill price: net notional 0, gross = the equity the targets were set on
        notional = res.shares[r] * opens[r]
        before = res.cash[r - 1] + res.shares[r - 1] @ opens[r]
        assert abs(notional.sum()) <= 1e-9 * before
        assert np.abs(notional).sum() == pytest.approx(before, rel=1e-9)


def test_costs_are_charged():
    cfg = {**default_params()["backtest"], **RANK}
    prices, preds = _case()
    paid, _ = long_short_book(prices, preds, cfg, 5)
    free, _ = long_short_book(prices, preds, {**cfg, "commission_bps": 0.0, "slippage_bps": 0.0}, 5)
    assert paid.trades["cost"].sum() == pytest.approx(paid.trades["notional"].sum() * 1e-3, rel=1e-12)
    assert paid.trades["cost"].sum() > 0 and (paid.trades["book"] == LONG_SHORT).all()
    assert paid.equity[LONG_SHORT].iloc[-1] < free.equity[LONG_SHORT].iloc[-1]


def test_on_the_backtests_window():
    cfg = {**default_params()["backtest"], **RANK}
    prices, preds = _case()
    book, _ = long_short_book(prices, preds, cfg, 5)
    eq = run_backtest(prices, preds, cfg, 5).equity
    assert book.equity["date"].equals(eq["date"])
    assert (
        book.equity[LONG_SHORT].iloc[0] == cfg["initial_cash"] and book.equity[weight_column(LONG_SHORT)].iloc[0] == 0
    )
    assert book.trades["date"].min() == eq["date"].iloc[1]  # enters on the strategy's first fill


def test_threshold_rule_is_undefined():
    prices, preds = _case()
    assert long_short_book(prices, preds, default_params()["backtest"], 5) == (None, NOT_RANK)


def test_equals_a_hand_computation_on_three_tickers():
    """Three tickers, top_k 1, fills at the decision day's close, weekly: long the top at +1/2, short the
    bottom at -1/2 of equity; sells first, then buys; cost 10 bps of each traded notional."""
    dates = pd.bdate_range("2024-01-01", periods=15)  # Mon 1 Jan ... Fri 19 Jan: decisions on 3 Fridays
    rng = np.random.default_rng(3)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (15, 3)), axis=0))
    prices = pd.concat(
        [
            pd.DataFrame(
                {"date": dates, "ticker": t, "open": c, "high": c * 1.01, "low": c * 0.99, "close": c}
                | {"adj_close": c, "volume": 1e6}
            )
            for t, c in zip("ABC", close.T, strict=True)
        ],
        ignore_index=True,
    )
    pred = {"2024-01-05": (0.03, 0.01, -0.02), "2024-01-12": (-0.01, 0.00, 0.02), "2024-01-19": (0.0, 0.01, -0.01)}
    preds = pd.DataFrame(
        [(pd.Timestamp(d), t, v) for d, vals in pred.items() for t, v in zip("ABC", vals, strict=True)],
        columns=["date", "ticker", "prediction"],
    ).assign(label=np.nan)
    cfg = {**default_params()["backtest"], "rule": "rank", "top_k": 1, "fill": "close"}
    book, _ = long_short_book(prices, preds, cfg, 5)

    c, cash, held, expected = 1e-3, 1e5, np.zeros(3), []
    weights = {4: (0.5, 0.0, -0.5), 9: (-0.5, 0.0, 0.5), 14: (0.0, 0.5, -0.5)}  # the Fridays' rows
    for t in range(15):
        if t in weights:
            equity = cash + held @ close[t]
            target = np.array(weights[t]) * equity / close[t]
            trade = target - held
            cash -= trade @ close[t] + c * np.abs(trade) @ close[t]
            held = target
        expected.append(cash + held @ close[t])
    got = book.equity.set_index("date")[LONG_SHORT]
    np.testing.assert_allclose(got.to_numpy(), np.array(expected)[3:], rtol=1e-12)  # window opens at the close before
    np.testing.assert_allclose(book.targets.to_numpy(), np.array(list(weights.values())), atol=0)


def test_no_look_ahead():
    """Change every price and prediction after T: nothing dated <= T changes, later values do."""
    cfg = {**default_params()["backtest"], **RANK}
    prices, preds = _case()
    base, _ = long_short_book(prices, preds, cfg, 5)
    cut = base.equity["date"].iloc[len(base.equity) // 2]
    later_p, later_q = prices["date"] > cut, preds["date"] > cut
    moved = prices.copy()
    moved.loc[later_p, ["open", "high", "low", "close", "adj_close"]] *= 1.5
    shuffled = preds.copy()
    shuffled.loc[later_q, "prediction"] = -shuffled.loc[later_q, "prediction"]
    other, _ = long_short_book(moved, shuffled, cfg, 5)
    before = base.equity["date"] <= cut
    pd.testing.assert_frame_equal(base.equity[before], other.equity[before])
    pd.testing.assert_frame_equal(base.targets[base.targets.index <= cut], other.targets[other.targets.index <= cut])
    assert not np.allclose(base.equity.loc[~before, LONG_SHORT], other.equity.loc[~before, LONG_SHORT])


def test_only_members_are_ranked():
    cfg = {**default_params()["backtest"], **RANK}
    prices, preds = _case()
    dates = np.sort(preds["date"].unique())
    out = (preds["ticker"] == "A") & (preds["date"] < dates[60])  # A joins the universe on the 60th date
    preds = preds.assign(**{IN_UNIVERSE: (~out).astype(int)})
    book, _ = long_short_book(prices, preds, cfg, 5)
    t = book.targets
    assert (t.loc[t.index < dates[60], "A"] == 0).all() and (t.loc[t.index >= dates[60], "A"] != 0).any()
    np.testing.assert_allclose(t.sum(axis=1), 0.0, atol=1e-12)
