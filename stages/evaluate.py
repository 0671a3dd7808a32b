"""evaluate: metrics of strategy, benchmark and baseline with their significance (intervals, a
permutation null, SPA, PSR/DSR), the verdict's few numbers (`--verdict`, default verdict.json beside
`--metrics`), plots and a self-contained HTML tear sheet."""

import argparse
import logging
from pathlib import Path

import pandas as pd

from lib.cli import path_args, run_stage
from lib.errors import PipelineError
from lib.evaluation import trials
from lib.evaluation.books import Books, book_sections, books_of
from lib.evaluation.comparison import comparison_section
from lib.evaluation.estimate import Section
from lib.evaluation.forecast import prediction_quality
from lib.evaluation.performance import drawdown, monthly_returns, rolling_sharpe
from lib.evaluation.power import power_section
from lib.evaluation.study import member_ics, significance
from lib.evaluation.verdict import summary_table, verdict, verdict_metrics
from lib.io import read_table, write_bytes, write_csv, write_json, write_text
from lib.live.weekly import live_report
from lib.params import load_params
from lib.reporting import plots, tearsheet
from lib.tables import (
    BASELINE_PREDICTIONS,
    BOOK,
    BOOK_LABELS,
    BOOKS,
    COLUMNS,
    IN_UNIVERSE,
    PREDICTIONS,
    STRATEGY,
)

log = logging.getLogger("evaluate")


def members_only(preds: pd.DataFrame) -> pd.DataFrame:
    """With a point-in-time universe (IN_UNIVERSE, data.membership) the rows of members only: the IC, the
    spread and every forecast score count what was tradable, and the backtest's reruns read the same mask
    (a ticker without a row on a date is not a member there). Without the column: every row."""
    if IN_UNIVERSE not in preds.columns:
        return preds
    return preds[preds[IN_UNIVERSE].to_numpy() > 0].reset_index(drop=True)


def _books(folder: Path) -> Books:
    """Every book of the backtest stage's folder: equity.csv's, the baseline families', the long-short one."""
    tables = ("equity.csv", "baseline_equity.csv", "long_short.csv")
    frames = [read_table(folder / name, ["date"]) for name in tables]
    trade_files = ("trades.csv", "baseline_trades.csv", "long_short_trades.csv")
    trades = [read_table(folder / name, ["date", "book", "notional", "cost"]) for name in trade_files]
    try:
        return books_of(frames, trades)
    except ValueError as e:
        raise PipelineError(f"{folder}: {e}") from None


def _args(argv: list[str]) -> argparse.Namespace:
    """The required paths, and `--verdict`, which defaults to verdict.json beside `--metrics`."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--verdict", type=Path)
    known, rest = ap.parse_known_args(argv)
    args = path_args(
        rest,
        __doc__,
        "backtest",
        "predictions",
        "baselines",
        "prices",
        "features",
        "ledger",
        "metrics",
        "plots",
        "report",
    )
    args.verdict = known.verdict or args.metrics.with_name("verdict.json")
    return args


def main(argv: list[str]) -> None:
    args = _args(argv)
    params = load_params()
    cfg, horizon = params["evaluate"], params["features"]["horizon"]
    ppy = cfg["periods_per_year"]
    books = _books(args.backtest)
    equity = books.equity
    preds = members_only(read_table(args.predictions, PREDICTIONS))
    baseline_preds = read_table(args.baselines, BASELINE_PREDICTIONS)
    baseline_preds = {str(b): members_only(g) for b, g in baseline_preds.groupby(BOOK, sort=False)}
    prices = read_table(args.prices, COLUMNS)
    features = read_table(args.features, ["date", "ticker", "label"])

    # The verdict first (what `dvc exp show` and `dvc metrics diff` list first), then the detail.
    m = Section()
    for name, section in book_sections(books, ppy, cfg["risk_free"]).items():
        m.add(name, section)
    m.add("predictions", prediction_quality(preds, horizon))
    if any(c.startswith("member_") for c in preds.columns):
        m.add("members", member_ics(preds, horizon))
    # the backtest's reruns decide on the exchange's sessions, as the backtest stage did (data.calendar)
    bt = {**params["backtest"], "calendar": params["data"]["calendar"]}
    study = significance(equity, preds, prices, {**params, "backtest": bt})
    for name, section in study.sections.items():
        m.add(name, section)
    quality, returns = m["predictions"], books.returns()
    m.add(
        "power",
        power_section(preds, study.series.ic_series, study.series.spread, quality, returns, horizon, ppy, cfg["alpha"]),
    )
    comparison = comparison_section(returns, preds, baseline_preds, cfg, ppy)
    m.add("comparison", comparison)
    live, drift, warnings = live_report(args.ledger, prices, features, equity, preds, params)
    m.add("live", live)
    for line in warnings:
        log.warning(line)
    period = m.section("period")
    period.add("start", str(equity["date"].iloc[0].date()))
    period.add("end", str(equity["date"].iloc[-1].date()))
    period.put("sessions", len(equity))
    out = m.values | {"null_reasons": m.reasons}
    series = study.series

    # Render everything before writing anything: evaluate leaves all of its outputs or none.
    dd = pd.DataFrame({"date": equity["date"], **{b: drawdown(equity[b]) for b in BOOKS}})
    labelled = preds[preds["label"].notna()]
    roll = rolling_sharpe(equity, BOOKS, cfg["rolling_window"], ppy)
    perm = series.permutation
    pngs = {
        "equity.png": plots.lines(equity, "Equity after costs (out of sample)", "equity"),
        "drawdown.png": plots.lines(dd, "Drawdown", "drawdown from peak"),
        "pred_vs_real.png": plots.scatter(labelled),
        "equity_drawdown.png": plots.equity_drawdown(equity, dd, BOOK_LABELS),
        "rolling_sharpe.png": plots.lines(
            roll, f"Rolling Sharpe ({cfg['rolling_window']} sessions)", "annualised Sharpe"
        ),
        "monthly_returns.png": plots.heatmap(monthly_returns(equity, STRATEGY), "Strategy: monthly returns"),
        "ic.png": plots.ic_panels(series.rolling_ic, series.ic_series, series.spread, cfg["rolling_window"], horizon),
        "cost_sensitivity.png": plots.cost_curve(
            series.cost, out["cost_sensitivity"]["break_even_bps"], out["cost_sensitivity"]["current_bps"]
        ),
        "permutation.png": plots.permutation_hist(perm["null"], perm["observed"], perm["pvalue"]),
    }
    table = summary_table(out, books.labels, cfg["alpha"])
    verdict_file = verdict_metrics(out, params["model"]["arch"])
    html = tearsheet.render(out, pngs, series, verdict(out, cfg["alpha"]), params, drift)
    ledger_entry = trials.ledger_entry(params, series.moments, out)
    write_json(verdict_file, args.verdict)
    write_json(out, args.metrics)
    write_csv(dd, args.plots / "drawdown.csv")
    write_csv(labelled[["date", "ticker", "prediction", "label"]], args.plots / "pred_vs_real.csv")
    write_csv(roll, args.plots / "rolling_sharpe.csv")
    write_csv(series.cost, args.plots / "cost_sensitivity.csv")
    write_csv(series.rolling_ic.dropna(), args.plots / "rolling_ic.csv")
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
