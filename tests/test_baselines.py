"""The model against its baselines in every run (evaluate.baseline_models): the params, the own-family skip,
the baseline models trained on the model's folds, predicted on its rows and backtested through its engine,
and a run without baselines leaving every other output byte for byte as it was."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.errors import PipelineError
from lib.io import read_table
from lib.ml.baselines import baseline_families, check_baseline_folders, family_params
from lib.params import validate_params
from lib.portfolio.backtest import TRADES, run_backtest, run_baseline_books
from lib.tables import BASELINE_PREDICTIONS, BOOK, COLUMNS, KEYS, baseline_book, weight_column
from tests.helpers import ROOT, default_params, run_stages, small_params, stage_commands, write_params

FOLDS = 2  # small_params
STAGES = list(stage_commands())
UP_TO_BACKTEST = STAGES[: STAGES.index("backtest") + 1]  # in dvc.yaml's order
TRAIN_ON = UP_TO_BACKTEST[UP_TO_BACKTEST.index("train") :]
UNCHANGED = [  # every output but the model files, which record the params (evaluate.baseline_models among them)
    "data/predictions.parquet",
    "reports/signal.json",
    "reports/model_card.md",
    "reports/train/curves.csv",
    "reports/train/metrics.json",
    "reports/backtest/equity.csv",
    "reports/backtest/weights.csv",
    "reports/backtest/trades.csv",
    "reports/backtest/attribution.csv",
    "reports/backtest/attribution.png",
    "reports/orders.csv",
]


# ------------------------------------------------------------------------------------------ params
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["ridge", "xgboost"], r"evaluate\.baseline_models\[1\] must be one of \[.*'gbm'\], got 'xgboost'"),
        ("ridge", r"evaluate\.baseline_models must be a list, got 'ridge'"),
        (["gbm", "gbm"], r"evaluate\.baseline_models has duplicate items: \['gbm', 'gbm'\]"),
        (None, r"evaluate\.baseline_models must not be empty \(null\)"),
    ],
)
def test_a_bad_baseline_list_is_one_line_naming_the_key_and_the_value(value, message):
    p = default_params()
    p["evaluate"]["baseline_models"] = value
    with pytest.raises(PipelineError, match=message) as err:
        validate_params(p)
    assert "\n" not in str(err.value)


def test_default_is_ridge_and_gbm_and_empty_turns_it_off():
    p = default_params()
    assert p["evaluate"]["baseline_models"] == ["ridge", "gbm"]
    p["evaluate"]["baseline_models"] = []
    assert validate_params(p)["evaluate"]["baseline_models"] == [] and baseline_families(p) == []


def test_a_transformer_baseline_is_checked_like_the_model():
    p = default_params()
    p["model"].update(hidden=30, heads=4)
    p["evaluate"]["baseline_models"] = ["transformer"]
    with pytest.raises(PipelineError, match=r"model\.hidden \(30\) .* transformer of evaluate\.baseline_models"):
        validate_params(p)


def test_the_models_own_family_is_skipped_with_one_note(caplog):
    p = default_params()
    p["model"]["arch"] = "gbm"
    with caplog.at_level(logging.INFO, logger="lib.ml.baselines"):
        assert baseline_families(p, note=True) == ["ridge"]
    notes = [r.getMessage() for r in caplog.records if r.name == "lib.ml.baselines"]
    assert len(notes) == 1 and "gbm is model.arch" in notes[0] and "not trained twice" in notes[0]
    caplog.clear()
    assert baseline_families(p) == ["ridge"] and not caplog.records  # predict: silent
    p["model"]["arch"] = "lstm"
    with caplog.at_level(logging.INFO, logger="lib.ml.baselines"):
        assert baseline_families(p, note=True) == ["ridge", "gbm"]
    assert not caplog.records


def test_a_family_trains_with_its_own_keys_and_everything_else_the_models():
    p = default_params()
    fp = family_params(p, "ridge")
    assert fp["model"] == {**p["model"], "arch": "ridge"} and p["model"]["arch"] == "lstm"
    assert {k: v for k, v in fp.items() if k != "model"} == {k: v for k, v in p.items() if k != "model"}


def test_stale_baseline_models_are_refused(tmp_path):
    p = default_params()
    (tmp_path / "baselines" / "ridge").mkdir(parents=True)
    check_baseline_folders(tmp_path, p)
    (tmp_path / "baselines" / "alstm").mkdir()
    with pytest.raises(PipelineError, match=r"baseline model\(s\) \['alstm'\] are not in evaluate\.baseline_models"):
        check_baseline_folders(tmp_path, p)


# ------------------------------------------------------------------------------------------ stages
def _run(folder: Path, params: dict, *stages: str) -> None:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        write_params(folder, params)
        run_stages(*stages)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The small config with the default baselines; the same with none; and with model.arch=ridge (its own
    family listed). The data stages run once."""
    root = tmp_path_factory.mktemp("baselines")
    default = root / "default"
    shutil.copytree(ROOT / "data" / "sample", default / "data" / "sample")
    _run(default, small_params(), *UP_TO_BACKTEST)
    out = {"default": default}
    for name, change in (("off", {"baseline_models": []}), ("own", {"arch": "ridge"})):
        folder = root / name
        shutil.copytree(default, folder)
        p = small_params()
        if "arch" in change:
            p["model"].update(change)
        else:
            p["evaluate"].update(change)
        _run(folder, p, *TRAIN_ON)
        out[name] = folder
    return out


