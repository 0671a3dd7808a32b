"""track: append this week's decision to the forward track record, check drift, mark the record to market.

The weekly command runs it after `dvc repro` (stages.refresh calls it; alone: `python -m stages.track`).
It reads what the pipeline wrote (reports/signal.json, reports/orders.csv, models/final.pt, the
features, clean prices, out-of-sample predictions, the backtest's equity and validation's findings),
checks the ledger's hash chain and, when the retraining policy kept the model, that models/final.pt
is the model of the last entry; then appends one entry to track/ledger.csv (same as-of date again:
nothing written) and writes track/live.json: the live record marked to market beside the backtest
(lib.live.mark.live_section) and this week's drift (lib.live.drift.drift_report). Warnings (drift,
data quality, an execution session missing from the data) are one log line each. Not a DVC stage:
the ledger is committed to git and only grows."""

import json
import logging
from argparse import Namespace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lib.cli import run_stage
from lib.data.features import feature_columns
from lib.errors import PipelineError
from lib.evaluation.forecast import rank_ic
from lib.evaluation.trials import params_hash
from lib.io import file_sha256, read_table, write_json
from lib.live.drift import drift_report
from lib.live.ledger import ORDERS_COPIED, Entry, append_entry, entries, read_ledger
from lib.live.mark import live_predictions, live_section, mark_to_market
from lib.params import load_params
from lib.tables import COLUMNS, LABEL

log = logging.getLogger("track")

PATHS = {
    "signal": "reports/signal.json",
    "orders": "reports/orders.csv",
    "model": "models/final.pt",
    "features": "data/features.parquet",
    "prices": "data/clean/prices.parquet",
    "predictions": "data/predictions.parquet",
    "equity": "reports/backtest/equity.csv",
    "validation": "reports/validation.json",
    "ledger": "track/ledger.csv",
    "out": "track/live.json",
}


def parse(argv: list[str]) -> Namespace:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in PATHS.items():
        ap.add_argument(f"--{name}", type=Path, default=Path(default))
    return ap.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    params = load_params()
    ledger = read_ledger(args.ledger)  # a broken chain stops here, before anything is read or written
    signal = _read_json(args.signal)
    model = model_identity(args.model, params["train"])
    check_model(ledger, model, params["train"], args)
    features = read_table(args.features, ["date", "ticker", LABEL])
    as_of = pd.Timestamp(signal["as_of"])
    week_start = as_of - pd.Timedelta(days=as_of.day_of_week)  # the Monday of the as-of week
    train_end = pd.Timestamp(params["train"]["cutoff"]) if params["train"]["cutoff"] else as_of
    preds = read_table(args.predictions, ["date", "ticker", "prediction", LABEL])
    earlier = live_predictions(ledger[ledger["as_of"] < signal["as_of"]], features)  # the weeks before this one
    section_ic = (*live_section_ic(earlier, preds), int(earlier[LABEL].notna().sum()))
    findings = _read_json(args.validation).get("findings", []) if args.validation.exists() else []
    drift, warnings = drift_report(
        features, feature_columns(features), train_end, week_start, as_of, *section_ic, findings, params["live"]
    )
    entry = Entry(
        signal["as_of"], signal["executes"], bool(signal["scheduled_rebalance"]), model, drift["alarm"],
        decision_rows(signal, args.orders),
    )  # fmt: skip
    prices, equity = read_table(args.prices, COLUMNS), read_table(args.equity, ["date", "strategy"])
    written = append_entry(args.ledger, entry)  # every input is read: the first write
    ledger = read_ledger(args.ledger)
    cfg, horizon = params["backtest"], params["features"]["horizon"]
    record = mark_to_market(ledger, prices, cfg, horizon, params["evaluate"]["periods_per_year"])
    live = live_section(record, live_predictions(ledger, features), equity, preds, params["evaluate"])
    write_json({"live": live.values | {"null_reasons": live.reasons}, "drift": drift}, args.out)
    for line in [*warnings, *record.mismatched]:
        log.warning(line)
    n = int(ledger.loc[ledger["as_of"] == entry.as_of, "entry"].iloc[0])
    verb = "appended" if written else "already recorded: nothing written for"
    log.info("%s entry %d (as of %s, executes %s); live record in %s", verb, n, entry.as_of, entry.executes, args.out)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise PipelineError(f"{path}: not found (run dvc repro first)")
    return json.loads(path.read_text(encoding="utf-8"))


def model_identity(path: Path, train: dict[str, Any]) -> dict[str, Any]:
    """model_sha256 of the file, params_hash of the params it records, its data_hash, the cutoff and policy."""
    if not path.exists():
        raise PipelineError(f"{path}: model not found (run dvc repro)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return {
        "model_sha256": file_sha256(path),
        "params_hash": params_hash(ckpt["params"]),
        "data_hash": ckpt["data_hash"],
        "cutoff": train["cutoff"],
        "retrain": train["retrain"],
    }


def check_model(ledger: pd.DataFrame, model: dict[str, Any], train: dict[str, Any], args: Namespace) -> None:
    """Under every_n_weeks / on_drift, while the cutoff stands the model must be the last entry's: a different
    file trained on the same data is one line; on other data (a vendor revised a bar inside the training
    window, so DVC retrained) a warning, and the ledger records the new model."""
    if ledger.empty or train["retrain"] == "always":
        return
    last = entries(ledger).iloc[-1]
    if last["cutoff"] != model["cutoff"] or last["model_sha256"] == model["model_sha256"]:
        return
    if last["data_hash"] != model["data_hash"]:
        log.warning(
            "%s was retrained on revised training data (train.cutoff %s stands): the ledger records the new model",
            args.model,
            model["cutoff"],
        )
        return
    raise PipelineError(
        f"{args.model} (sha256 {model['model_sha256'][:12]}...) is not the model of ledger entry {last['entry']} "
        f"({last['model_sha256'][:12]}...) though train.cutoff {model['cutoff']} stands and train.retrain is "
        f"{train['retrain']}: restore that model (dvc checkout models) or let the refresh move the cutoff"
    )


def live_section_ic(live: pd.DataFrame, preds: pd.DataFrame) -> tuple[float | None, float | None]:
    labelled, oos = live.dropna(subset=[LABEL]), preds.dropna(subset=[LABEL])
    return rank_ic(labelled["prediction"], labelled[LABEL]), rank_ic(oos["prediction"], oos[LABEL])


def decision_rows(signal: dict[str, Any], orders_path: Path) -> pd.DataFrame:
    """Each ticker's prediction (signal.json) and its row of orders.csv."""
    orders = read_table(orders_path, ["ticker", *ORDERS_COPIED])
    pred = pd.DataFrame(signal["signals"]).rename(columns={"predicted_return": "prediction"})
    stale = pred.loc[pred["as_of"] != signal["as_of"], "ticker"].tolist()
    if stale:
        log.warning(
            "signal: ticker(s) %s have no bar on %s; their prediction is from an earlier day", stale, signal["as_of"]
        )
    rows = orders.merge(pred[["ticker", "prediction"]], on="ticker", how="left", validate="one_to_one")
    if len(rows) != len(orders):
        raise PipelineError(f"{orders_path}: tickers differ from reports/signal.json's")
    return rows[["ticker", "prediction", *ORDERS_COPIED]]


if __name__ == "__main__":
    run_stage("track", main)
