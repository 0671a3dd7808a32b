"""The forward track record (lib/live): the hash-chained ledger, marking to market, drift, the retraining policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.data.cutoff import cut_training_rows
from lib.errors import PipelineError
from lib.live.drift import drift_report, ks, psi
from lib.live.ledger import LEDGER, Entry, append_entry, entries, read_ledger
from lib.live.mark import live_predictions, live_section, mark_to_market
from lib.live.retrain import next_cutoff, set_cutoff
from lib.portfolio.backtest import run_backtest
from tests.helpers import ROOT, default_params, gbm_bars

TICKERS = ("AAA", "BBB", "CCC")
MODEL = {
    "model_sha256": "ab" * 32,
    "params_hash": "p" * 16,
    "data_hash": "cd" * 32,
    "cutoff": None,
    "retrain": "always",
}


def _entry(as_of: str, executes: str, preds: list[float], weights: list[float] | None = None, **model) -> Entry:
    n = len(preds)
    w = weights if weights is not None else [1.0 / n if p > 0 else 0.0 for p in preds]
    rows = pd.DataFrame(
        {
            "ticker": list(TICKERS[:n]),
            "prediction": preds,
            "price": 100.0,
            "shares_now": 0.0,
            "target_weight": w,
            "target_shares": [x * 1000 for x in w],
            "side": ["buy" if x > 0 else "none" for x in w],
            "shares": [x * 1000 for x in w],
            "notional": [x * 1e5 for x in w],
            "cost": [x * 100 for x in w],
            "note": "",
        }
    )
    return Entry(as_of, executes, True, {**MODEL, **model}, False, rows)


# ------------------------------------------------------------------------------------------- ledger
def test_entries_chain_and_read_back(tmp_path):
    path = tmp_path / "track" / "ledger.csv"
    assert append_entry(path, _entry("2024-01-05", "2024-01-08", [0.01, -0.02, 0.003]))
    assert append_entry(path, _entry("2024-01-12", "2024-01-16", [0.02, 0.01, -0.001], cutoff="2024-01-05"))
    led = read_ledger(path)
    assert list(led.columns) == LEDGER and len(led) == 6
    e = entries(led)
    assert e["entry"].tolist() == [1, 2] and e["executes"].tolist() == ["2024-01-08", "2024-01-16"]
    assert e["cutoff"].tolist() == [None, "2024-01-05"]
    assert (led.loc[led["entry"] == 2, "prev_hash"] == led.loc[led["entry"] == 1, "entry_hash"].iloc[0]).all()
    assert led["prediction"].tolist()[:3] == [0.01, -0.02, 0.003]  # floats round-trip exactly


def test_same_as_of_is_idempotent_and_a_different_one_is_refused(tmp_path):
    path = tmp_path / "ledger.csv"
    append_entry(path, _entry("2024-01-05", "2024-01-08", [0.01, -0.02, 0.003]))
    before = path.read_bytes()
    assert not append_entry(path, _entry("2024-01-05", "2024-01-08", [0.01, -0.02, 0.003]))
    with pytest.raises(PipelineError, match=r"entry 1 already records the decision as of 2024-01-05"):
        append_entry(path, _entry("2024-01-05", "2024-01-08", [0.05, -0.02, 0.003]))
    with pytest.raises(PipelineError, match="is before the last entry's"):
        append_entry(path, _entry("2024-01-01", "2024-01-02", [0.05, -0.02, 0.003]))
    assert path.read_bytes() == before


@pytest.mark.parametrize("edit", ["prediction", "hash", "delete_row"])
def test_an_earlier_entry_edited_by_hand_stops_the_next_run_with_one_line(tmp_path, edit):
    path = tmp_path / "ledger.csv"
    append_entry(path, _entry("2024-01-05", "2024-01-08", [0.01, -0.02, 0.003]))
    append_entry(path, _entry("2024-01-12", "2024-01-16", [0.02, 0.01, -0.001]))
    lines = path.read_text().splitlines()
    if edit == "prediction":
        lines[1] = lines[1].replace(",0.01,", ",0.02,", 1)
    elif edit == "hash":
        lines[4] = lines[4][:-1] + ("0" if lines[4][-1] != "0" else "1")
    else:
        del lines[2]
    path.write_text("\n".join(lines) + "\n")
    edited = path.read_bytes()
    with pytest.raises(PipelineError) as err:
        append_entry(path, _entry("2024-01-19", "2024-01-22", [0.02, 0.01, -0.001]))
    message = str(err.value)
    assert "\n" not in message and "was changed after it was recorded" in message
    assert ("entry 1 (as of 2024-01-05)" if edit != "hash" else "entry 2 (as of 2024-01-12)") in message
    assert path.read_bytes() == edited  # nothing written
    with pytest.raises(PipelineError, match="was changed"):
        read_ledger(path)


def test_a_foreign_file_is_not_a_ledger(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(PipelineError, match="not a ledger"):
        read_ledger(path)


# ------------------------------------------------------------------------------------- marking
def _weekly_ledger(tmp_path, bars: pd.DataFrame, weeks: int) -> pd.DataFrame:
    """A ledger of `weeks` decisions on the last session of each week, random predictions."""
    dates = pd.DatetimeIndex(sorted(bars["date"].unique()))
    fridays = dates[dates.to_series().dt.dayofweek.to_numpy() == 4][-weeks - 1 : -1]
    rng = np.random.default_rng(3)
    path = tmp_path / "ledger.csv"
    for d in fridays:
        preds = rng.normal(0, 0.01, len(TICKERS)).tolist()
        alive = len(TICKERS)
        w = [1.0 / alive if p > 0 else 0.0 for p in preds]  # the threshold rule at 0, long only
        nxt = dates[dates.get_loc(d) + 1]
        append_entry(path, _entry(str(d.date()), str(nxt.date()), preds, w))
    return read_ledger(path)


def test_marked_to_market_equals_a_backtest_of_the_same_decisions(tmp_path):
    bars = gbm_bars(200, TICKERS, seed=1)
    ledger = _weekly_ledger(tmp_path, bars, 8)
    p = default_params()
    record = mark_to_market(ledger, bars, p["backtest"], p["features"]["horizon"], 252)
    assert record.filled == 8 and record.pending == 0 and record.mismatched == []
    preds = ledger[["as_of", "ticker", "prediction"]].rename(columns={"as_of": "date"})
    preds["date"] = pd.to_datetime(preds["date"])
    bt = run_backtest(bars, preds, p["backtest"], p["features"]["horizon"], 252)
    np.testing.assert_allclose(record.equity["equity"].to_numpy(), bt.equity["strategy"].to_numpy(), rtol=1e-9)
    assert (record.equity["date"].to_numpy() == bt.equity["date"].to_numpy()).all()


def test_pending_entry_and_a_missing_session_are_reported(tmp_path):
    bars = gbm_bars(60, TICKERS, seed=2)
    last = bars["date"].max()
    path = tmp_path / "ledger.csv"
    append_entry(path, _entry("2020-02-07", "2020-02-11", [0.01, 0.02, -0.01]))  # the data says 02-10
    append_entry(path, _entry(str(last.date()), "2099-01-01", [0.01, 0.02, -0.01]))
    record = mark_to_market(read_ledger(path), bars, default_params()["backtest"], 5, 252)
    assert record.filled == 1 and record.pending == 1
    assert record.mismatched == ["entry 1: executes 2020-02-11 but the next bar is 2020-02-10"]


def test_live_section_values_and_undefined_under_two_weeks(tmp_path):
    bars = gbm_bars(300, TICKERS, seed=4)
    p = default_params()
    ledger = _weekly_ledger(tmp_path, bars, 10)
    record = mark_to_market(ledger, bars, p["backtest"], 5, 252)
    close = bars.pivot(index="date", columns="ticker", values="adj_close")
    label = np.log(close.shift(-5) / close).stack().rename("label").reset_index()
    live = live_predictions(ledger, label)
    preds = label.rename(columns={"label": "prediction"}).assign(label=label["label"]).dropna()
    bt = run_backtest(bars, preds.iloc[: len(preds) // 2], p["backtest"], 5, 252)
    section = live_section(record, live, bt.equity, preds, p["evaluate"])
    out = section.values
    assert out["label"].startswith("live record: the only untuned period")
    r = np.diff(record.equity["equity"]) / record.equity["equity"][:-1]
    assert out["mean_daily_return"] == pytest.approx(r.mean(), rel=1e-12)
    assert out["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * np.sqrt(252), rel=1e-9)
    assert 0 <= out["psr"] <= 1 and out["backtest_ic"] == pytest.approx(1.0)  # perfect foresight
    lo, hi = out["backtest_interval"]["low"], out["backtest_interval"]["high"]
    assert lo < hi and out["consistent"] == int(lo <= out["mean_daily_return"] <= hi)
    one = mark_to_market(ledger[ledger["entry"] == 1], bars, p["backtest"], 5, 252)
    short = live_section(one, live.iloc[:3], bt.equity, preds, p["evaluate"])
    assert short.values["sharpe"] is None and "fewer than 2 weekly entries" in short.reasons["sharpe"]


# --------------------------------------------------------------------------------------- drift
def test_psi_is_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, 20_000)
    assert psi(train, train) == pytest.approx(0.0, abs=1e-12)
    assert psi(train, rng.normal(0, 1, 20_000)) < 0.01
    assert psi(train, rng.normal(1.0, 1, 2_000)) > 0.25
    stat, p = ks(train, rng.normal(1.0, 1, 2_000))
    assert stat > 0.3 and p < 1e-6
    # the formula by hand: deciles of train, a shifted sample
    edges = np.quantile(train, np.arange(1, 10) / 10)
    a = np.r_[np.full(500, edges[-1] + 1), np.full(500, edges[0] - 1)]
    pa = np.r_[0.5, [1e-4] * 8, 0.5]
    pe = np.full(10, 0.1)
    assert psi(train, a) == pytest.approx(float(np.sum((pa - pe) * np.log(pa / pe))), rel=1e-9)
    assert psi(train, a[:1]) is None


def test_drift_report_warns_once_per_kind_over_the_thresholds():
    rng = np.random.default_rng(1)
    dates = pd.bdate_range("2023-01-02", periods=300)
    f = pd.DataFrame({"date": np.repeat(dates, 4), "x": rng.normal(0, 1, 1200), "y": rng.normal(0, 1, 1200)})
    week = f["date"] >= dates[-5]
    f.loc[week, "x"] += 3.0  # this week's x is shifted, y is not
    cfg = {"psi_threshold": 0.25, "ic_drop_threshold": 0.1, "ic_min_predictions": 30}
    findings = [{"ticker": "AAA", "date": str(dates[-2].date()), "rule": "gap", "detail": "", "action": "kept"}]
    section, warnings = drift_report(f, ["x", "y"], dates[-6], dates[-5], dates[-1], 0.01, 0.2, 30, findings, cfg)
    assert section["shifted_features"] == ["x"] and section["alarm"] and section["features"]["x"]["psi"] > 0.25
    assert section["ic_drop"] == pytest.approx(0.19) and len(section["data_quality_findings"]) == 1
    assert len(warnings) == 3 and warnings[0].startswith("drift: 1 feature(s) with PSI above live.psi_threshold")
    assert "live IC 0.010 is 0.190 below" in warnings[1] and "data quality: 1 validation finding" in warnings[2]
    f.loc[week, "x"] -= 3.0
    section, warnings = drift_report(f, ["x", "y"], dates[-6], dates[-5], dates[-1], 0.15, 0.2, 30, [], cfg)
    assert not section["alarm"] and warnings == []


# ------------------------------------------------------------------------------------- retrain
def _ents(cutoffs: list[str | None], alarms: list[bool]) -> pd.DataFrame:
    return pd.DataFrame({"cutoff": cutoffs, "drift_alarm": alarms})


def test_retraining_policy_moves_the_cutoff_only_when_it_says_so():
    none = _ents([], [])
    assert next_cutoff("always", 4, "2024-01-05", "2024-03-01", none) is None
    assert next_cutoff("every_n_weeks", 4, None, "2024-03-01", none) == "2024-03-01"
    three = _ents(["2024-01-05"] * 3, [False] * 3)
    assert next_cutoff("every_n_weeks", 4, "2024-01-05", "2024-03-01", three) == "2024-01-05"
    four = _ents([None, "2024-01-05", "2024-01-05", "2024-01-05", "2024-01-05"], [False] * 5)
    assert next_cutoff("every_n_weeks", 4, "2024-01-05", "2024-03-01", four) == "2024-03-01"
    assert next_cutoff("on_drift", 4, "2024-01-05", "2024-03-01", three) == "2024-01-05"
    drifted = _ents(["2024-01-05"] * 3, [False, False, True])
    assert next_cutoff("on_drift", 4, "2024-01-05", "2024-03-01", drifted) == "2024-03-01"


def test_set_cutoff_rewrites_only_that_line(tmp_path):
    path = tmp_path / "params.yaml"
    text = "model:\n  cutoff: 3\ntrain:\n  seed: 1\n  cutoff: null            # comment\nlive:\n  x: 1\n"
    path.write_text(text)
    assert set_cutoff(path, "2024-03-01")
    assert path.read_text() == text.replace("cutoff: null ", 'cutoff: "2024-03-01" ')
    assert not set_cutoff(path, "2024-03-01")
    assert set_cutoff(path, None) and path.read_text() == text
    path.write_text("train:\n  seed: 1\n")
    with pytest.raises(PipelineError, match="no train.cutoff line"):
        set_cutoff(path, None)


def test_training_rows_after_the_cutoff_change_nothing():
    """Perturbation: bars after the cutoff arrive (later rows, labels realised later): the cut table is the same."""
    dates = pd.bdate_range("2024-01-01", periods=30)
    f = pd.DataFrame({"date": dates, "ticker": "AAA", "x": np.arange(30.0), "label": np.arange(30.0) / 100})
    f["label_end"] = f["date"].shift(-5)
    f.loc[25:, "label"] = np.nan
    cut = "2024-01-26"  # row 19
    early = cut_training_rows(f.iloc[:22].assign(label=f["label"].where(f.index < 17)), cut)
    early["label_end"] = early["label_end"].where(early["label"].notna())
    later = cut_training_rows(f, cut)
    assert len(later) == 20 and later["label"].notna().sum() == 15  # label_end <= cutoff: rows 0..14
    pd.testing.assert_frame_equal(later, cut_training_rows(f.assign(x=f["x"].where(f.index < 20, -1.0)), cut))
    assert later["date"].max() == pd.Timestamp(cut) and later["label_end"].max() <= pd.Timestamp(cut)


def test_a_small_live_sample_never_alarms_on_the_ic():
    dates = pd.bdate_range("2023-01-02", periods=60)
    f = pd.DataFrame({"date": np.repeat(dates, 2), "x": np.random.default_rng(2).normal(0, 1, 120)})
    cfg = {"psi_threshold": 0.25, "ic_drop_threshold": 0.1, "ic_min_predictions": 30}
    section, warnings = drift_report(f, ["x"], dates[-6], dates[-5], dates[-1], -0.5, 0.2, 29, [], cfg)
    assert section["ic_drop"] == pytest.approx(0.7) and not section["alarm"] and warnings == []
    section, warnings = drift_report(f, ["x"], dates[-6], dates[-5], dates[-1], -0.5, 0.2, 30, [], cfg)
    assert section["alarm"] and len(warnings) == 1


# ------------------------------------------------------------------------- featurize's training rows, the plan
def _clean_prices(path, days: int) -> pd.DataFrame:
    """Clean bars of three tickers over `days` sessions (the same bars again for a longer span: new bars appended)."""
    from lib.io import write_table

    bars = gbm_bars(200, TICKERS, seed=3)
    bars = bars[bars["date"] <= bars["date"].unique()[days - 1]].reset_index(drop=True)
    write_table(bars, path)
    return bars


def test_featurize_writes_the_features_as_training_rows_without_a_cutoff_and_cuts_with_one(workdir):
    import stages.featurize
    from lib.io import file_sha256, read_table
    from tests.helpers import write_params

    _clean_prices(workdir / "prices.parquet", 150)
    p = default_params()
    p["features"]["sma_windows"] = [10, 50]  # a shorter warm-up than the default 200 sessions
    write_params(workdir, p)
    argv = ["--prices", "prices.parquet", "--out", "features.parquet", "--trainset", "train.parquet"]
    stages.featurize.main(argv)
    assert file_sha256("train.parquet") == file_sha256("features.parquet")  # the default: unchanged bytes
    features = read_table("features.parquet", ["date", "label", "label_end"])
    cutoff = str(features["date"].unique()[50].date())
    p["train"]["cutoff"] = cutoff
    write_params(workdir, p)
    stages.featurize.main(argv)
    cut = read_table("train.parquet", ["date", "label", "label_end"])
    pd.testing.assert_frame_equal(cut, cut_training_rows(features, cutoff), check_dtype=False)
    assert cut["date"].max() == pd.Timestamp(cutoff) and cut["label_end"].max() <= pd.Timestamp(cutoff)
    assert cut["label"].notna().sum() < features.loc[features["date"] <= cutoff, "label"].notna().sum()
    before = file_sha256("train.parquet")
    _clean_prices(workdir / "prices.parquet", 200)  # fifty sessions of new bars: no training row <= cutoff changes
    stages.featurize.main(argv)
    assert file_sha256("train.parquet") == before and file_sha256("features.parquet") != file_sha256("train.parquet")


def test_plan_cutoff_writes_the_policy_and_stops_on_a_broken_ledger(workdir):
    from lib.live.weekly import plan_cutoff
    from lib.params import load_params

    shutil_params = (ROOT / "params.yaml").read_text()
    (workdir / "params.yaml").write_text(shutil_params)
    assert plan_cutoff("2024-03-01") is None and (workdir / "params.yaml").read_text() == shutil_params  # always
    (workdir / "params.yaml").write_text(shutil_params.replace("retrain: always ", "retrain: every_n_weeks "))
    assert plan_cutoff("2024-03-01") == "2024-03-01"
    assert load_params()["train"]["cutoff"] == "2024-03-01"
    for k in range(3):
        append_entry("track/ledger.csv", _entry(f"2024-03-0{k + 1}", "2024-03-11", [0.01], cutoff="2024-03-01"))
    assert plan_cutoff("2024-03-08") == "2024-03-01"  # 3 of 4 weeks
    append_entry("track/ledger.csv", _entry("2024-03-08", "2024-03-11", [0.01], cutoff="2024-03-01"))
    assert plan_cutoff("2024-03-15") == "2024-03-15"
    text = (workdir / "track" / "ledger.csv").read_text()
    (workdir / "track" / "ledger.csv").write_text(text.replace(",0.01,", ",0.02,", 1))
    params_before = (workdir / "params.yaml").read_text()
    with pytest.raises(PipelineError, match=r"entry 1 \(as of 2024-03-01\) was changed"):
        plan_cutoff("2024-03-22")
    assert (workdir / "params.yaml").read_text() == params_before


def test_marking_uses_no_later_bar_perturbation(tmp_path):
    """Prices changed after T: the live equity dated <= T stays, later values move."""
    bars = gbm_bars(200, TICKERS, seed=5)
    ledger = _weekly_ledger(tmp_path, bars, 8)
    p = default_params()
    record = mark_to_market(ledger, bars, p["backtest"], 5, 252)
    cut = record.equity["date"].iloc[len(record.equity) // 2]
    later = bars["date"] > cut
    shocked = bars.copy()
    for c in ("open", "high", "low", "close", "adj_close"):
        shocked.loc[later, c] *= np.exp(np.random.default_rng(6).normal(0, 0.02, later.sum()))
    again = mark_to_market(ledger, shocked, p["backtest"], 5, 252)
    early = record.equity["date"] <= cut
    np.testing.assert_array_equal(again.equity["equity"][early], record.equity["equity"][early])
    assert not np.allclose(again.equity["equity"][~early], record.equity["equity"][~early])


def test_ks_with_an_effective_size_is_kolmogorovs_asymptotic_p():
    rng = np.random.default_rng(7)
    e, a = rng.normal(0, 1, 5000), rng.normal(0.5, 1, 15)
    stat, p_rows = ks(e, a)
    stat3, p3 = ks(e, a, 3)
    assert stat3 == stat and p3 > p_rows  # three independent values are weaker evidence than fifteen
    from scipy import stats

    assert p3 == pytest.approx(stats.kstwobign.sf(stat * np.sqrt(5000 * 3 / 5003)), rel=1e-12)


def test_a_kept_model_must_be_the_last_entrys_unless_its_training_data_were_revised(tmp_path, caplog):
    from argparse import Namespace

    from stages.track import check_model

    path = tmp_path / "ledger.csv"
    append_entry(path, _entry("2024-01-05", "2024-01-08", [0.01], cutoff="2024-01-05", retrain="every_n_weeks"))
    ledger, args = read_ledger(path), Namespace(model="models/final.pt")
    train = {"retrain": "every_n_weeks", "cutoff": "2024-01-05"}
    same = {**MODEL, "cutoff": "2024-01-05", "retrain": "every_n_weeks"}
    check_model(ledger, same, train, args)  # the recorded model: fine
    check_model(ledger, {**same, "model_sha256": "ef" * 32, "cutoff": "2024-01-12"}, train, args)  # cutoff moved
    with caplog.at_level("WARNING"):
        check_model(ledger, {**same, "model_sha256": "ef" * 32, "data_hash": "00" * 32}, train, args)
    assert "retrained on revised training data" in caplog.text
    with pytest.raises(
        PipelineError, match=r"models/final.pt \(sha256 efefefefefef...\) is not the model of ledger entry 1"
    ):
        check_model(ledger, {**same, "model_sha256": "ef" * 32}, train, args)
    check_model(ledger, {**same, "model_sha256": "ef" * 32}, {**train, "retrain": "always"}, args)


def test_an_empty_ledger_gives_an_undefined_live_section(tmp_path):
    path = tmp_path / "ledger.csv"
    path.write_text(",".join(LEDGER) + "\n")  # the committed track/ledger.csv before the first weekly run
    ledger = read_ledger(path)
    assert ledger.empty and (ROOT / "track" / "ledger.csv").read_text() == path.read_text()
    bars = gbm_bars(60, TICKERS, seed=8)
    p = default_params()
    record = mark_to_market(ledger, bars, p["backtest"], 5, 252)
    label = bars[["date", "ticker"]].assign(label=0.0)
    equity = pd.DataFrame({"date": bars["date"].unique(), "strategy": np.linspace(1.0, 2.0, 60)})
    section = live_section(record, live_predictions(ledger, label), equity, label.assign(prediction=1.0), p["evaluate"])
    out = section.values
    assert out["entries_filled"] == 0 and out["sharpe"] is None and out["start"] is None
    assert "fewer than 2 weekly entries filled (0)" in section.reasons["consistent"]
