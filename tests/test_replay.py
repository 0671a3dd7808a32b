"""The weekly loop, replayed: a vendor's history served week by week, the real commands each week.

Ten weeks (2024-03-18 ... 2024-05-24) of the bundled SPY, TLT and GLD bars, served by a fake yfinance
(`stages.refresh`'s fetch is patched: no network). Each week: the refresh fetches the new bars, the
retraining policy sets train.cutoff (`lib.live.weekly.plan_cutoff`, every 4 weeks), the stages run
in-process in DVC's order with DVC's skip rule emulated for train (it runs only when its input
data/train_features.parquet changed: running `dvc repro` ten times would take minutes), then
`stages.track` appends the ledger entry. A tiny ridge model keeps it to about a minute."""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

import stages.refresh
import stages.track
from lib.errors import PipelineError
from lib.io import file_sha256, read_table
from lib.live.ledger import entries, read_ledger
from lib.live.mark import mark_to_market
from lib.live.weekly import plan_cutoff
from lib.portfolio.backtest import run_backtest
from lib.tables import COLUMNS
from tests.helpers import ROOT, run_stages, small_params, write_params

pytestmark = pytest.mark.slow

TICKERS = ["SPY", "TLT", "GLD"]
WEEK_ENDS = pd.bdate_range("2024-03-22", "2024-05-24", freq="W-FRI")  # the last weekday of each week
REVISED_WEEK = 6  # this week the vendor revises the last bar it served the week before


def _params() -> dict:
    p = small_params()
    p["data"].update(source="yfinance", tickers=TICKERS, start="2021-01-04", end=None)
    p["model"].update(arch="ridge", seq_len=1)
    p["walk_forward"].update(folds=2, test_sessions=60)
    p["train"].update(retrain="every_n_weeks", every_n_weeks=4, cutoff=None)
    p["evaluate"].update(baseline_models=[])
    return p


class Vendor:
    """The sample's bars up to `until`; `revise` multiplies one bar's prices; every request is logged."""

    def __init__(self) -> None:
        raw = pd.concat(
            [pd.read_csv(ROOT / "data" / "sample" / f"{t}.csv", parse_dates=["date"]).assign(ticker=t) for t in TICKERS]
        )
        self.bars = raw[COLUMNS].reset_index(drop=True)
        self.until = pd.Timestamp("2000-01-01")
        self.requests: list[tuple[str, str | None, int]] = []

    def revise(self, ticker: str, date: pd.Timestamp) -> None:
        at = (self.bars["ticker"] == ticker) & (self.bars["date"] == date)
        assert at.sum() == 1
        self.bars.loc[at, ["open", "high", "low", "close", "adj_close"]] *= 1.01

    def fetch(self, cfg: dict, ticker: str, start: str | None) -> pd.DataFrame:
        b = self.bars[(self.bars["ticker"] == ticker) & (self.bars["date"] <= self.until)]
        if start is not None:
            b = b[b["date"] >= pd.Timestamp(start)]
        self.requests.append((ticker, start, len(b)))
        return b.drop(columns="ticker").reset_index(drop=True)


def _week(vendor: Vendor, week_end: pd.Timestamp, trained: dict) -> None:
    """One weekly run, as stages.refresh runs it (fetch, cutoff, `dvc repro`, track)."""
    vendor.until = week_end
    stages.refresh.main(["--no-repro"])
    last = str(read_table("data/store/yfinance.parquet", ["date"])["date"].max().date())
    plan_cutoff(last)
    run_stages("download", "validate", "featurize")
    sha = file_sha256("data/train_features.parquet")
    if trained.get("sha") != sha:  # DVC reruns train only when its input changed
        run_stages("train")
        trained["sha"], trained["runs"] = sha, trained.get("runs", 0) + 1
    run_stages("predict", "backtest")
    stages.track.main([])


