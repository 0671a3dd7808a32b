"""Speed of the portfolio backtest (`lib.portfolio`: the vectorized and event engines) against a plain numpy reference loop.

1. Vectorized engine vs the numpy reference on the peer bench's 500-asset x 6,300-day GBM panel
   with weekly SMA(50) target weights, next-open fills (target: ours <= the reference).
2. Event engine (stop-loss, trailing stop, drawdown control on) on the S&P 500 file, one asset,
   5,031 days (target <= 38 ms), engine alone and with the policy (`run_portfolio`).

All timings in one process, the contenders alternating, median of `--reps` runs after a warm-up.
Usage: python bench/backtest_speed.py [--reps 7]
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.portfolio.config import PortfolioConfig
from lib.portfolio.event import run_event
from lib.portfolio.run import run_portfolio
from lib.portfolio.targets import decision_mask, target_book
from lib.portfolio.vectorized import run_vectorized
from tests.helpers import order_rows

FEE, INIT_CASH, SMA_N, ANN = 0.001, 100_000.0, 50, 252


# Copied from the peer bench, shared/bench/benchlib/common.py (make_gbm_panel, decision_mask, ref_simulate).
def make_gbm_panel(n_assets: int = 500, n_days: int = 6300, seed: int = 20240601, start: str = "2000-01-03"):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range(start, periods=n_days, name="date")
    mu = rng.uniform(0.0, 0.12, n_assets) / ANN
    sig = rng.uniform(0.15, 0.45, n_assets) / math.sqrt(ANN)
    z_on = rng.standard_normal((n_days, n_assets))
    z_in = rng.standard_normal((n_days, n_assets))
    s_on, s_in = sig * math.sqrt(0.3), sig * math.sqrt(0.7)
    r_on = (0.3 * mu - 0.5 * s_on**2) + s_on * z_on
    r_in = (0.7 * mu - 0.5 * s_in**2) + s_in * z_in
    r_on[0] = 0.0
    p0 = rng.uniform(20, 200, n_assets)
    log_close = np.log(p0) + np.cumsum(r_on + r_in, axis=0)
    log_open = log_close - r_in
    return idx, np.exp(log_open), np.exp(log_close)


def bench_decision_mask(index: pd.DatetimeIndex) -> np.ndarray:
    iso = index.isocalendar()
    key = iso["year"].to_numpy().astype(np.int64) * 100 + iso["week"].to_numpy().astype(np.int64)
    last = np.empty(len(index), dtype=bool)
    last[:-1] = key[:-1] != key[1:]
    last[-1] = index[-1].weekday() >= 4
    return last


def ref_simulate(close, fill_price, orders, fee=FEE, init_cash=INIT_CASH):
    """The peer bench's event loop, vectorised across assets (each its own init_cash)."""
    C, P, W = close, fill_price, orders
    T, N = C.shape
    cash = np.full(N, float(init_cash))
    shares = np.zeros(N)
    equity = np.empty((T, N))
    n_orders = np.zeros(N, dtype=np.int64)
    fees = np.zeros(N)
    turnover = np.zeros(N)
    rows = np.flatnonzero(~np.isnan(W).all(axis=1))
    prev = 0
    for t in rows:
        if t > prev:
            equity[prev:t] = cash + shares * C[prev:t]
        w, p = W[t], P[t]
        has = ~np.isnan(w)
        E = cash + shares * p
        tgt = np.where(has, w * E / p, shares)
        delta = tgt - shares
        dust = np.abs(delta) <= np.maximum(1e-9 * np.maximum(np.abs(shares), np.abs(tgt)), 1e-12)
        delta[dust | ~has] = 0.0
        buy = delta > 0
        cap = np.maximum(cash, 0.0) / (p * (1.0 + fee))
        delta = np.where(buy, np.minimum(delta, cap), delta)
        notional = np.abs(delta) * p
        f = notional * fee
        cash = cash - delta * p - f
        shares = shares + delta
        n_orders += delta != 0
        fees += f
        turnover += notional
        prev = t
    equity[prev:] = cash + shares * C[prev:]
    return {"equity": equity, "cash": cash, "shares": shares, "n_orders": n_orders, "fees": fees, "turnover": turnover}


def sma_long(close: np.ndarray) -> np.ndarray:
    sma = pd.DataFrame(close).rolling(SMA_N, min_periods=SMA_N).mean().to_numpy()
    return (close > sma).astype(float)


def _all(res):
    """Build the result's lazily computed parts (trades table, weights)."""
    return res.trades, res.weights