slow = pytest.mark.slow  # the tests below run the stages


@slow
def test_baseline_models_are_trained_on_the_models_folds_and_features(runs):
    d = runs["default"]
    assert sorted(p.name for p in (d / "models" / "baselines").iterdir()) == ["gbm", "ridge"]
    for family in ("ridge", "gbm"):
        files = sorted(p.name for p in (d / "models" / "baselines" / family).iterdir())
        assert files == [f"fold_{i:02d}.pt" for i in range(FOLDS)]  # no final: the live signal is the model's
        for i in range(FOLDS):
            model = torch.load(d / "models" / f"fold_{i:02d}.pt", weights_only=True)
            base = torch.load(d / "models" / "baselines" / family / f"fold_{i:02d}.pt", weights_only=True)
            assert base["arch"] == base["params"]["model"]["arch"] == family and base["family"] == "sklearn"
            assert base["params"]["model"] == {**model["params"]["model"], "arch": family}
            assert base["params"]["train"] == model["params"]["train"]
            assert base["fold"] == model["fold"] and base["data_hash"] == model["data_hash"]
            assert base["features"] == model["features"] and base["n_fit"] == model["n_fit"]
            assert base["scaler_mean"] == model["scaler_mean"]  # the same fit rows scaled alike


@slow
def test_baseline_predictions_are_on_the_models_rows(runs):
    d = runs["default"]
    preds = read_table(d / "data/predictions.parquet", ["date"])
    base = read_table(d / "data/baseline_predictions.parquet", BASELINE_PREDICTIONS)
    assert list(base.columns) == BASELINE_PREDICTIONS
    assert list(dict.fromkeys(base[BOOK])) == [baseline_book("ridge"), baseline_book("gbm")]
    rows = ["date", "ticker", "fold", "label"]
    for book, g in base.groupby(BOOK, sort=False):
        pd.testing.assert_frame_equal(g[rows].reset_index(drop=True), preds[rows].reset_index(drop=True), obj=book)
        assert g["prediction"].notna().all() and not np.allclose(g["prediction"], preds["prediction"])
    ridge, gbm = (base.loc[base[BOOK] == b, "prediction"].to_numpy() for b in ("ridge", "gbm"))
    assert not np.allclose(ridge, gbm)