def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the ten weeks once per test session (in <basetemp>/replay, the results pickled beside them), so that
    tests/test_deployment_doc.py reuses the workspace instead of replaying it again."""
    folder = tmp_path_factory.getbasetemp() / "replay"
    saved = folder / "replay.pkl"
    if saved.exists():
        return pickle.loads(saved.read_bytes())
    folder.mkdir()
    mp = pytest.MonkeyPatch()
    vendor = Vendor()
    mp.chdir(folder)
    mp.setattr(stages.refresh, "fetch_bars", vendor.fetch)
    shutil.copytree(ROOT / "data" / "sample", "data/sample")
    write_params(folder, _params())
    texts, trained, logs = [], {}, []
    handler = logging.Handler()
    handler.emit = lambda record: logs.append((len(texts), record.getMessage()))
    logging.getLogger().addHandler(handler)
    try:
        for k, week_end in enumerate(WEEK_ENDS):
            if k == REVISED_WEEK:
                vendor.revise("TLT", pd.Timestamp(read_table("data/raw/prices.parquet", ["date"])["date"].max()))
            before = len(vendor.requests)
            _week(vendor, week_end, trained)
            texts.append(((folder / "track" / "ledger.csv").read_text(), vendor.requests[before:]))
        out = {
            "folder": folder,
            "texts": texts,
            "trained": trained,
            "logs": logs,
            "prices": read_table("data/clean/prices.parquet", COLUMNS),
            "ledger": read_ledger("track/ledger.csv"),
            "params": _params(),
        }
    finally:
        logging.getLogger().removeHandler(handler)
        mp.undo()
    saved.write_bytes(pickle.dumps(out))
    return out


@pytest.fixture(scope="session")
def replay(tmp_path_factory):
    return replayed(tmp_path_factory)


def test_only_new_bars_are_fetched_each_week(replay):
    overlap = replay["params"]["data"]["refresh_overlap"]
    first = replay["texts"][0][1]
    start = replay["params"]["data"]["start"]
    assert sorted(t for t, _, _ in first) == sorted(TICKERS) and all(s == start for _, s, _ in first)
    for k, (_, requests) in enumerate(replay["texts"][1:], start=1):
        asked = [(t, s, n) for t, s, n in requests if s != start]
        assert sorted(t for t, _, _ in asked) == sorted(TICKERS), k
        assert all(n <= overlap + 5 for _, _, n in asked), (k, asked)  # the overlap + at most a week of sessions
        full = [t for t, s, _ in requests if s == start]  # from data.start: the whole history
        assert full == (["TLT"] if k == REVISED_WEEK else []), (k, requests)


def test_a_revised_bar_triggers_the_full_refetch_and_its_log_line(replay):
    lines = [m for week, m in replay["logs"] if week == REVISED_WEEK and "TLT" in m]
    expected = (
        "TLT: the stored bars differ from yfinance's from 2024-04-26 (open,high,low,close,adj_close): a split, "
        "dividend or revision; refetching it in full"
    )
    assert lines == [expected]
    assert not [m for week, m in replay["logs"] if week != REVISED_WEEK and "refetching it in full" in m]


def test_the_ledger_grows_by_one_entry_a_week_and_never_changes(replay):
    texts = [t for t, _ in replay["texts"]]
    for k in range(1, len(texts)):
        assert texts[k].startswith(texts[k - 1]), f"week {k}: an earlier entry changed"
        assert entries(read_ledger_text(texts[k]))["entry"].tolist() == list(range(1, k + 2))
    e = entries(replay["ledger"])
    assert len(e) == len(WEEK_ENDS) >= 8


def read_ledger_text(text: str) -> pd.DataFrame:
    import io

    return pd.read_csv(io.StringIO(text), dtype={"as_of": str, "cutoff": str})


def test_a_holiday_week_executes_on_the_next_real_session(replay):
    e = entries(replay["ledger"]).set_index("as_of")["executes"]
    assert e["2024-03-28"] == "2024-04-01"  # Good Friday closed: the week ends on Thursday
    assert e["2024-05-24"] == "2024-05-28"  # Memorial Day Monday
    assert e["2024-04-05"] == "2024-04-08"


def test_the_policy_retrains_every_four_weeks_and_the_ledger_names_the_model(replay):
    e = entries(replay["ledger"])
    assert e["cutoff"].tolist() == ["2024-03-22"] * 4 + ["2024-04-19"] * 4 + ["2024-05-17"] * 2
    blocks = [e["model_sha256"][i : i + 4].nunique() for i in (0, 4, 8)]
    assert blocks == [1, 1, 1] and e["model_sha256"].nunique() == 3
    assert replay["trained"]["runs"] == 3


def test_the_marked_to_market_record_equals_a_backtest_of_the_same_decisions(replay):
    p, ledger, prices = replay["params"], replay["ledger"], replay["prices"]
    record = mark_to_market(ledger, prices, p["backtest"], p["features"]["horizon"], 252)
    assert record.mismatched == [] and record.filled == len(WEEK_ENDS) - 1 and record.pending == 1
    preds = ledger[["as_of", "ticker", "prediction"]].rename(columns={"as_of": "date"})
    bt = run_backtest(prices, preds.assign(date=pd.to_datetime(preds["date"])), p["backtest"], 5, 252)
    strategy = bt.equity.set_index("date")["strategy"]
    live = record.equity.set_index("date")["equity"]
    assert live.index.equals(strategy.index)
    np.testing.assert_allclose(live.to_numpy(), strategy.to_numpy(), rtol=1e-9, atol=0)
    assert live.iloc[-1] != live.iloc[0]  # it traded


def test_track_writes_the_live_record_beside_the_backtest(replay):
    out = json.loads((replay["folder"] / "track" / "live.json").read_text())
    live, drift = out["live"], out["drift"]
    assert live["label"].startswith("live record: the only untuned period")
    assert live["entries_filled"] == len(WEEK_ENDS) - 1 and live["sharpe"] is not None and 0 <= live["psr"] <= 1
    assert live["consistent"] in (0, 1) and live["backtest_interval"]["low"] < live["backtest_interval"]["high"]
    assert drift["week"] == {"start": "2024-05-20", "end": "2024-05-24", "rows": 15}
    assert "month_sin" not in drift["features"] and "rvol_21" in drift["features"]


@pytest.mark.parametrize("bad", ["edited_entry", "model_file"])
def test_bad_input_is_one_line_and_nothing_written(replay, tmp_path, monkeypatch, bad):
    folder = tmp_path / "copy"
    shutil.copytree(replay["folder"], folder)
    monkeypatch.chdir(folder)
    ledger, live = folder / "track" / "ledger.csv", folder / "track" / "live.json"
    if bad == "edited_entry":
        lines = ledger.read_text().splitlines()
        lines[2] = lines[2].replace(lines[2].split(",")[11], "0.5", 1)  # entry 1's second ticker's prediction
        ledger.write_text("\n".join(lines) + "\n")
        expect = "entry 1 (as of 2024-03-22) was changed after it was recorded"
    else:
        shutil.copyfile(folder / "models" / "fold_00.pt", folder / "models" / "final.pt")  # same data, other model
        expect = "is not the model of ledger entry 10"
    before = ledger.read_bytes(), live.read_bytes()
    with pytest.raises(PipelineError) as err:
        stages.track.main([])
    assert expect in str(err.value) and "\n" not in str(err.value)
    assert (ledger.read_bytes(), live.read_bytes()) == before
    if bad == "edited_entry":
        with pytest.raises(PipelineError, match="entry 1 .* was changed"):
            plan_cutoff("2024-05-31")  # the refresh stops before touching params.yaml
