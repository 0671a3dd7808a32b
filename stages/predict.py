"""predict: out-of-sample predictions per fold, and the next rebalance's signal from the final model."""
import logging

import numpy as np
import pandas as pd

from lib.cli import path_args, run_stage
from lib.dataset import Panel
from lib.errors import PipelineError
from lib.features import LABEL
from lib.io import read_table, write_csv, write_json
from lib.params import load_params
from lib.strategy import target_weights
from lib.training import load_checkpoint, predict_rows

log = logging.getLogger("predict")


def main(argv: list[str]) -> None:
    args = path_args(argv, __doc__, "features", "models", "out", "signal")
    rule = load_params()["backtest"]
    features = read_table(args.features, ["date", "ticker", LABEL])
    fold_files = sorted(args.models.glob("fold_*.pt"))
    if not fold_files:
        raise PipelineError(f"{args.models}: no fold_*.pt models (run the train stage)")
    models = [load_checkpoint(path) for path in [*fold_files, args.models / "final.pt"]]
    panel = Panel.from_frame(features, models[0][1]["seq_len"])  # one train run: one window length
    parts = []
    for i, (model, ckpt) in enumerate(models[:-1]):
        rows = panel.rows(ckpt["fold"]["test_start"], ckpt["fold"]["test_end"], labelled=False)
        parts.append(pd.DataFrame({"date": panel.dates[rows], "ticker": panel.tickers[rows], "fold": i,
                                   "prediction": predict_rows(model, ckpt, panel, rows), "label": panel.labels[rows]}))
    preds = pd.concat(parts, ignore_index=True).sort_values(["date", "ticker"], kind="stable")
    write_csv(preds, args.out)

    model, ckpt = models[-1]
    last = np.flatnonzero(np.r_[panel.tickers[1:] != panel.tickers[:-1], True] & panel.has_window)
    pred = predict_rows(model, ckpt, panel, last)
    weights = target_weights(pred, rule["threshold"], rule["allow_short"])
    signals = [{"ticker": str(t), "as_of": str(pd.Timestamp(d).date()), "predicted_return": float(p),
                "target_weight": float(w), "portfolio_weight": float(w) / len(last)}
               for t, d, p, w in zip(panel.tickers[last], panel.dates[last], pred, weights, strict=True)]
    as_of = max(s["as_of"] for s in signals)
    write_json({"as_of": as_of, "model": "final", "horizon_sessions": ckpt["params"]["features"]["horizon"],
                "signals": signals}, args.signal)
    log.info("%d out-of-sample predictions over %d folds; signal as of %s", len(preds), len(fold_files), as_of)


if __name__ == "__main__":
    run_stage("predict", main)