@slow
def test_baseline_books_run_through_the_strategys_rule_costs_and_engine(runs):
    d = runs["default"]
    p = small_params()
    prices = read_table(d / "data/clean/prices.parquet", COLUMNS)
    base = read_table(d / "data/baseline_predictions.parquet", BASELINE_PREDICTIONS)
    equity = read_table(d / "reports/backtest/equity.csv", ["date"])
    books = read_table(d / "reports/backtest/baseline_equity.csv", ["date"])
    trades = pd.read_csv(d / "reports/backtest/baseline_trades.csv")
    assert list(books.columns) == ["date", "ridge", "gbm", weight_column("ridge"), weight_column("gbm")]
    pd.testing.assert_series_equal(books["date"], equity["date"])
    assert list(trades.columns) == TRADES and set(trades["book"]) == {"ridge", "gbm"}
    for family in ("ridge", "gbm"):  # the book is the strategy that the family's predictions would have been
        alone = run_backtest(prices, base[base[BOOK] == family], p["backtest"], p["features"]["horizon"])
        np.testing.assert_array_equal(books[family].to_numpy(), alone.equity["strategy"].to_numpy())
        np.testing.assert_array_equal(books[weight_column(family)], alone.equity[weight_column("strategy")])
        assert (trades["book"] == family).sum() == (alone.trades["book"] == "strategy").sum() > 0
        assert books[family].iloc[0] == equity["strategy"].iloc[0]  # the same window, from cash
    assert not np.allclose(books["ridge"], equity["strategy"])


@slow
def test_without_baselines_every_other_output_is_byte_identical(runs):
    """baseline_models: [] writes empty baseline files; the default run's other outputs equal its bytes."""
    d, off = runs["default"], runs["off"]
    for rel in UNCHANGED:
        assert (d / rel).read_bytes() == (off / rel).read_bytes(), rel
    assert not (off / "models" / "baselines").exists()
    empty = read_table(off / "data/baseline_predictions.parquet", BASELINE_PREDICTIONS)
    assert list(empty.columns) == BASELINE_PREDICTIONS and empty.empty
    books = read_table(off / "reports/backtest/baseline_equity.csv", ["date"])
    assert list(books.columns) == ["date"]
    pd.testing.assert_series_equal(books["date"], read_table(off / "reports/backtest/equity.csv", ["date"])["date"])
    trades = pd.read_csv(off / "reports/backtest/baseline_trades.csv")
    assert list(trades.columns) == TRADES and trades.empty


@slow
def test_the_models_own_family_is_not_trained_twice(runs):
    own = runs["own"]
    assert [p.name for p in (own / "models" / "baselines").iterdir()] == ["gbm"]
    base = read_table(own / "data/baseline_predictions.parquet", BASELINE_PREDICTIONS)
    assert set(base[BOOK]) == {"gbm"}
    assert list(read_table(own / "reports/backtest/baseline_equity.csv", ["date"]).columns) == [
        "date",
        "gbm",
        weight_column("gbm"),
    ]
    gbm = base["prediction"].to_numpy()  # gbm's book is the same whichever model runs beside it
    default = read_table(runs["default"] / "data/baseline_predictions.parquet", BASELINE_PREDICTIONS)
    np.testing.assert_array_equal(gbm, default.loc[default[BOOK] == "gbm", "prediction"].to_numpy())


@slow
def test_a_book_off_the_models_rows_is_one_clear_line(runs):
    d = runs["default"]
    p = small_params()
    prices = read_table(d / "data/clean/prices.parquet", COLUMNS)
    preds = read_table(d / "data/predictions.parquet", ["date"])
    ridge = read_table(d / "data/baseline_predictions.parquet", BASELINE_PREDICTIONS).query("book == 'ridge'")
    with pytest.raises(PipelineError, match=r"book ridge has \d+ predictions, not on the model's \d+ \(date, ticker\)"):
        run_baseline_books(prices, preds, {"ridge": ridge.iloc[1:]}, p["backtest"], p["features"]["horizon"])
    moved = ridge.assign(ticker=ridge["ticker"].where(ridge["ticker"] != "SPY", "QQQ"))
    assert not moved[KEYS].equals(ridge[KEYS])
    with pytest.raises(PipelineError, match="book ridge"):
        run_baseline_books(prices, preds, {"ridge": moved}, p["backtest"], p["features"]["horizon"])
