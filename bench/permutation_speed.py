"""Speed of the batched permutation null (`lib.evaluation.permutation.permutation_sharpes`) against
single backtests (`lib.portfolio.backtest.run_backtest`), in one process. Target: 100 permutations
cost at most 10 single backtests (ratio <= 10).

1. The bundled sample (SPY, QQQ, TLT, GLD from 2005), default params (threshold rule), predictions
   on the default run's out-of-sample window (2020-09-11 ... 2024-09-12), random values.
2. A synthetic 402-ticker x 5-year universe (GBM bars), the README's universe rule (rank, long the
   top 10 %, min_tickers 50), predictions over the last year.

Both also check that the batched Sharpe ratios equal the loop's on the first few shuffles (1e-12),
and time the cost sensitivity's grid (strategy and buy-and-hold at 5 costs) in one batched pass
(`BatchedBacktest.at_costs`, set-up included) against the 5 backtests it replaces.
Usage: python bench/permutation_speed.py [--permutations 100] [--reps 3] [--check 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.data.providers import from_csv_dir
from lib.evaluation.performance import returns_of, sharpe_of
from lib.evaluation.permutation import null_test, permutation_sharpes
from lib.portfolio.backtest import run_backtest
from lib.portfolio.batch import BatchedBacktest
from lib.tables import STRATEGY
from tests.helpers import default_params, gbm_bars


def sample_case() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    frames = from_csv_dir(ROOT / "data" / "sample", ["SPY", "QQQ", "TLT", "GLD"])
    prices = pd.concat([f.assign(ticker=t) for t, f in frames.items()], ignore_index=True)
    prices = prices[prices["date"] >= "2005-01-01"].reset_index(drop=True)
    rows = prices.loc[prices["date"].between("2020-09-11", "2024-09-12"), ["date", "ticker"]]
    return prices, _predictions(rows), default_params()["backtest"]


def universe_case() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    tickers = tuple(f"T{i:03d}" for i in range(402))
    prices = gbm_bars(1260, tickers, seed=1, start="2015-01-12")
    rows = prices.loc[prices["date"] >= prices["date"].iloc[1260 - 252], ["date", "ticker"]]
    bt = {**default_params()["backtest"], "rule": "rank", "top_fraction": 0.1, "min_tickers": 50}
    return prices, _predictions(rows), bt


def _predictions(rows: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return rows.reset_index(drop=True).assign(prediction=rng.normal(0, 0.01, len(rows)), label=np.nan)


def _median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name: str, prices: pd.DataFrame, preds: pd.DataFrame, bt: dict, n: int, reps: int, check: int) -> dict:
    run_backtest(prices, preds, bt, 5)  # warm-up
    single = _median_s(lambda: run_backtest(prices, preds, bt, 5), reps)
    batched = _median_s(lambda: permutation_sharpes(prices, preds, bt, 5, 252, 0.0, n, 0), reps)
    fast = permutation_sharpes(prices, preds, bt, 5, 252, 0.0, check, 0)
    slow = null_test(  # the same draws, one backtest each
        lambda pr: sharpe_of(returns_of(run_backtest(prices, pr, bt, 5).equity[STRATEGY].to_numpy()), 252),
        preds,
        bt,
        check,
        0,
    )
    grid = [0.0, 5.0, 10.0, 20.0, 50.0]
    costs = _median_s(lambda: BatchedBacktest(prices, preds, bt, 5).at_costs(grid), reps)
    err = max(
        abs(a - b) for a, b in zip([fast["observed"], *fast["null"]], [slow["observed"], *slow["null"]], strict=True)
    )
    print(
        f"{name}: {preds['ticker'].nunique()} tickers x {preds['date'].nunique()} prediction dates; "
        f"one backtest {single * 1e3:.0f} ms; {n} permutations batched {batched * 1e3:.0f} ms "
        f"= {batched / single:.2f} single backtests (target <= {n / 10:g}); "
        f"max |Sharpe batched - loop| over {check} shuffles {err:.1e}; "
        f"cost grid of {len(grid)} batched {costs * 1e3:.0f} ms = {costs / single:.2f} single backtests"
    )
    return {
        "case": name,
        "tickers": int(preds["ticker"].nunique()),
        "prediction_dates": int(preds["date"].nunique()),
        "permutations": n,
        "single_backtest_s": round(single, 3),
        "permutations_batched_s": round(batched, 3),
        "ratio": round(batched / single, 2),
        "max_abs_sharpe_diff": err,
        "cost_grid": len(grid),
        "cost_grid_batched_s": round(costs, 3),
        "cost_grid_ratio": round(costs / single, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--check", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    a = ap.parse_args()
    results = [
        bench("bundled sample", *sample_case(), a.permutations, a.reps, a.check),
        bench("synthetic universe", *universe_case(), a.permutations, a.reps, a.check),
    ]
    if a.json:
        a.json.write_text(
            json.dumps({"platform": platform.platform(), "cpus": os.cpu_count(), "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
