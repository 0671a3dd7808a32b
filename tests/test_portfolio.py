"""Portfolio backtest (lib.portfolio: config, targets, kernel, engines, policy): one cash pool, policy, kernel, two engines."""

import logging
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from lib.errors import PipelineError
from lib.portfolio.calendar import decision_days
from lib.portfolio.config import PortfolioConfig
from lib.portfolio.event import run_event
from lib.portfolio.kernel import _execute_many, execute, execute_one
from lib.portfolio.policy import apply_limits, rank_rule, size_kelly, target_weights, trend_filter, vol_regime_scale
from lib.portfolio.run import run_portfolio
from lib.portfolio.targets import target_book
from lib.portfolio.vectorized import run_vectorized
from tests.helpers import ROOT, default_params, order_rows, slice_simulate

# Equity of the peer bench's numpy reference (copied from tests/test_backtest.py): weekly SMA(50)
# long/flat on tests/data/sp500.csv, 10 bps, 100,000 cash.
REFERENCE = {
    "close": {
        "1999-12-30": 90065.5169950084,
        "2002-12-26": 69724.4727460406,
        "2008-12-10": 73693.5697926294,
        "2014-11-25": 99376.5338692626,
        "2018-12-31": 95934.5571861478,
    },
    "next_open": {
        "1999-12-30": 90065.5169950084,
        "2002-12-26": 69722.9144224620,
        "2008-12-10": 73683.4147075021,
        "2014-11-25": 100563.0699427284,
        "2018-12-31": 99589.2321421250,
    },
}
SEEDS = list(range(24))


def _sp500():
    px = pd.read_csv(ROOT / "tests" / "data" / "sp500.csv", parse_dates=["date"]).set_index("date")
    sma_long = (px["close"] > px["close"].rolling(50, min_periods=50).mean()).astype(float).to_numpy()
    return px, sma_long


