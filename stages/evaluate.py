"""evaluate: metrics of strategy, benchmark and baseline with their significance (intervals, a
permutation null, SPA, PSR/DSR), the verdict's few numbers (`--verdict`, default verdict.json beside
`--metrics`), plots and a self-contained HTML tear sheet."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from lib.cli import path_args, run_stage
from lib.evaluation import trials
from lib.evaluation.forecast import prediction_quality
from lib.evaluation.performance import Stats, active, drawdown, monthly_returns, performance, rolling_sharpe
from lib.evaluation.study import member_ics, nested_reasons, significance, strip_reasons, values_of
from lib.evaluation.verdict import summary_table, verdict, verdict_metrics
from lib.io import read_table, write_bytes, write_csv, write_json, write_text
from lib.params import load_params
from lib.reporting import plots, tearsheet
from lib.tables import BASELINES, BOOK_LABELS, BOOKS, COLUMNS, PREDICTIONS, STRATEGY, weight_column

log = logging.getLogger("evaluate")


def _args(argv: list[str]) -> argparse.Namespace:
    """The required paths, and `--verdict`, which defaults to verdict.json beside `--metrics`."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--verdict", type=Path)
    known, rest = ap.parse_known_args(argv)
    args = path_args(rest, __doc__, "backtest", "predictions", "prices", "metrics", "plots", "report")
    args.verdict = known.verdict or args.metrics.with_name("verdict.json")
    return args


def main(argv: list[str]) -> None:
    args = _args(argv)
    params = load_params()
    cfg, horizon = params["evaluate"], params["features"]["horizon"]
    ppy = cfg["periods_per_year"]
    equity = read_table(args.backtest / "equity.csv", ["date", *BOOKS, *map(weight_column, BOOKS)])
    trades = read_table(args.backtest / "trades.csv", ["date", "book", "notional", "cost"])
    preds = read_table(args.predictions, PREDICTIONS)
    prices = read_table(args.prices, COLUMNS)

    # The verdict first (what `dvc exp show` and `dvc metrics diff` list first), then the detail.
    sections: dict = {f"vs_{b}": active(equity[STRATEGY].to_numpy(), equity[b].to_numpy(), ppy) for b in BASELINES}
    sections |= {
        b: performance(
            equity[b].to_numpy(),
            equity[weight_column(b)].to_numpy(),
            trades[trades["book"] == b],
            ppy,
            cfg["risk_free"],
        )
        for b in BOOKS
    }
    sections["predictions"] = prediction_quality(preds, horizon)
    if any(c.startswith("member_") for c in preds.columns):
        sections["members"] = member_ics(preds, horizon)
    extra, series = significance(equity, preds, prices, params)
    sections |= extra
    out = {name: strip_reasons(values_of(s)) for name, s in sections.items()}
    out["period"] = {
        "start": str(equity["date"].iloc[0].date()),
        "end": str(equity["date"].iloc[-1].date()),
        "sessions": len(equity),
    }
    out["null_reasons"] = {
        f"{name}.{k}": v for name, s in sections.items() if isinstance(s, Stats) for k, v in s.reasons.items()
    }
    for name in ("intervals", "folds"):
        out["null_reasons"] |= nested_reasons(name, sections[name])

    # Render everything before writing anything: evaluate leaves all of its outputs or none.
    dd = pd.DataFrame({"date": equity["date"], **{b: drawdown(equity[b]) for b in BOOKS}})
    labelled = preds[preds["label"].notna()]
    roll = rolling_sharpe(equity, BOOKS, cfg["rolling_window"], ppy)
    perm = series["permutation"]
    pngs = {
        "equity.png": plots.lines(equity, "Equity after costs (out of sample)", "equity"),
        "drawdown.png": plots.lines(dd, "Drawdown", "drawdown from peak"),
        "pred_vs_real.png": plots.scatter(labelled),
        "equity_drawdown.png": plots.equity_drawdown(equity, dd, BOOK_LABELS),
        "rolling_sharpe.png": plots.lines(
            roll, f"Rolling Sharpe ({cfg['rolling_window']} sessions)", "annualised Sharpe"
        ),
        "monthly_returns.png": plots.heatmap(monthly_returns(equity, STRATEGY), "Strategy: monthly returns"),
        "ic.png": plots.ic_panels(
            series["rolling_ic"], series["ic_series"], series["spread"], cfg["rolling_window"], horizon
        ),
        "cost_sensitivity.png": plots.cost_curve(
            series["cost"], out["cost_sensitivity"]["break_even_bps"], out["cost_sensitivity"]["current_bps"]
        ),
        "permutation.png": plots.permutation_hist(perm["null"], perm["observed"], perm["pvalue"]),
    }
    table = summary_table(out, BOOK_LABELS, cfg["alpha"])
    verdict_file = verdict_metrics(out, params["model"]["arch"])
    html = tearsheet.render(out, pngs, series, verdict(out, cfg["alpha"]), params)
    ledger_entry = trials.ledger_entry(params, series["moments"], out)
    write_json(verdict_file, args.verdict)
    write_json(out, args.metrics)
    write_csv(dd, args.plots / "drawdown.csv")
    write_csv(labelled[["date", "ticker", "prediction", "label"]], args.plots / "pred_vs_real.csv")
    write_csv(roll, args.plots / "rolling_sharpe.csv")
    write_csv(series["cost"], args.plots / "cost_sensitivity.csv")
    write_csv(series["rolling_ic"].dropna(), args.plots / "rolling_ic.csv")
    write_csv(
        pd.DataFrame({"shuffle": range(len(perm["null"])), "sharpe": perm["null"]}), args.plots / "permutation.csv"
    )
    for name, data in pngs.items():
        write_bytes(data, args.plots / name)
    write_text(html, args.report)
    trials.append_ledger(ledger_entry)  # outside the pipeline's outputs: every finished run is a trial
    print(table)


if __name__ == "__main__":
    run_stage("evaluate", main)