def alternate(contenders: dict, reps: int) -> dict[str, float]:
    """Median seconds of each callable, run in turn (A B A B ...) after one warm-up each."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    gc.collect()
    for _ in range(reps):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()

    # 1. panel: vectorized engine vs the numpy reference
    dates, opn, cls = make_gbm_panel()
    n_days, n_assets = cls.shape
    signal = np.where(bench_decision_mask(dates)[:, None], sma_long(cls), np.nan)  # weekly, decision days
    ref_orders = order_rows(signal, "next_open")
    ours_targets = signal / n_assets  # one pool: each asset 1/N of equity when long
    cfg = PortfolioConfig(
        fill="next_open", commission_bps=10.0, slippage_bps=0.0, initial_cash=INIT_CASH * n_assets, engine="vectorized"
    )
    panel = alternate(
        {
            "numpy reference (ref_simulate)": lambda: ref_simulate(cls, opn, ref_orders),
            "ours: run_vectorized": lambda: run_vectorized(ours_targets, close=cls, open_=opn, cfg=cfg),
            "ours: + trades table, weights": lambda: _all(run_vectorized(ours_targets, close=cls, open_=opn, cfg=cfg)),
        },
        args.reps,
    )
    ours = run_vectorized(ours_targets, close=cls, open_=opn, cfg=cfg)
    print(
        f"1. GBM panel {n_assets} assets x {n_days} days, weekly targets, next-open fills, "
        f"{int((~np.isnan(ref_orders)).any(axis=1).sum())} order rows, {len(ours.trades)} fills (ours); "
        f"median of {args.reps}"
    )
    for name, sec in panel.items():
        print(f"   {name:<34} {sec * 1e3:8.1f} ms")
    ref = panel["numpy reference (ref_simulate)"]
    print(
        f"   ratio ours / reference: {panel['ours: run_vectorized'] / ref:.2f} (target <= 1); with the trades table "
        f"and weights built (the reference builds neither): {panel['ours: + trades table, weights'] / ref:.2f}"
    )

    # 2. one asset, 5,031 days: the event engine with its risk controls
    px = pd.read_csv(ROOT / "tests" / "data" / "sp500.csv", parse_dates=["date"]).set_index("date")
    close, o, h, lo = (px[c].to_numpy() for c in ("close", "open", "high", "low"))
    pred = sma_long(close[:, None]) - 0.5
    risk = PortfolioConfig(
        fill="next_open",
        commission_bps=10.0,
        slippage_bps=0.0,
        stop_loss=0.05,
        trailing_stop=0.10,
        drawdown_cut=0.20,
        drawdown_restore=0.10,
    )
    plain = PortfolioConfig(fill="next_open", commission_bps=10.0, slippage_bps=0.0)
    decide = decision_mask(len(px), risk, px.index)
    targets = target_book(pred, close, risk, decide)
    one = alternate(
        {
            "event engine (run_event)": lambda: run_event(targets, close=close, open_=o, high=h, low=lo, cfg=risk),
            "event engine + trades, weights": lambda: _all(
                run_event(targets, close=close, open_=o, high=h, low=lo, cfg=risk)
            ),
            "policy + event (run_portfolio)": lambda: run_portfolio(
                pred, close=close, open_=o, high=h, low=lo, cfg=risk, dates=px.index
            ),
            "vectorized engine, no controls": lambda: run_vectorized(targets, close=close, open_=o, cfg=plain),
            "numpy reference (array path)": lambda: ref_simulate(
                close[:, None], o[:, None], order_rows(targets, "next_open")
            ),
        },
        args.reps,
    )
    res = run_event(targets, close=close, open_=o, high=h, low=lo, cfg=risk)
    print(
        f"2. S&P 500, 1 asset x {len(px)} days, stop 5 %, trailing 10 %, drawdown cut 20 % / restore 10 %: "
        f"{len(res.trades)} fills {res.trades['reason'].value_counts().to_dict()}; median of {args.reps}"
    )
    for name, sec in one.items():
        print(f"   {name:<34} {sec * 1e3:8.1f} ms")
    ours_1 = run_vectorized(targets, close=close, open_=o, cfg=plain).equity
    ref_1 = ref_simulate(close[:, None], o[:, None], order_rows(targets, "next_open"))["equity"][:, 0]
    print(
        f"   one asset, no controls: ours vs the reference, max relative equity difference "
        f"{np.max(np.abs(ours_1 / ref_1 - 1)):.1e}"
    )
    print(
        f"   event engine / 38 ms target: {one['event engine (run_event)'] / 0.038:.2f}; with its tables: "
        f"{one['event engine + trades, weights'] / 0.038:.2f}; with the policy: "
        f"{one['policy + event (run_portfolio)'] / 0.038:.2f}"
    )


if __name__ == "__main__":
    main()
