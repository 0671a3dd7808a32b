"""backtest: rebalance on the last session of each week from the predictions, after costs."""
import argparse
import logging
from pathlib import Path

from lib.backtest import run_backtest
from lib.cli import run_stage
from lib.io import read_table, write_csv
from lib.params import load_params
from lib.providers import COLUMNS

log = logging.getLogger("backtest")


def _dated(df):
    return df.assign(date=df["date"].dt.strftime("%Y-%m-%d"))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prices", type=Path, required=True)
    ap.add_argument("--predictions", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for equity.csv, weights.csv, trades.csv")
    args = ap.parse_args(argv)
    params = load_params()
    prices = read_table(args.prices, COLUMNS)
    predictions = read_table(args.predictions, ["date", "ticker", "prediction"])
    result = run_backtest(prices, predictions, params["backtest"], params["features"]["horizon"])
    write_csv(_dated(result.equity), args.out / "equity.csv")
    write_csv(_dated(result.weights), args.out / "weights.csv")
    write_csv(_dated(result.trades), args.out / "trades.csv")
    last = result.equity.iloc[-1]
    log.info("final equity: strategy %.2f, benchmark %.2f, momentum %.2f", last["strategy"], last["benchmark"],
             last["momentum"])


if __name__ == "__main__":
    run_stage("backtest", main)
