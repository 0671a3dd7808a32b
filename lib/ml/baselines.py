"""The baseline models of a run (`evaluate.baseline_models`): other model families trained on the model's own
walk-forward folds and features, predicted on the same test rows, so that every run can compare the model
with cheap baselines.

A family's params are the run's with `model.arch` set to that family: its own hyperparameters are the
model.* keys of that family (`ridge_alpha`, `gbm_*`), everything else (folds, features, `seq_len` anchors,
`train.*`, `model.ensemble`) is the model's. The model's own family would be the model again, so it is
skipped. Only the walk-forward folds are trained (the live signal is the model's): their files go to
`models/baselines/<family>/fold_NN.pt`, self-describing like the model's. They do not resume after a
crash (ridge and gbm take seconds)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.errors import PipelineError
from lib.ml.folds import Fold
from lib.ml.panel import WindowPanel
from lib.ml.trainer import RunCache, TrainJob, check_checkpoint, load_checkpoint, predict_rows
from lib.tables import BASELINE_PREDICTIONS, BOOK, LABEL, baseline_book

log = logging.getLogger(__name__)

BASELINES_DIR = "baselines"  # under the models folder


def baseline_families(params: dict[str, Any], *, note: bool = False) -> list[str]:
    """evaluate.baseline_models less model.arch (with a one-line note when `note` and it was listed)."""
    families, arch = params["evaluate"]["baseline_models"], params["model"]["arch"]
    if note and arch in families:
        log.info(
            "evaluate.baseline_models: %s is model.arch with the same params, so it is the model itself: "
            "not trained twice (its book is the strategy)",
            arch,
        )
    return [f for f in families if f != arch]


def family_params(params: dict[str, Any], family: str) -> dict[str, Any]:
    """The run's params with model.arch = `family`: what that baseline is trained with and recorded under."""
    return {**params, "model": {**params["model"], "arch": family}}


def baseline_dir(models: Path, family: str) -> Path:
    return Path(models) / BASELINES_DIR / family


def baseline_jobs(
    panel: WindowPanel, folds: list[Fold], params: dict[str, Any], data_hash: str, devices: list[str]
) -> list[tuple[str, TrainJob]]:
    """(family, job) for every baseline family and every fold with a test window, in that order."""
    tested = [f for f in folds if f.test_start]
    return [
        (
            family,
            TrainJob(
                panel,
                fold,
                family_params(params, family),
                data_hash,
                devices[i % len(devices)],
                RunCache(None),
                f"[{family} {i + 1}/{len(tested)}]",
            ),
        )
        for family in baseline_families(params)
        for i, fold in enumerate(tested)
    ]


def check_baseline_folders(models: Path, params: dict[str, Any]) -> None:
    """models/baselines/ holds exactly the families of evaluate.baseline_models (less model.arch)."""
    root = Path(models) / BASELINES_DIR
    found = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    stale = sorted(found - set(baseline_families(params)))
    if stale:
        raise PipelineError(
            f"{root}: baseline model(s) {stale} are not in evaluate.baseline_models "
            f"{params['evaluate']['baseline_models']} (less model.arch); retrain (dvc repro -f train)"
        )


def predict_baselines(
    models: Path, params: dict[str, Any], data_hash: str, panel: WindowPanel, folds: list[tuple[dict, np.ndarray]]
) -> pd.DataFrame:
    """Out-of-sample predictions of every baseline family: fold k's model on the model's fold k test `rows`
    (`folds`: the model's fold record and its rows). A long table (BASELINE_PREDICTIONS), one `book` per
    family in the listed order, each sorted by date and ticker as data/predictions.parquet."""
    check_baseline_folders(models, params)
    books = []
    for family in baseline_families(params):
        fp, parts = family_params(params, family), []
        for i, (fold, rows) in enumerate(folds):
            path = baseline_dir(models, family) / f"fold_{i:02d}.pt"
            model, ckpt = load_checkpoint(path)
            check_checkpoint(ckpt, path, fp, data_hash)
            if ckpt["fold"] != fold:
                raise PipelineError(f"{path}: trained on other folds than the model's; retrain (dvc repro -f train)")
            mean, _ = predict_rows(model, ckpt, panel, rows)
            cols = {"date": panel.dates[rows], "ticker": panel.tickers[rows], "fold": i, BOOK: baseline_book(family)}
            parts.append(pd.DataFrame({**cols, "prediction": mean, LABEL: panel.labels[rows]}))
        books.append(pd.concat(parts, ignore_index=True).sort_values(["date", "ticker"], kind="stable"))
    return pd.concat(books, ignore_index=True)[BASELINE_PREDICTIONS] if books else _empty()


def _empty() -> pd.DataFrame:
    """No baseline: the table's typed columns without rows."""
    text = pd.Series([], dtype=pd.StringDtype())
    return pd.DataFrame(
        {
            "date": pd.Series([], dtype="datetime64[ns]"),
            "ticker": text,
            "fold": pd.Series([], dtype="int64"),
            BOOK: text.copy(),
            "prediction": pd.Series([], dtype="float64"),
            LABEL: pd.Series([], dtype="float64"),
        }
    )[BASELINE_PREDICTIONS]
