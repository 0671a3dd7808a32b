"""backtest: the strategy and its baselines after costs, the next rebalance's orders, P&L attribution."""

import json
import logging

import pandas as pd

from lib.cli import path_args, run_stage
from lib.errors import PipelineError
from lib.io import read_table, write_bytes, write_csv
from lib.params import load_params
from lib.portfolio.backtest import attribution, next_orders, read_positions, run_backtest
from lib.reporting import plots
from lib.tables import COLUMNS

log = logging.getLogger("backtest")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "prices", "predictions", "signal", "positions", "out", "orders")
    params = load_params()
    cfg, horizon, ppy = params["backtest"], params["features"]["horizon"], params["evaluate"]["periods_per_year"]
    prices = read_table(args.prices, COLUMNS)
    predictions = read_table(args.predictions, ["date", "ticker", "prediction"])
    if not args.signal.exists():
        raise PipelineError(f"{args.signal}: not found (run the predict stage)")
    signal = pd.DataFrame(json.loads(args.signal.read_text())["signals"]).rename(
        columns={"predicted_return": "prediction"}
    )
    result = run_backtest(prices, predictions, cfg, horizon, ppy)
    holdings = read_positions(args.positions, result.market.tickers, cfg["allow_short"])
    orders = next_orders(result, signal, cfg, horizon, ppy, holdings)
    contrib = attribution(result)
    chart = plots.attribution_chart(contrib)
    write_csv(result.equity, args.out / "equity.csv")
    write_csv(result.weights, args.out / "weights.csv")
    write_csv(result.trades, args.out / "trades.csv")
    write_csv(contrib, args.out / "attribution.csv")
    write_bytes(chart, args.out / "attribution.png")
    write_csv(orders, args.orders)
    last = result.equity.iloc[-1]
    log.info(
        "final equity: strategy %.2f, benchmark %.2f, momentum %.2f; orders from %s",
        last["strategy"],
        last["benchmark"],
        last["momentum"],
        args.positions if holdings else "the backtest's last state",
    )


if __name__ == "__main__":
    run_stage("backtest", main)
