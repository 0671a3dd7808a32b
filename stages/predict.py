"""predict: out-of-sample predictions per fold (ensemble mean, and member_i columns when
model.ensemble > 1), the next rebalance's signal from the final model, and its model card.

The baseline models (evaluate.baseline_models, trained by train into models/baselines/<family>/) predict the
same fold rows into `--baselines`, a long table (date, ticker, fold, book, prediction, label): each book's rows
are a predictions table of their own, row for row the model's.

With a point-in-time universe (data.membership) both tables gain IN_UNIVERSE (1: the ticker is a member on the
row's date, else 0) and each signal a true/false IN_UNIVERSE on the as-of date: the backtest ranks, buys and
targets members only, and evaluate scores member rows only. Features and models are unchanged (membership
filters decisions, not features)."""

import logging

import numpy as np
import pandas as pd

from lib.cli import path_args, run_stage
from lib.data.membership import Membership, load_membership
from lib.errors import PipelineError
from lib.evaluation.forecast import rank_ic
from lib.io import file_sha256, read_table, write_json, write_table, write_text
from lib.ml.baselines import predict_baselines
from lib.ml.model_card import model_card
from lib.ml.panel import WindowPanel
from lib.ml.trainer import check_checkpoint, deterministic_runtime, load_checkpoint, predict_rows
from lib.params import load_params
from lib.portfolio.calendar import decision_days, execution_date
from lib.tables import IN_UNIVERSE, LABEL

log = logging.getLogger("predict")


def _mark(table: pd.DataFrame, universe: Membership | None) -> pd.DataFrame:
    """`table` with IN_UNIVERSE on each row's date (`Membership.mark`), or as it is without a universe."""
    return table if universe is None else universe.mark(table)


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "features", "trainset", "models", "out", "baselines", "signal", "card")
    params = load_params()
    deterministic_runtime(params["train"]["threads"])  # train's kernels and thread count, whatever the machine
    rule = params["backtest"]
    features = read_table(args.features, ["date", "ticker", LABEL])
    path = params["data"]["membership"]
    universe = None if path is None else load_membership(path, sorted(features["ticker"].unique()))
    names = [f"fold_{i:02d}" for i in range(params["walk_forward"]["folds"])]
    stale = sorted({p.stem for p in args.models.glob("fold_*.pt")} - set(names))
    if stale:
        raise PipelineError(
            f"{args.models}: model file(s) {stale} are not from walk_forward.folds="
            f"{len(names)}; retrain (dvc repro -f train)"
        )
    # what the models trained on: the features themselves, or their cut at train.cutoff (stages/featurize.py)
    data_hash = file_sha256(args.features if params["train"]["cutoff"] is None else args.trainset)
    models = []
    for name in [*names, "final"]:
        path = args.models / f"{name}.pt"
        model, ckpt = load_checkpoint(path)
        check_checkpoint(ckpt, path, params, data_hash)
        models.append((model, ckpt))
    panel = WindowPanel.from_frame(features, params["model"]["seq_len"])
    parts, fold_rows = [], []
    for i, (model, ckpt) in enumerate(models[:-1]):
        rows = panel.rows(ckpt["fold"]["test_start"], ckpt["fold"]["test_end"], labelled=False)
        fold_rows.append((ckpt["fold"], rows))
        mean, each = predict_rows(model, ckpt, panel, rows)
        members = {f"member_{m}": p for m, p in enumerate(each)} if len(each) > 1 else {}
        parts.append(
            pd.DataFrame(
                {
                    "date": panel.dates[rows],
                    "ticker": panel.tickers[rows],
                    "fold": i,
                    "prediction": mean,
                    "label": panel.labels[rows],
                    **members,
                }
            )
        )
    preds = pd.concat(parts, ignore_index=True).sort_values(["date", "ticker"], kind="stable")
    write_table(_mark(preds, universe), args.out)
    write_table(_mark(predict_baselines(args.models, params, data_hash, panel, fold_rows), universe), args.baselines)

    model, ckpt = models[-1]
    last = np.flatnonzero(np.r_[panel.tickers[1:] != panel.tickers[:-1], True] & panel.has_window)
    pred, _ = predict_rows(model, ckpt, panel, last)
    signals = [
        {"ticker": str(t), "as_of": str(pd.Timestamp(d).date()), "predicted_return": float(p)}
        for t, d, p in zip(panel.tickers[last], panel.dates[last], pred, strict=True)
    ]
    as_of = pd.Timestamp(panel.dates[last].max())
    if universe is not None:
        member = universe.is_member(np.full(len(last), as_of.to_datetime64()), panel.tickers[last])
        signals = [{**s, IN_UNIVERSE: bool(m)} for s, m in zip(signals, member, strict=True)]
    write_json(
        {
            "as_of": str(as_of.date()),
            "fill": rule["fill"],
            "executes": str(execution_date(as_of, rule["fill"], params["data"]["calendar"]).date()),
            "scheduled_rebalance": bool(
                decision_days(pd.DatetimeIndex([as_of]), rule["rebalance"], params["data"]["calendar"])[-1]
            ),
            "model": "final",
            "horizon_sessions": params["features"]["horizon"],
            "targets_and_orders": "reports/orders.csv (the backtest stage applies the backtest.* policy)",
            "signals": signals,
        },
        args.signal,
    )
    fold_ics = [rank_ic(g["prediction"], g["label"]) for _, g in preds.groupby("fold", sort=True)]
    write_text(model_card(ckpt, [c for _, c in models[:-1]], fold_ics), args.card)
    log.info("%d out-of-sample predictions over %d folds; signal as of %s", len(preds), len(names), as_of.date())


if __name__ == "__main__":
    run_stage("predict", main)
