"""Test helpers: default params, a small fast config, synthetic bars, the stages as DVC runs them."""

from __future__ import annotations

import copy
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lib.params import load_params

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELINE_QUIET", "1")


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this interpreter's folder first on PATH (dvc.yaml runs
    `python -m stages...`), quiet logs, no analytics, a git identity."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {
        **os.environ,
        "PATH": path,
        "PYTHONPATH": str(ROOT),
        "PIPELINE_QUIET": "1",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        **extra,
    }


def default_params() -> dict:
    return copy.deepcopy(load_params(ROOT / "params.yaml"))


def small_params() -> dict:
    """A config that runs the whole pipeline in seconds: two tickers, two short folds, a tiny LSTM."""
    p = default_params()
    p["data"].update(tickers=["SPY", "TLT"], start="2016-01-01", end="2019-12-31")
    p["features"].update(sma_windows=[10, 50], vol_windows=[5, 21], return_windows=[1, 5, 21])
    p["walk_forward"].update(folds=2, test_sessions=100, window="expanding")
    p["model"].update(hidden=8, layers=1, dropout=0.0, seq_len=10)
    p["train"].update(epochs=3, patience=2, batch_size=128)
    p["evaluate"].update(
        permutations=10, bootstrap_reps=100, spa_reps=100, monte_carlo_paths=100, cost_grid_bps=[0, 10, 50]
    )
    return p


def frame_sha(df: pd.DataFrame) -> str:
    """sha256 of a table's values, column names excluded (pandas' row hashes, index ignored)."""
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def gbm_bars(
    n: int = 300, tickers: tuple[str, ...] = ("AAA",), seed: int = 0, start: str = "2020-01-01"
) -> pd.DataFrame:
    """Synthetic daily bars in the long layout, with valid OHLC bounds and positive volume."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=n)
    parts = []
    for t in tickers:
        close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, n)))
        open_ = close * np.exp(rng.normal(0, 0.003, n))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
        parts.append(
            pd.DataFrame(
                {
                    "date": dates,
                    "ticker": t,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "adj_close": close * 0.9,
                    "volume": rng.integers(1e5, 1e6, n).astype(float),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def stage_commands() -> dict[str, tuple[str, list[str]]]:
    """The stages' module and arguments, read from dvc.yaml, so tests run exactly what DVC runs."""
    import shlex

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in spec.items():
        argv = shlex.split(stage["cmd"])
        assert argv[:2] == ["python", "-m"], stage["cmd"]
        out[name] = (argv[2], argv[3:])
    return out


def run_stages(*names: str) -> None:
    """Run stages in-process in the current directory (exceptions propagate to the test)."""
    import importlib

    commands = stage_commands()
    for name in names:
        module, argv = commands[name]
        importlib.import_module(module).main(argv)


def slice_simulate(
    close: np.ndarray, fill_price: np.ndarray, orders: np.ndarray, cost_rate: float, cash_per_asset: float
) -> tuple[np.ndarray, pd.DataFrame]:
    """The foundation's engine, kept as a test oracle (it matches the peer bench's numpy reference):
    each ticker trades its own slice of cash; target-weight `orders` ((T, N), NaN = no order) fill
    at `fill_price` on the same row. Returns the (T, N) slice equity and the fills (row, asset, shares)."""
    close = np.nan_to_num(pd.DataFrame(close).ffill().to_numpy(float))
    price, w = np.asarray(fill_price, float), np.asarray(orders, float)
    cash = np.full(close.shape[1], float(cash_per_asset))
    held = np.zeros(close.shape[1])
    equity, fills = np.empty(close.shape), []
    prev = 0
    for t in np.flatnonzero(~np.isnan(w).all(axis=1)):
        equity[prev:t] = cash + held * close[prev:t]
        live = ~np.isnan(w[t]) & (price[t] > 0)
        p = np.where(live, price[t], 1.0)
        target = np.where(live, np.nan_to_num(w[t]) * (cash + held * p) / p, held)
        delta = target - held
        delta[(np.abs(delta) <= np.maximum(1e-9 * np.maximum(np.abs(held), np.abs(target)), 1e-12)) | ~live] = 0.0
        delta = np.where(delta > 0, np.minimum(delta, np.maximum(cash, 0.0) / (p * (1.0 + cost_rate))), delta)
        cash = cash - delta * p - np.abs(delta) * p * cost_rate
        held = held + delta
        fills += [(t, i, delta[i]) for i in np.flatnonzero(delta)]
        prev = t
    equity[prev:] = cash + held * close[prev:]
    return equity, pd.DataFrame(fills, columns=["row", "asset", "shares"])


