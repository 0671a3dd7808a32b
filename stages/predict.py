"""predict: out-of-sample predictions per fold (ensemble mean, and member_i columns when
model.ensemble > 1), the next rebalance's signal from the final model, and its model card."""

import logging

import numpy as np
import pandas as pd

from lib.cli import path_args, run_stage
from lib.errors import PipelineError
from lib.io import file_sha256, read_table, write_json, write_table, write_text
from lib.ml.model_card import model_card
from lib.ml.panel import WindowPanel
from lib.ml.trainer import check_checkpoint, deterministic_runtime, load_checkpoint, predict_rows
from lib.params import load_params
from lib.portfolio.calendar import decision_days, execution_date
from lib.tables import LABEL

log = logging.getLogger("predict")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "features", "models", "out", "signal", "card")
    params = load_params()
    deterministic_runtime(params["train"]["threads"])  # train's kernels and thread count, whatever the machine
    rule = params["backtest"]
    features = read_table(args.features, ["date", "ticker", LABEL])
    names = [f"fold_{i:02d}" for i in range(params["walk_forward"]["folds"])]
    stale = sorted({p.stem for p in args.models.glob("fold_*.pt")} - set(names))
    if stale:
        raise PipelineError(
            f"{args.models}: model file(s) {stale} are not from walk_forward.folds="
            f"{len(names)}; retrain (dvc repro -f train)"
        )
    data_hash = file_sha256(args.features)
    models = []
    for name in [*names, "final"]:
        path = args.models / f"{name}.pt"
        model, ckpt = load_checkpoint(path)
        check_checkpoint(ckpt, path, params, data_hash)
        models.append((model, ckpt))
    panel = WindowPanel.from_frame(features, params["model"]["seq_len"])
    parts = []
    for i, (model, ckpt) in enumerate(models[:-1]):
        rows = panel.rows(ckpt["fold"]["test_start"], ckpt["fold"]["test_end"], labelled=False)
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
    write_table(preds, args.out)

    model, ckpt = models[-1]
    last = np.flatnonzero(np.r_[panel.tickers[1:] != panel.tickers[:-1], True] & panel.has_window)
    pred, _ = predict_rows(model, ckpt, panel, last)
    signals = [
        {"ticker": str(t), "as_of": str(pd.Timestamp(d).date()), "predicted_return": float(p)}
        for t, d, p in zip(panel.tickers[last], panel.dates[last], pred, strict=True)
    ]
    as_of = pd.Timestamp(panel.dates[last].max())
    write_json(
        {
            "as_of": str(as_of.date()),
            "fill": rule["fill"],
            "executes": str(execution_date(as_of, rule["fill"]).date()),
            "scheduled_rebalance": bool(decision_days(pd.DatetimeIndex([as_of]), rule["rebalance"])[-1]),
            "model": "final",
            "horizon_sessions": params["features"]["horizon"],
            "targets_and_orders": "reports/orders.csv (the backtest stage applies the backtest.* policy)",
            "signals": signals,
        },
        args.signal,
    )
    write_text(model_card(ckpt, [c for _, c in models[:-1]], preds), args.card)
    log.info("%d out-of-sample predictions over %d folds; signal as of %s", len(preds), len(names), as_of.date())


if __name__ == "__main__":
    run_stage("predict", main)
