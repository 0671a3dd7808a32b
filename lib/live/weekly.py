"""The weekly routine's glue around `dvc repro` (stages.refresh calls these): before it, the retraining
policy's training cutoff (`plan_cutoff`); after it, the ledger entry and the live record (`stages.track`);
and what evaluate reports of the live record and this week's drift (`live_report`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lib.data.features import feature_columns
from lib.evaluation.estimate import Section
from lib.live.drift import drift_report
from lib.live.ledger import entries, read_ledger
from lib.live.mark import live_predictions, live_section, mark_to_market
from lib.live.retrain import next_cutoff, set_cutoff
from lib.params import load_params

log = logging.getLogger("retrain")


def plan_cutoff(
    last_date: str, params_path: str | Path = "params.yaml", ledger: str | Path = "track/ledger.csv"
) -> str | None:
    """The weekly refresh's step between fetching bars (the latest is `last_date`) and `dvc repro`: the
    policy's cutoff (`next_cutoff`) written to params.yaml, one log line saying whether the model is kept.
    A broken ledger chain stops here, before params.yaml is touched."""
    train = load_params(params_path)["train"]
    ents = entries(read_ledger(ledger))
    new = next_cutoff(train["retrain"], train["every_n_weeks"], train["cutoff"], last_date, ents)
    set_cutoff(params_path, new)
    if train["retrain"] == "always":
        log.info("train.retrain always: training on every bar (train.cutoff null)")
    elif new == train["cutoff"]:
        made = int((ents["cutoff"].fillna("") == new).sum()) if len(ents) else 0
        log.info(
            "train.retrain %s: keeping the model (train.cutoff %s stands, %d ledger entries)",
            train["retrain"],
            new,
            made,
        )
    else:
        log.info(
            "train.retrain %s: train.cutoff moves %s -> %s: dvc repro retrains", train["retrain"], train["cutoff"], new
        )
    return new


def live_report(
    ledger_path: str | Path,
    prices: pd.DataFrame,
    features: pd.DataFrame,
    backtest_equity: pd.DataFrame,
    backtest_pred: pd.DataFrame,
    params: dict,
) -> tuple[Section, dict, list[str]]:
    """What evaluate shows of the live record: the ledger (`ledger_path`, its chain verified) marked to market
    by the backtest's engine and costs and judged beside the backtest (`mark.live_section`), and this week's
    drift of the features (the last date's week against the rows before it, up to train.cutoff) and of the
    live IC (`drift.drift_report`), with its warning lines. `features`: data/features.parquet."""
    ledger = read_ledger(ledger_path)
    bt = {**params["backtest"], "calendar": params["data"]["calendar"]}
    horizon, ppy = params["features"]["horizon"], params["evaluate"]["periods_per_year"]
    record = mark_to_market(ledger, prices, bt, horizon, ppy)
    live_pred = live_predictions(ledger, features)
    section = live_section(record, live_pred, backtest_equity, backtest_pred, params["evaluate"])
    as_of = pd.Timestamp(features["date"].max())
    week_start = as_of - pd.Timedelta(days=as_of.day_of_week)
    cutoff = params["train"]["cutoff"]
    train_end = pd.Timestamp(cutoff) if cutoff else as_of
    live_ic, backtest_ic = section["live_ic"].value, section["backtest_ic"].value
    n_live = int(live_pred["label"].notna().sum())
    drift, warnings = drift_report(
        features,
        feature_columns(features),
        train_end,
        week_start,
        as_of,
        live_ic,
        backtest_ic,
        n_live,
        [],
        params["live"],
    )
    return section, drift, [*warnings, *record.mismatched]