def synthetic_study(
    folder: Path,
    signal: float,
    seed: int = 0,
    tickers: tuple[str, ...] = ("AAA", "BBB", "CCC"),
    n: int = 560,
    test: int = 400,
) -> dict:
    """Evaluate's inputs without training: GBM prices, predictions = signal x the future label + noise
    over the last `test` sessions (two folds), and the real backtest's outputs. Writes params.yaml,
    data/clean/prices.parquet, data/predictions.parquet and reports/backtest/ under `folder`; returns params."""
    from lib.io import write_csv, write_table
    from lib.portfolio.backtest import run_backtest, run_baseline_books
    from lib.portfolio.long_short import long_short_book
    from lib.tables import BASELINE_PREDICTIONS

    p = small_params()
    p["data"]["tickers"] = list(tickers)
    horizon = p["features"]["horizon"]
    prices = gbm_bars(n, tickers, seed=seed)
    rng = np.random.default_rng(seed + 1)
    parts = []
    for t, g in prices.groupby("ticker", sort=True):
        g = g.tail(test + horizon).reset_index(drop=True)
        label = np.log(g["adj_close"].shift(-horizon) / g["adj_close"]).to_numpy()
        noise = rng.normal(0, np.nanstd(label), len(g))
        pred = signal * np.nan_to_num(label) + noise
        parts.append(
            pd.DataFrame(
                {
                    "date": g["date"],
                    "ticker": t,
                    "fold": np.arange(len(g)) * 2 // len(g),
                    "prediction": pred,
                    "label": label,
                }
            ).head(test)
        )
    preds = pd.concat(parts).sort_values(["date", "ticker"]).reset_index(drop=True)
    ppy = p["evaluate"]["periods_per_year"]
    result = run_backtest(prices, preds, p["backtest"], horizon, ppy)
    # one baseline family ("ridge"): the same rows with half the signal and fresh noise
    baseline = preds.assign(prediction=0.5 * preds["prediction"] + rng.normal(0, preds["prediction"].std(), len(preds)))
    base_equity, base_trades = run_baseline_books(prices, preds, {"ridge": baseline}, p["backtest"], horizon, ppy)
    long_short, _ = long_short_book(prices, preds, p["backtest"], horizon, ppy)
    write_params(folder, p)
    write_table(prices, folder / "data/clean/prices.parquet")
    write_table(preds, folder / "data/predictions.parquet")
    features = preds[["date", "ticker", "label"]].assign(feature=rng.normal(size=len(preds)))
    write_table(features, folder / "data/features.parquet")  # evaluate reads the labels (live) and drift
    write_table(baseline.assign(book="ridge")[BASELINE_PREDICTIONS], folder / "data/baseline_predictions.parquet")
    out = folder / "reports/backtest"
    for name in ("equity", "trades", "weights"):
        write_csv(getattr(result, name), out / f"{name}.csv")
    write_csv(base_equity, out / "baseline_equity.csv")
    write_csv(base_trades, out / "baseline_trades.csv")
    write_csv(long_short.equity if long_short else result.equity[["date"]], out / "long_short.csv")
    write_csv(long_short.trades if long_short else result.trades.iloc[:0], out / "long_short_trades.csv")
    return p


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """Write a checkpoint as the train stage writes a model file (`lib.ml.trainer.checkpoint_bytes`)."""
    from lib.io import write_bytes
    from lib.ml.trainer import checkpoint_bytes

    write_bytes(checkpoint_bytes(ckpt), path)


def order_rows(targets: np.ndarray, fill: str) -> np.ndarray:
    """Move decision-day targets to the row they fill on: the same close, or the next open."""
    if fill == "close":
        return targets
    shifted = np.full_like(targets, np.nan)
    shifted[1:] = targets[:-1]
    return shifted
