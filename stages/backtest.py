"""backtest: the strategy and its baselines after costs, the next rebalance's orders, P&L attribution.

The baseline models' predictions (`--baselines`, one book per family of evaluate.baseline_models) run through
the strategy's rule, costs and engine on its calendar: `baseline_equity.csv` (date, <family>...,
<family>_weight..., row for row on equity.csv's dates) and `baseline_trades.csv`, beside the strategy's files,
which stay as they were. Under the rank rule, the model's top-minus-bottom book (dollar-neutral, same costs and
engine) goes to `long_short.csv` (date, long_short, long_short_weight) and `long_short_trades.csv`; under the
threshold rule it has none (`long_short.csv` holds the dates only)."""

import json
import logging

import pandas as pd

from lib.cli import path_args, run_stage
from lib.errors import PipelineError
from lib.io import read_table, write_bytes, write_csv
from lib.params import load_params
from lib.portfolio.backtest import attribution, next_orders, read_positions, run_backtest, run_baseline_books
from lib.portfolio.long_short import long_short_book
from lib.reporting import plots
from lib.tables import BASELINE_PREDICTIONS, BOOK, COLUMNS

log = logging.getLogger("backtest")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "prices", "predictions", "baselines", "signal", "positions", "out", "orders")
    params = load_params()
    cfg = {**params["backtest"], "calendar": params["data"]["calendar"]}  # decision days on the exchange's sessions
    horizon, ppy = params["features"]["horizon"], params["evaluate"]["periods_per_year"]
    prices = read_table(args.prices, COLUMNS)
    predictions = read_table(args.predictions, ["date", "ticker", "prediction"])
    baselines = read_table(args.baselines, BASELINE_PREDICTIONS)
    if not args.signal.exists():
        raise PipelineError(f"{args.signal}: not found (run the predict stage)")
    signal = pd.DataFrame(json.loads(args.signal.read_text())["signals"]).rename(
        columns={"predicted_return": "prediction"}
    )
    result = run_backtest(prices, predictions, cfg, horizon, ppy)
    books = {str(b): g for b, g in baselines.groupby(BOOK, sort=False)}
    base_equity, base_trades = run_baseline_books(prices, predictions, books, cfg, horizon, ppy)
    long_short, why = long_short_book(prices, predictions, cfg, horizon, ppy)
    if long_short is None:
        log.info("no long-short book: %s", why)
    ls_equity = long_short.equity if long_short else result.equity[["date"]]
    ls_trades = long_short.trades if long_short else result.trades.iloc[:0]
    holdings = read_positions(args.positions, result.market.tickers, cfg["allow_short"])
    orders = next_orders(result, signal, cfg, horizon, ppy, holdings)
    contrib = attribution(result)
    chart = plots.attribution_chart(contrib)
    write_csv(result.equity, args.out / "equity.csv")
    write_csv(result.weights, args.out / "weights.csv")
    write_csv(result.trades, args.out / "trades.csv")
    write_csv(base_equity, args.out / "baseline_equity.csv")
    write_csv(base_trades, args.out / "baseline_trades.csv")
    write_csv(ls_equity, args.out / "long_short.csv")
    write_csv(ls_trades, args.out / "long_short_trades.csv")
    write_csv(contrib, args.out / "attribution.csv")
    write_bytes(chart, args.out / "attribution.png")
    write_csv(orders, args.orders)
    last = result.equity.iloc[-1]
    log.info(
        "final equity: strategy %.2f, benchmark %.2f, momentum %.2f%s; orders from %s",
        last["strategy"],
        last["benchmark"],
        last["momentum"],
        "".join(f", {b} {base_equity[b].iloc[-1]:.2f}" for b in books),
        args.positions if holdings else "the backtest's last state",
    )


if __name__ == "__main__":
    run_stage("backtest", main)
