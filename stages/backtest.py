"""backtest: rebalance on the last session of each week from the predictions, after costs."""
import logging

from lib.backtest import run_backtest
from lib.cli import path_args, run_stage
from lib.io import read_table, write_csv
from lib.params import load_params
from lib.tables import COLUMNS

log = logging.getLogger("backtest")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "prices", "predictions", "out")
    params = load_params()
    prices = read_table(args.prices, COLUMNS)
    predictions = read_table(args.predictions, ["date", "ticker", "prediction"])
    result = run_backtest(prices, predictions, params["backtest"], params["features"]["horizon"])
    write_csv(result.equity, args.out / "equity.csv")
    write_csv(result.weights, args.out / "weights.csv")
    write_csv(result.trades, args.out / "trades.csv")
    last = result.equity.iloc[-1]
    log.info("final equity: strategy %.2f, benchmark %.2f, momentum %.2f", last["strategy"], last["benchmark"],
             last["momentum"])


if __name__ == "__main__":
    run_stage("backtest", main)