def _market(rng, n_rows, n_cols, gaps=True, delist=True):
    """Random OHLC panel (valid bounds) and predictions; optional late starts, holes and delistings."""
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, (n_rows, n_cols)), axis=0))
    prev = np.vstack([close[:1], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 0.006, (n_rows, n_cols)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, (n_rows, n_cols)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, (n_rows, n_cols)))
    pred = rng.normal(0.001, 0.01, (n_rows, n_cols))
    pred[rng.uniform(size=pred.shape) < 0.05] = np.nan
    missing = np.zeros((n_rows, n_cols), bool)
    if gaps:
        for i in range(n_cols):
            kind = rng.integers(0, 4)
            if kind == 1:
                missing[: rng.integers(20, n_rows // 2), i] = True  # starts later
            elif kind == 2 and delist:
                missing[rng.integers(n_rows // 2, n_rows - 5) :, i] = True  # stops trading
            elif kind == 3:
                start = rng.integers(30, n_rows - 30)
                missing[start : start + rng.integers(1, 6), i] = True  # a hole
    for a in (close, open_, high, low, pred):
        a[missing] = np.nan
    return {"close": close, "open_": open_, "high": high, "low": low}, pred


def _random_config(rng, n_cols):
    rule = str(rng.choice(["threshold", "rank"]))
    sizing = str(rng.choice(["equal", "volatility", "kelly"]))
    allow_short = bool(rng.integers(0, 2))
    kw = {
        "rule": rule,
        "sizing": sizing,
        "allow_short": allow_short,
        "fill": str(rng.choice(["close", "next_open"])),
        "rebalance": str(rng.choice(["daily", "weekly", "monthly"])),
        "commission_bps": float(rng.uniform(0, 25)),
        "slippage_bps": float(rng.uniform(0, 25) * rng.integers(0, 2)),
        "threshold": float(rng.choice([0.0, 0.002])),
        "vol_window": int(rng.integers(5, 30)),
        "vol_scope": str(rng.choice(["position", "book"])),
        "target_vol": float(rng.uniform(0.05, 0.3)),
        "kelly_fraction": float(rng.uniform(0.1, 1.0)),
        "kelly_cap": float(rng.uniform(0.2, 2.0)),
        "max_gross": float(rng.uniform(0.5, 2.0)),
        "max_net": float(rng.uniform(0.3, 1.5)),
        "initial_cash": float(rng.uniform(1e3, 1e6)),
    }
    if rng.integers(0, 3) == 0:
        kw["trend_window"] = int(rng.integers(5, 60))
    if rng.integers(0, 3) == 0:
        kw.update(vol_regime_window=int(rng.integers(30, 100)), vol_regime_scale=float(rng.choice([0.0, 0.5])))
    if rng.integers(0, 3) == 0:
        kw["min_abs_prediction"] = 0.004
    k = 1
    if rule == "rank":
        if rng.integers(0, 2):
            k = int(rng.integers(1, n_cols + 1))
            kw["top_k"] = k
        else:
            kw["top_fraction"] = float(rng.uniform(0.2, 1.0))
            k = max(int(np.floor(kw["top_fraction"] * n_cols + 1e-9)), 1)
        kw.update(rank_weighting=str(rng.choice(["equal", "signal"])), min_tickers=int(rng.integers(1, n_cols + 1)))
    kw["max_position"] = max(float(rng.uniform(0.2, 1.0)), min(1.0, kw["max_gross"]) / k)
    return PortfolioConfig(**kw)


def _assert_same(a, b, scale):
    np.testing.assert_allclose(a.equity, b.equity, rtol=1e-9, atol=0)
    np.testing.assert_allclose(a.cash, b.cash, rtol=1e-9, atol=1e-9 * scale)
    np.testing.assert_allclose(a.shares, b.shares, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-9, atol=1e-12)
    ta, tb = a.trades, b.trades
    assert len(ta) == len(tb)
    for col in ("row", "asset"):
        np.testing.assert_array_equal(ta[col].to_numpy(), tb[col].to_numpy())
    assert ta["reason"].astype(str).tolist() == tb["reason"].astype(str).tolist()
    for col in ("shares", "price", "notional", "cost"):
        np.testing.assert_allclose(ta[col].to_numpy(), tb[col].to_numpy(), rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- one ticker = the foundation's engine


@pytest.mark.parametrize("engine", ["vectorized", "event"])
@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_one_ticker_matches_simulate_and_the_numpy_reference(fill, engine):
    px, sma_long = _sp500()
    cfg = PortfolioConfig(fill=fill, engine=engine, commission_bps=10.0, slippage_bps=0.0, initial_cash=100_000.0)
    res = run_portfolio(
        sma_long - 0.5, close=px["close"], open_=px["open"], high=px["high"], low=px["low"], cfg=cfg, dates=px.index
    )
    assert res.engine == engine
    targets = np.where(decision_days(px.index, "weekly"), sma_long, np.nan)[:, None]
    sim_equity, sim_trades = slice_simulate(
        px[["close"]].to_numpy(),
        px[["close" if fill == "close" else "open"]].to_numpy(),
        order_rows(targets, fill),
        0.001,
        100_000.0,
    )
    np.testing.assert_allclose(res.equity, sim_equity[:, 0], rtol=1e-9, atol=0)
    equity = pd.Series(res.equity, index=px.index)
    for day, ref in REFERENCE[fill].items():
        assert equity[day] == pytest.approx(ref, rel=1e-9, abs=0), day
    assert len(res.trades) == len(sim_trades) == 168
    np.testing.assert_allclose(res.trades["shares"], sim_trades["shares"], rtol=1e-9)
    assert (res.trades["reason"] == "rebalance").all()


@pytest.mark.parametrize("seed", SEEDS[:8])
def test_one_ticker_matches_simulate_with_shorts_costs_and_holes(seed):
    rng = np.random.default_rng(seed)
    bars, pred = _market(rng, 300, 1, gaps=True, delist=False)
    fill = ("close", "next_open")[seed % 2]
    cost_bps = float(rng.uniform(0, 50))
    dates = pd.bdate_range("2021-01-04", periods=300)
    cfg = PortfolioConfig(
        fill=fill,
        allow_short=bool(seed % 3),
        threshold=0.002,
        commission_bps=cost_bps,
        slippage_bps=0.0,
        initial_cash=1e4,
        rebalance="weekly",
    )
    decide = decision_days(dates, "weekly")[:, None]
    orders = order_rows(np.where(decide, target_weights(pred, 0.002, cfg.allow_short), np.nan), fill)
    sim_equity, sim_trades = slice_simulate(
        bars["close"], bars["close"] if fill == "close" else bars["open_"], orders, cost_bps / 1e4, 1e4
    )
    for engine in ("vectorized", "event"):
        res = run_portfolio(pred, **bars, cfg=replace(cfg, engine=engine), dates=dates)
        np.testing.assert_allclose(res.equity, sim_equity[:, 0], rtol=1e-9, atol=0)
        assert len(res.trades) == len(sim_trades)


# ----------------------------------------------------------------------------- kernel


def test_kernel_one_ticker_path_equals_the_array_path():
    rng = np.random.default_rng(7)
    for _ in range(300):
        cash, held = rng.uniform(-10, 1000), rng.choice([0.0, rng.uniform(-20, 20)])
        target, price, cost = (
            rng.choice([np.nan, 0.0, rng.uniform(-1.5, 1.5)]),
            rng.uniform(1, 100),
            rng.uniform(0, 0.01),
        )
        c1, h1, d1 = execute_one(cash, held, target, price, cost)
        cn, hn, dn = _execute_many(
            cash, np.array([held]), np.array([target]), np.array([price]), np.array([price]), cost
        )
        assert c1 == pytest.approx(cn, rel=1e-12, abs=1e-9) and h1 == pytest.approx(hn[0], rel=1e-12, abs=1e-12)
        assert d1 == pytest.approx(dn[0], rel=1e-12, abs=1e-12)
        assert execute(cash, np.array([held]), np.array([target]), np.array([price]), np.array([price]), cost)[0] == c1


def test_kernel_sells_first_then_scales_buys_pro_rata():
    c = 0.01
    # all in A (worth 100 at the fill), cash 0; move everything to B: A's proceeds net of costs fund B
    cash, held, delta = execute(
        0.0, np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([100.0, 50.0]), np.array([100.0, 50.0]), c
    )
    assert delta[0] == -1.0
    assert held[1] == pytest.approx(100 * (1 - c) / (50 * (1 + c)), rel=1e-12)
    assert cash == pytest.approx(0.0, abs=1e-9)
    # two buys asking for 120 % of the cash: both scaled by the same factor, costs paid
    cash, held, delta = execute(
        100.0, np.zeros(3), np.array([0.6, 0.6, np.nan]), np.array([10.0, 20.0, np.nan]), np.array([10.0, 20.0, 5.0]), c
    )
    np.testing.assert_allclose(held * [10.0, 20.0, 1.0], [50 / (1 + c), 50 / (1 + c), 0.0], rtol=1e-12)
    assert cash == pytest.approx(0.0, abs=1e-9)
    # a ticker without a price keeps its shares and is valued at its mark
    cash, held, delta = execute(
        50.0, np.array([0.0, 10.0]), np.array([0.5, 0.5]), np.array([10.0, np.nan]), np.array([10.0, 5.0]), 0.0
    )
    assert held[1] == 10.0 and delta[1] == 0.0 and held[0] == pytest.approx(0.5 * 100 / 10)


# ----------------------------------------------------------------------------- the two engines agree


@pytest.mark.parametrize("seed", SEEDS)
def test_vectorized_and_event_engines_agree(seed):
    rng = np.random.default_rng(1000 + seed)
    n_cols = int(rng.integers(1, 7))
    bars, pred = _market(rng, 260, n_cols, gaps=bool(rng.integers(0, 4)))
    cfg = _random_config(rng, n_cols)
    dates = pd.bdate_range("2020-01-06", periods=260)
    tickers = [f"T{i}" for i in range(n_cols)]
    vec = run_portfolio(pred, **bars, cfg=replace(cfg, engine="vectorized"), dates=dates, tickers=tickers)
    evt = run_portfolio(pred, **bars, cfg=replace(cfg, engine="event"), dates=dates, tickers=tickers)
    assert (vec.engine, evt.engine) == ("vectorized", "event")
    _assert_same(vec, evt, cfg.initial_cash)
    assert len(vec.trades) > 0, cfg
    if cfg.fill == "close":  # right after a fill at the close, the whole book is within the limits
        rows = np.unique(vec.trades["row"])
        w = np.nan_to_num(vec.weights[rows])
        slack = 1 + 2 * cfg.cost_rate + 1e-9  # costs come out of the equity the weights were sized on
        assert (np.abs(w).sum(axis=1) <= cfg.max_gross * slack).all()
        assert (np.abs(w.sum(axis=1)) <= cfg.max_net * slack).all()
        tradable = np.isfinite(bars["close"][rows])
        assert (np.abs(w[tradable]) <= cfg.max_position * slack).all()


def test_engines_agree_on_a_wide_book():
    rng = np.random.default_rng(99)
    bars, pred = _market(rng, 120, 80, gaps=True)
    cfg = PortfolioConfig(
        rule="rank",
        top_fraction=0.25,
        allow_short=True,
        sizing="volatility",
        vol_window=10,
        max_gross=1.5,
        rebalance="daily",
        commission_bps=10.0,
    )
    vec = run_portfolio(pred, **bars, cfg=replace(cfg, engine="vectorized"))
    _assert_same(vec, run_portfolio(pred, **bars, cfg=replace(cfg, engine="event")), cfg.initial_cash)
    assert len(vec.trades) > 1000


def test_auto_picks_vectorized_unless_a_path_dependent_control_is_on():
    assert PortfolioConfig().resolved_engine == "vectorized"
    for kw in ({"stop_loss": 0.1}, {"trailing_stop": 0.1}, {"drawdown_cut": 0.2}, {"daily_limits": True}):
        assert PortfolioConfig(**kw).resolved_engine == "event"


# ----------------------------------------------------------------------------- event engine, by hand


def _one(close, open_=None, high=None, low=None):
    def col(x):
        return None if x is None else np.asarray(x, float)[:, None]

    return {
        "close": col(close),
        "open_": col(open_ if open_ is not None else close),
        "high": col(high),
        "low": col(low),
    }


def test_stop_loss_hit_intraday_fills_at_the_stop():
    c = 0.001
    bars = _one([100, 96, 97], open_=[100, 98, 97], high=[100, 99, 98], low=[100, 94, 96])
    cfg = PortfolioConfig(fill="close", commission_bps=10.0, slippage_bps=0.0, initial_cash=1000.0, stop_loss=0.05)
    res = run_event(np.array([[1.0], [np.nan], [np.nan]]), **bars, cfg=cfg)
    shares = 1000 / (100 * (1 + c))
    cash0 = 1000 - shares * 100 * (1 + c)
    assert res.trades["reason"].astype(str).tolist() == ["rebalance", "stop_loss"]
    stop = res.trades.iloc[1]
    assert stop["price"] == 95.0 and stop["shares"] == pytest.approx(-shares) and stop["row"] == 1
    after = cash0 + shares * 95 * (1 - c)
    np.testing.assert_allclose(res.equity, [cash0 + shares * 100, after, after], rtol=1e-12)
    assert res.shares[1, 0] == 0.0


def test_gap_through_the_stop_fills_at_the_open():
    bars = _one([100, 92, 97], open_=[100, 93, 92], high=[100, 94, 98], low=[100, 91, 91])
    cfg = PortfolioConfig(fill="close", commission_bps=0.0, slippage_bps=0.0, initial_cash=1000.0, stop_loss=0.05)
    res = run_event(np.array([[1.0], [np.nan], [np.nan]]), **bars, cfg=cfg)
    stop = res.trades.iloc[1]
    assert (stop["reason"], stop["price"], stop["row"]) == ("stop_loss", 93.0, 1)
    assert res.equity[-1] == pytest.approx(930.0)


def test_trailing_stop_follows_the_highest_high():
    bars = _one([100, 108, 100, 101], open_=[100, 106, 107, 100], high=[100, 110, 107, 102], low=[100, 105, 98, 99])
    cfg = PortfolioConfig(
        fill="close", commission_bps=0.0, slippage_bps=0.0, initial_cash=1000.0, stop_loss=0.05, trailing_stop=0.10
    )
    res = run_event(np.array([[1.0], [np.nan], [np.nan], [np.nan]]), **bars, cfg=cfg)
    stop = res.trades.iloc[1]
    assert (stop["reason"], stop["row"]) == ("trailing_stop", 2)
    assert stop["price"] == pytest.approx(110 * 0.9)  # above the fixed stop at 95, so it binds first
    np.testing.assert_allclose(res.equity, [1000, 1080, 990, 990])


def test_short_stop_triggers_on_the_high():
    bars = _one([100, 103, 100], open_=[100, 101, 100], high=[100, 106, 101], low=[100, 100, 99])
    cfg = PortfolioConfig(
        fill="close", allow_short=True, commission_bps=0.0, slippage_bps=0.0, initial_cash=1000.0, stop_loss=0.05
    )
    res = run_event(np.array([[-1.0], [np.nan], [np.nan]]), **bars, cfg=cfg)
    stop = res.trades.iloc[1]
    assert (stop["reason"], stop["price"], stop["shares"]) == ("stop_loss", 105.0, 10.0)
    assert res.equity[-1] == pytest.approx(950.0)


def test_drawdown_control_cuts_then_restores_exposure():
    close = [100, 95, 85, 95, 115, 120]
    cfg = PortfolioConfig(
        fill="close",
        commission_bps=0.0,
        slippage_bps=0.0,
        initial_cash=1000.0,
        drawdown_cut=0.10,
        drawdown_restore=0.05,
        drawdown_factor=0.5,
    )
    targets = np.full((6, 1), np.nan)
    targets[0] = 1.0
    res = run_event(targets, **_one(close), cfg=cfg)
    t = res.trades
    assert t["reason"].astype(str).tolist() == ["rebalance", "drawdown_cut", "drawdown_restore"]
    assert t["row"].tolist() == [0, 2, 4]
    np.testing.assert_allclose(t["shares"], [10.0, -5.0, 425 / 115], rtol=1e-12)  # 15 % down: half; back at peak: all
    np.testing.assert_allclose(res.equity, [1000, 950, 850, 900, 1000, 1000 / 115 * 120], rtol=1e-12)
    np.testing.assert_allclose(res.weights[:, 0], [1, 1, 0.5, 475 / 900, 1, 1], rtol=1e-9)
    nxt = run_event(targets, **_one(close), cfg=replace(cfg, fill="next_open"))
    # decided at a close, filled at the next open (95, the cut, brings equity back to its peak: restored at once)
    assert nxt.trades["row"].tolist() == [1, 3, 4]
    assert nxt.trades["reason"].astype(str).tolist() == ["rebalance", "drawdown_cut", "drawdown_restore"]


def test_daily_limits_trim_a_position_that_drifted_above_the_cap():
    close = np.array([[100.0, 100.0], [150.0, 100.0], [150.0, 100.0]])
    targets = np.array([[0.5, 0.5], [np.nan, np.nan], [np.nan, np.nan]])
    cfg = PortfolioConfig(
        fill="close",
        commission_bps=0.0,
        slippage_bps=0.0,
        initial_cash=1000.0,
        max_position=0.5,
        daily_limits=True,
        limit_tolerance=0.01,
    )
    res = run_event(targets, close=close, open_=close, cfg=cfg)
    cap = res.trades[res.trades["reason"] == "cap"]
    assert cap["row"].tolist() == [1] and cap["asset"].tolist() == [0]
    assert cap["shares"].iloc[0] == pytest.approx(1250 * 0.5 / 150 - 5)
    np.testing.assert_allclose(res.weights[1:], [[0.5, 0.4], [0.5, 0.4]], rtol=1e-12)


# ----------------------------------------------------------------------------- directions


def test_a_stop_caps_the_loss_near_its_level():
    n = 60
    close = 100 * 0.99 ** np.arange(n)
    open_ = np.r_[100, close[:-1]]
    bars = _one(close, open_=open_, high=np.maximum(open_, close) * 1.001, low=np.minimum(open_, close) * 0.999)
    targets = np.full((n, 1), np.nan)
    targets[0] = 1.0
    base = PortfolioConfig(fill="close", commission_bps=10.0, slippage_bps=0.0, initial_cash=1000.0)
    held = run_event(targets, **bars, cfg=replace(base, engine="event"))
    stopped = run_event(targets, **bars, cfg=replace(base, stop_loss=0.05))
    c = 0.001
    assert stopped.equity[-1] == pytest.approx(1000 * 0.95 * (1 - c) / (1 + c), rel=1e-12)
    assert held.equity[-1] < 600 < stopped.equity[-1]


def test_volatility_sizing_lowers_realised_volatility():
    rng = np.random.default_rng(3)
    ret = np.r_[rng.normal(0, 0.004, 300), rng.normal(0, 0.03, 300)]
    close = 100 * np.exp(np.cumsum(ret))
    pred = np.full((600, 1), 0.01)
    common = {"fill": "close", "rebalance": "daily", "commission_bps": 0.0, "slippage_bps": 0.0, "vol_window": 20}
    vol = {}
    for sizing in ("equal", "volatility"):
        res = run_portfolio(pred, close=close, cfg=PortfolioConfig(sizing=sizing, target_vol=0.10, **common))
        vol[sizing] = np.std(np.diff(np.log(res.equity[30:])))
    assert vol["volatility"] < 0.6 * vol["equal"]


@pytest.mark.parametrize("engine", ["vectorized", "event"])
def test_rank_top_one_holds_exactly_one_name(engine):
    rng = np.random.default_rng(11)
    bars, pred = _market(rng, 200, 5, gaps=False)
    cfg = PortfolioConfig(rule="rank", top_k=1, engine=engine, commission_bps=10.0, fill="next_open")
    res = run_portfolio(pred, **bars, cfg=cfg, dates=pd.bdate_range("2022-01-03", periods=200))
    first = int(res.trades["row"].min())
    held = (np.abs(res.shares[first:]) > 0).sum(axis=1)
    assert (held == 1).all()
    assert res.trades["asset"].nunique() > 1  # it does rotate
    np.testing.assert_allclose(np.nansum(res.weights[first:], axis=1), 1.0, atol=0.01)


@pytest.mark.parametrize("rule", ["threshold", "rank"])
def test_nothing_dated_before_a_change_moves_when_later_data_change(rule):
    rng = np.random.default_rng(21)
    bars, pred = _market(rng, 300, 4, gaps=True, delist=False)
    cut = 180
    later = {k: v.copy() for k, v in bars.items()}
    for v in later.values():
        v[cut + 1 :] *= np.exp(rng.normal(0, 0.05, v[cut + 1 :].shape))
    later["high"] = np.fmax(later["high"], np.fmax(later["open_"], later["close"]))
    later["low"] = np.fmin(later["low"], np.fmin(later["open_"], later["close"]))
    pred_later = pred.copy()
    pred_later[cut + 1 :] = -pred_later[cut + 1 :]
    cfg = PortfolioConfig(
        rule=rule,
        top_k=2 if rule == "rank" else None,
        allow_short=True,
        sizing="kelly",
        trend_window=20,
        vol_regime_window=40,
        rebalance="daily",
        stop_loss=0.03,
        trailing_stop=0.06,
        drawdown_cut=0.08,
        drawdown_restore=0.03,
        daily_limits=True,
        max_position=0.6,
    )
    np.testing.assert_array_equal(
        target_book(pred, bars["close"], cfg)[: cut + 1], target_book(pred_later, later["close"], cfg)[: cut + 1]
    )
    for engine in ("event", "vectorized"):
        c = (
            cfg
            if engine == "event"
            else replace(cfg, stop_loss=None, trailing_stop=None, drawdown_cut=None, daily_limits=False)
        )
        a, b = run_portfolio(pred, **bars, cfg=c), run_portfolio(pred_later, **later, cfg=c)
        np.testing.assert_array_equal(a.equity[: cut + 1], b.equity[: cut + 1])
        assert not np.array_equal(a.equity, b.equity)


# ----------------------------------------------------------------------------- delistings and late starts


def test_a_delisted_ticker_is_closed_at_its_last_price_and_a_late_one_enters(caplog):
    rng = np.random.default_rng(5)
    bars, _ = _market(rng, 200, 3, gaps=False)
    for a in bars.values():
        a[150:, 1] = np.nan  # B stops trading
        a[:100, 2] = np.nan  # C starts later
    pred = np.full((200, 3), 0.01)
    pred[:100, 2] = np.nan
    dates = pd.bdate_range("2022-01-03", periods=200)
    cfg = PortfolioConfig(fill="next_open", commission_bps=10.0, slippage_bps=0.0)
    with caplog.at_level(logging.WARNING, logger="lib.portfolio.delisting"):
        res = run_portfolio(pred, **bars, cfg=cfg, dates=dates, tickers=["A", "B", "C"])
    gone = res.trades[res.trades["reason"] == "delisted"]
    assert gone["ticker"].astype(str).tolist() == ["B"] and gone["row"].tolist() == [150]
    assert gone["price"].iloc[0] == bars["close"][149, 1]
    assert gone["shares"].iloc[0] == pytest.approx(-res.shares[149, 1])
    assert gone["cost"].iloc[0] == pytest.approx(gone["notional"].iloc[0] * 1e-3)
    assert (res.shares[150:, 1] == 0).all() and "B has no price from" in caplog.text
    assert (res.shares[:100, 2] == 0).all() and res.trades.loc[res.trades["ticker"] == "C", "row"].min() > 100
    _assert_same(
        res,
        run_portfolio(pred, **bars, cfg=replace(cfg, engine="event"), dates=dates, tickers=["A", "B", "C"]),
        cfg.initial_cash,
    )


# ----------------------------------------------------------------------------- policy pieces


def test_rank_rule_long_short_signal_weights_and_minimum_names():
    pred = np.array([[3.0, 1.0, 2.0, np.nan]])
    np.testing.assert_array_equal(rank_rule(pred, top_k=1, allow_short=True), [[1.0, -1.0, 0.0, 0.0]])
    np.testing.assert_allclose(rank_rule(pred, top_k=2, weighting="signal"), [[0.6, 0.0, 0.4, 0.0]])
    assert np.isnan(rank_rule(pred, top_k=1, min_tickers=4)).all()  # 3 predictions < 4: no trade
    np.testing.assert_array_equal(rank_rule(pred, top_fraction=0.5), [[1.0, 0.0, 0.0, 0.0]])


def test_rank_rule_ties_on_a_boundary_share_the_slots_whatever_the_ticker_order():
    # top 2 of [3, 2, 2, 2, 1]: the 3, then one slot shared by the three tied 2s (1/3 each)
    pred = np.array([[3.0, 2.0, 2.0, 2.0, 1.0, np.nan], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    w = rank_rule(pred, top_k=2)
    np.testing.assert_allclose(w[0], [0.5, 1 / 6, 1 / 6, 1 / 6, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-15)  # fully invested, ties or not
    # long and short a block tied across both boundaries: no information, no net position
    np.testing.assert_array_equal(rank_rule(pred, top_k=2, allow_short=True)[1], np.zeros(6))
    rng = np.random.default_rng(3)
    p = rng.integers(0, 4, (30, 12)).astype(float)  # few distinct values: ties everywhere
    perm = rng.permutation(12)
    for kw in ({"top_k": 3}, {"top_fraction": 0.25, "allow_short": True}, {"top_k": 2, "weighting": "signal"}):
        np.testing.assert_allclose(rank_rule(p[:, perm], **kw), rank_rule(p, **kw)[:, perm], atol=1e-15)


def test_kelly_is_fraction_times_mu_over_sigma_squared_capped():
    w = size_kelly(
        np.array([[1.0, 1.0, -1.0, 1.0]]),
        np.array([[0.01, 0.10, -0.01, -0.01]]),
        np.full((1, 4), 0.20),
        fraction=0.5,
        cap=8.0,
        horizon=5,
        periods_per_year=252,
    )
    kelly = 0.5 * 0.01 / (5 * 0.2**2 / 252)
    np.testing.assert_allclose(w, [[kelly, 8.0, -kelly, 0.0]])


def test_limits_filters():
    w = apply_limits(np.array([0.6, 0.6, -0.1, np.nan]), max_position=0.5, max_gross=1.0, max_net=0.5)
    z = np.nan_to_num(w)
    assert np.abs(z).max() <= 0.5 and np.abs(z).sum() <= 1.0 + 1e-12 and z.sum() == pytest.approx(0.5)
    assert np.isnan(w[3])
    close = np.array([[10.0, 10.0], [12.0, 8.0]])
    sma = np.array([[np.nan, np.nan], [11.0, 9.0]])
    np.testing.assert_array_equal(
        trend_filter(np.array([[1.0, -1.0], [1.0, 1.0]]), close, sma), [[0.0, 0.0], [1.0, 0.0]]
    )
    vol = np.r_[np.full(10, 0.1), 0.5][:, None]
    np.testing.assert_array_equal(vol_regime_scale(vol, 10, 0.8, 0.25)[:, 0], np.r_[np.ones(10), 0.25])


def test_target_book_threshold_shares_the_pool_equally():
    close = np.full((5, 4), 10.0)
    close[:2, 3] = np.nan  # D starts on day 2
    pred = np.array([[0.01, -0.01, 0.01, np.nan]] * 5)
    w = target_book(pred, close, PortfolioConfig(allow_short=True))
    np.testing.assert_allclose(w[0], [1 / 3, -1 / 3, 1 / 3, np.nan])
    np.testing.assert_allclose(w[4], [0.25, -0.25, 0.25, np.nan])


def test_config_from_params_and_cost_rate():
    cfg = PortfolioConfig.from_params({**default_params()["backtest"], "not_a_key": 1})
    assert cfg.cost_rate == pytest.approx((cfg.commission_bps + cfg.slippage_bps) / 1e4)
    assert PortfolioConfig.from_params({"stop_loss": 0.1}).stop_loss == 0.1


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"rule": "rank", "top_k": 4, "max_position": 0.2}, "backtest.max_position"),
        ({"stop_loss": 0.0}, "backtest.stop_loss"),
        ({"trailing_stop": -0.1}, "backtest.trailing_stop"),
        ({"rule": "rank"}, "backtest.top_k"),
        ({"engine": "vectorized", "stop_loss": 0.1}, "backtest.engine"),
        ({"drawdown_cut": 0.1, "drawdown_restore": 0.2}, "backtest.drawdown_restore"),
        ({"sizing": "optimal"}, "backtest.sizing"),
        ({"max_gross": 0}, "backtest.max_gross"),
    ],
)
def test_bad_config_names_its_params_key(kw, key):
    with pytest.raises(PipelineError, match=key.replace(".", r"\.")):
        PortfolioConfig(**kw)


def test_bad_data_dependent_input_names_its_params_key():
    rng = np.random.default_rng(0)
    bars, pred = _market(rng, 100, 3, gaps=False)
    with pytest.raises(PipelineError, match=r"backtest\.trend_window \(500\) is longer than the data \(100"):
        run_portfolio(pred, **bars, cfg=PortfolioConfig(trend_window=500))
    with pytest.raises(PipelineError, match=r"backtest\.vol_window"):
        run_portfolio(pred, **bars, cfg=PortfolioConfig(sizing="volatility", vol_window=100))
    with pytest.raises(PipelineError, match=r"backtest\.max_position"):
        run_portfolio(pred, **bars, cfg=PortfolioConfig(rule="rank", top_fraction=0.7, max_position=0.4))
    with pytest.raises(PipelineError, match=r"backtest\.top_k"):
        run_portfolio(pred, **bars, cfg=PortfolioConfig(rule="rank", top_k=5))
    with pytest.raises(PipelineError, match=r"backtest\.engine"):
        run_vectorized(
            np.zeros((100, 3)), close=bars["close"], open_=bars["open_"], cfg=PortfolioConfig(daily_limits=True)
        )
