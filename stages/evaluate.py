"""evaluate: metrics of strategy, benchmark and baseline with their significance, and plots."""
import logging

import pandas as pd

from lib import plots
from lib.cli import path_args, run_stage
from lib.io import read_table, write_csv, write_json
from lib.metrics import active, drawdown, non_overlapping, performance, prediction_quality
from lib.params import load_params

log = logging.getLogger("evaluate")
BOOKS = {"strategy": "weight", "benchmark": "benchmark_weight", "momentum": "momentum_weight"}


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "backtest", "predictions", "metrics", "plots")
    params = load_params()
    cfg, horizon = params["evaluate"], params["features"]["horizon"]
    equity = read_table(args.backtest / "equity.csv", ["date", *BOOKS, *BOOKS.values()])
    trades = read_table(args.backtest / "trades.csv", ["date", "book", "notional", "cost"])
    preds = read_table(args.predictions, ["date", "ticker", "prediction", "label"])

    out: dict = {"period": {"start": str(equity["date"].iloc[0].date()), "end": str(equity["date"].iloc[-1].date()),
                            "sessions": len(equity)}}
    reasons = {}
    sections = {b: performance(equity[b].to_numpy(), equity[w].to_numpy(), trades[trades["book"] == b],
                               cfg["periods_per_year"], cfg["risk_free"]) for b, w in BOOKS.items()}
    for other in ("benchmark", "momentum"):
        sections[f"vs_{other}"] = active(equity["strategy"].to_numpy(), equity[other].to_numpy(),
                                         cfg["periods_per_year"])
    sections["predictions"] = prediction_quality(preds, horizon)
    for name, s in sections.items():
        out[name] = s.values
        reasons.update({f"{name}.{k}": v for k, v in s.reasons.items()})
    out["null_reasons"] = reasons
    write_json(out, args.metrics)

    dd = pd.DataFrame({"date": equity["date"], **{b: drawdown(equity[b]) for b in BOOKS}})
    write_csv(dd, args.plots / "drawdown.csv")
    sampled = non_overlapping(preds, horizon)
    write_csv(sampled[["prediction", "label"]], args.plots / "pred_vs_real.csv")
    plots.lines(equity, "Equity after costs (out of sample)", "equity", args.plots / "equity.png")
    plots.lines(dd, "Drawdown", "drawdown", args.plots / "drawdown.png")
    plots.scatter(sampled, args.plots / "pred_vs_real.png")
    s, b = out["strategy"], out["benchmark"]
    log.info("strategy: total %.2f%% Sharpe %s (p=%s) | buy-and-hold: total %.2f%% Sharpe %s | IC %s",
             100 * s["total_return"], s["sharpe"], s["sharpe_pvalue"], 100 * b["total_return"], b["sharpe"],
             out["predictions"]["ic"])


if __name__ == "__main__":
    run_stage("evaluate", main)
