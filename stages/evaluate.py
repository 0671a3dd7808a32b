"""evaluate: metrics of strategy, benchmark and baseline with their significance, and plots."""
import logging

import pandas as pd

from lib import plots
from lib.cli import path_args, run_stage
from lib.io import read_table, write_bytes, write_csv, write_json
from lib.metrics import active, drawdown, performance, prediction_quality
from lib.params import load_params
from lib.summary import summary_table
from lib.tables import BASELINES, BOOK_LABELS, BOOKS, PREDICTIONS, STRATEGY, weight_column

log = logging.getLogger("evaluate")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "backtest", "predictions", "metrics", "plots")
    params = load_params()
    cfg, horizon = params["evaluate"], params["features"]["horizon"]
    equity = read_table(args.backtest / "equity.csv", ["date", *BOOKS, *map(weight_column, BOOKS)])
    trades = read_table(args.backtest / "trades.csv", ["date", "book", "notional", "cost"])
    preds = read_table(args.predictions, PREDICTIONS)

    # The verdict first (what `dvc exp show` and `dvc metrics diff` list first), then the detail.
    sections = {f"vs_{b}": active(equity[STRATEGY].to_numpy(), equity[b].to_numpy(), cfg["periods_per_year"])
                for b in BASELINES}
    sections |= {b: performance(equity[b].to_numpy(), equity[weight_column(b)].to_numpy(),
                                trades[trades["book"] == b], cfg["periods_per_year"], cfg["risk_free"]) for b in BOOKS}
    sections["predictions"] = prediction_quality(preds, horizon)
    out = {name: s.values for name, s in sections.items()}
    out["period"] = {"start": str(equity["date"].iloc[0].date()), "end": str(equity["date"].iloc[-1].date()),
                     "sessions": len(equity)}
    out["null_reasons"] = {f"{name}.{k}": v for name, s in sections.items() for k, v in s.reasons.items()}

    # Render everything before writing anything: evaluate leaves all of its outputs or none.
    dd = pd.DataFrame({"date": equity["date"], **{b: drawdown(equity[b]) for b in BOOKS}})
    labelled = preds[preds["label"].notna()]
    pngs = {"equity.png": plots.lines(equity, "Equity after costs (out of sample)", "equity"),
            "drawdown.png": plots.lines(dd, "Drawdown", "drawdown from peak"),
            "pred_vs_real.png": plots.scatter(labelled)}
    table = summary_table(out, BOOK_LABELS, cfg["alpha"])
    write_json(out, args.metrics)
    write_csv(dd, args.plots / "drawdown.csv")
    write_csv(labelled[["date", "ticker", "prediction", "label"]], args.plots / "pred_vs_real.csv")
    for name, data in pngs.items():
        write_bytes(data, args.plots / name)
    print(table)


if __name__ == "__main__":
    run_stage("evaluate", main)
