"""The weekly refresh (stages/refresh.py, lib/data/refresh.py, lib/data/store.py) against a fake vendor: only the
new bars are asked for, a changed overlap refetches the ticker in full, nothing new writes nothing, a failure
leaves the store byte-identical. yfinance is replaced by a function serving a recorded history; no network."""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.data import providers
from lib.data.calendar import sessions
from lib.data.providers import download
from lib.data.refresh import first_difference, refresh_bars
from lib.data.store import from_store, read_store, store_file, write_store
from lib.errors import PipelineError
from lib.io import read_table, write_table
from lib.tables import COLUMNS, PRICE_COLUMNS
from stages import download as download_stage
from stages import refresh
from tests.helpers import ROOT, default_params, tool_env, write_params

TICKERS = ["AAA", "BBB"]
STORE = "data/store/yfinance.parquet"


def _history(ticker: str, seed: int) -> pd.DataFrame:
    """A vendor's daily bars of one ticker on the real XNYS sessions of 2024 (yfinance's flat layout)."""
    days = sessions("XNYS", "2024-01-02", "2024-12-31")
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
    open_ = close * np.exp(rng.normal(0, 0.003, len(days)))
    return pd.DataFrame(
        {
            "Adj Close": close * 0.98,
            "Close": close,
            "High": np.maximum(open_, close) * 1.005,
            "Low": np.minimum(open_, close) * 0.995,
            "Open": open_,
            "Volume": rng.integers(1e5, 1e6, len(days)).astype(float),
        },
        index=pd.DatetimeIndex(days, name="Date"),
    )


class Vendor:
    """yfinance.download over a recorded history that grows week by week (`upto`); records every request."""

    def __init__(self) -> None:
        self.history = {t: _history(t, i) for i, t in enumerate(TICKERS)}
        self.upto = pd.Timestamp("2024-06-28")
        self.calls: list[tuple[str, str | None, int]] = []  # ticker, start asked for, bars returned
        self.broken: set[str] = set()

    def download(self, ticker, start=None, end=None, **kw):
        assert kw["auto_adjust"] is False
        if ticker in self.broken:
            self.calls.append((ticker, start, 0))
            return pd.DataFrame()
        df = self.history[ticker]
        keep = df.index <= self.upto
        if start:
            keep &= df.index >= pd.Timestamp(start)
        if end:
            keep &= df.index < pd.Timestamp(end)
        self.calls.append((ticker, start, int(keep.sum())))
        return df[keep].copy()

    def week(self, n: int = 1) -> None:
        days = self.history[TICKERS[0]].index
        self.upto = days[days > self.upto][5 * n - 1]


@pytest.fixture
def vendor(monkeypatch, tmp_path):
    import yfinance

    v = Vendor()
    monkeypatch.setattr(yfinance, "download", v.download)
    monkeypatch.setattr(providers, "_sleep", lambda s: None)
    monkeypatch.chdir(tmp_path)
    p = default_params()
    p["data"].update(source="yfinance", tickers=TICKERS, start="2024-01-02", end=None, retries=0)
    write_params(tmp_path, p)
    return v


def _refresh(capsys) -> str:
    refresh.main(["--no-repro"])
    return capsys.readouterr().out.strip()


def test_the_first_refresh_fetches_everything_then_only_the_new_bars(vendor, capsys):
    out = _refresh(capsys)
    assert vendor.calls == [("AAA", "2024-01-02", 124), ("BBB", "2024-01-02", 124)]
    assert out.startswith("refresh: 248 new bar(s) for 2 tickers from yfinance, last bar 2024-06-28")
    first, start = read_store(STORE)
    assert start == "2024-01-02" and len(first) == 248

    vendor.calls.clear()
    vendor.week()  # 1 to 8 July 2024: five sessions, 4 July closed
    out = _refresh(capsys)
    # each ticker is asked from its 5th-last stored bar: the 5 overlapping bars and the 5 new ones
    assert vendor.calls == [("AAA", "2024-06-24", 10), ("BBB", "2024-06-24", 10)]
    assert out.startswith("refresh: 10 new bar(s) for 2 tickers from yfinance, last bar 2024-07-08")
    second, _ = read_store(STORE)
    assert len(second) == 258
    old = second.merge(first[["date", "ticker"]], on=["date", "ticker"])
    pd.testing.assert_frame_equal(old, first)  # the stored bars are kept as they were, bit for bit
    want = download({**default_params()["data"], "source": "yfinance", "tickers": TICKERS, "start": "2024-01-02"}, ROOT)
    pd.testing.assert_frame_equal(second, want.sort_values(["ticker", "date"]).reset_index(drop=True))


def test_nothing_new_says_so_and_writes_nothing(vendor, capsys):
    _refresh(capsys)
    path = Path(STORE)
    before, mtime = path.read_bytes(), path.stat().st_mtime_ns
    out = _refresh(capsys)
    assert out == (
        f"refresh: nothing new from yfinance since the last run (2 tickers, last bar 2024-06-28); {path} unchanged"
    )
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


def test_a_changed_overlap_refetches_the_ticker_in_full_with_one_line(vendor, capsys, caplog):
    _refresh(capsys)
    vendor.calls.clear()
    vendor.week()
    h = vendor.history["BBB"]
    h.loc[h.index < "2024-06-26", "Adj Close"] *= 0.99  # a dividend on 26 June: the adjusted history rescaled
    with caplog.at_level(logging.WARNING):
        out = _refresh(capsys)
    assert vendor.calls == [("AAA", "2024-06-24", 10), ("BBB", "2024-06-24", 10), ("BBB", "2024-01-02", 129)]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [
        (
            "BBB: the stored bars differ from yfinance's from 2024-06-24 (adj_close): a split, dividend or revision; "
            "refetching it in full"
        )
    ]
    assert "refetched in full: BBB" in out
    bars, _ = read_store(STORE)
    bbb = bars[bars["ticker"] == "BBB"]
    assert np.allclose(bbb["adj_close"].to_numpy(), h.loc[h.index <= vendor.upto, "Adj Close"].to_numpy(), rtol=0)


def test_a_failed_fetch_leaves_the_store_byte_identical_and_names_the_ticker(vendor, capsys):
    _refresh(capsys)
    before = Path(STORE).read_bytes()
    vendor.week()
    vendor.broken = {"BBB"}
    with pytest.raises(PipelineError, match=r"^refresh: fetching failed for 1 of 2 ticker\(s\): BBB \(first: yfin"):
        _refresh(capsys)
    assert Path(STORE).read_bytes() == before
    assert sorted(p.name for p in Path("data/store").iterdir()) == ["yfinance.parquet"]  # no temp file


def test_a_vendor_with_fewer_bars_than_stored_writes_nothing(vendor, capsys):
    _refresh(capsys)
    before = Path(STORE).read_bytes()
    vendor.week()
    vendor.history["AAA"] = vendor.history["AAA"].drop(pd.Timestamp("2024-06-27"))
    with pytest.raises(PipelineError, match=r"returned 123 bars for AAA from 2024-01-02 to 2024-06-28, fewer than"):
        _refresh(capsys)
    assert Path(STORE).read_bytes() == before


def test_the_download_stage_reads_the_store_and_falls_back_without_one(vendor, capsys, caplog):
    """With a store covering the config the stage reads it (no request); without one, or when it lacks a ticker,
    it fetches from the source as before."""
    _refresh(capsys)
    vendor.calls.clear()
    download_stage.main(["--sample-dir", "data/sample", "--store", "data/store", "--out", "raw.parquet"])
    assert vendor.calls == []
    got = read_table("raw.parquet", COLUMNS)
    cfg = {**default_params()["data"], "source": "yfinance", "tickers": TICKERS, "start": "2024-01-02", "end": None}
    pd.testing.assert_frame_equal(got, download(cfg, ROOT))
    cut = from_store({**cfg, "tickers": ["BBB", "AAA"], "end": "2024-03-28"}, "data/store")
    assert cut["ticker"].iloc[0] == "BBB" and str(cut["date"].max().date()) == "2024-03-28"
    with caplog.at_level(logging.WARNING):
        assert from_store({**cfg, "tickers": ["AAA", "CCC"]}, "data/store") is None
        assert from_store({**cfg, "start": "2023-01-02"}, "data/store") is None
    assert "lacks ticker(s) ['CCC']: fetching from yfinance instead" in caplog.text
    assert from_store({**cfg, "source": "sample"}, "data/store") is None


def test_csv_rereads_the_folder_and_never_writes_a_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "data" / "sample", "data/sample")
    p = default_params()
    p["data"].update(source="csv", csv_dir="data/sample", tickers=["SPY"], start="2024-01-02", end=None)
    write_params(tmp_path, p)
    assert _refresh(capsys).startswith("refresh: csv folder read; no earlier run")
    write_table(download(p["data"], ROOT), "data/raw/prices.parquet")  # the last run's download
    assert _refresh(capsys).startswith(
        "refresh: nothing new from csv since the last run (1 tickers, last bar 2024-09-12)"
    )
    with open("data/sample/SPY.csv", "a") as f:
        f.write("2024-09-13,562.0,563.0,560.0,562.5,562.5,1000000\n")
    assert _refresh(capsys).startswith("refresh: 1 new bar(s) for 1 tickers from csv, last bar 2024-09-13")
    assert not (tmp_path / "data" / "store").exists()


def test_refresh_plans_the_cutoff_runs_dvc_repro_then_tracks_unless_told_not_to(vendor, monkeypatch, capsys):
    import stages.track

    ran = []
    monkeypatch.setattr(refresh, "plan_cutoff", lambda last: ran.append(("plan_cutoff", last)))
    monkeypatch.setattr(stages.track, "main", lambda argv: ran.append(("track", argv)))
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: ran.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    refresh.main(["--no-repro"])
    assert ran == []  # the store only: no cutoff, no dvc repro, no ledger entry
    refresh.main([])
    dvc = [sys.executable, "-m", "dvc", "repro"]
    assert ran == [("plan_cutoff", "2024-06-28"), [*dvc, "backtest"], ("track", []), dvc]  # evaluate sees the entry
    ran.clear()
    monkeypatch.setattr(subprocess, "run", lambda cmd, check: subprocess.CompletedProcess(cmd, 2))
    with pytest.raises(PipelineError, match=r"dvc repro failed \(exit code 2\); the store is kept"):
        refresh.main([])
    assert ran == [("plan_cutoff", "2024-06-28")]  # a failed repro appends no ledger entry


def test_first_difference_names_the_first_date_and_columns():
    a = pd.DataFrame({"date": pd.to_datetime(["2024-07-01", "2024-07-02"]), **{c: [1.0, 2.0] for c in PRICE_COLUMNS}})
    assert first_difference(a, a.copy(), 1e-6) is None
    b = a.copy()
    b.loc[1, "close"] = 2.0 * (1 + 1e-7)  # within the tolerance
    assert first_difference(a, b, 1e-6) is None
    b.loc[1, ["close", "volume"]] = [2.1, 3.0]
    assert first_difference(a, b, 1e-6) == ("2024-07-02", "close,volume")
    assert first_difference(a, b.iloc[1:], 1e-6) == ("2024-07-01", "a bar the vendor no longer has")
    nan = a.assign(volume=[np.nan, 2.0])
    assert first_difference(nan, nan.copy(), 0.0) is None


def test_tickers_not_asked_for_are_kept_and_refresh_is_deterministic():
    bars = pd.DataFrame(
        {"date": pd.to_datetime(["2024-07-01", "2024-07-02"] * 2), "ticker": ["OLD", "OLD", "AAA", "AAA"]}
        | {c: [1.0, 2.0, 1.0, 2.0] for c in PRICE_COLUMNS}
    )
    new = pd.DataFrame({"date": pd.to_datetime(["2024-07-02", "2024-07-03"]), **{c: [2.0, 3.0] for c in PRICE_COLUMNS}})
    asked = []
    result = refresh_bars(bars, ["AAA"], lambda t, s: asked.append((t, s)) or new, None, 1, 0.0, "test")
    assert asked == [("AAA", "2024-07-02")] and result.changed
    assert result.bars["ticker"].tolist() == ["AAA"] * 3 + ["OLD"] * 2
    assert [(u.ticker, u.received, u.new, u.last) for u in result.updates] == [("AAA", 2, 1, "2024-07-03")]


@pytest.mark.slow
def test_dvc_reruns_download_only_when_the_store_changed(tmp_path):
    """A fresh clone (README-only store) runs as before; a store written by a refresh reruns download, which reads
    it (no network: the stage would fail on a request); an unchanged store reruns nothing."""
    dvc = [sys.executable, "-m", "dvc"]

    def run(*cmd):
        r = subprocess.run(
            list(cmd), check=False, cwd=tmp_path, capture_output=True, text=True, env=tool_env(), timeout=600
        )
        assert r.returncode == 0, f"{cmd}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    run("git", "init", "-q")
    run(*dvc, "init", "-q")
    for item in ("stages", "lib", "data/sample", "data/store", "data/universe", "track"):  # later stages' deps
        if (ROOT / item).exists():
            shutil.copytree(ROOT / item, tmp_path / item, ignore=shutil.ignore_patterns("__pycache__", "*.parquet"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    p = default_params()
    write_params(tmp_path, p)
    assert "Running stage 'download'" in run(*dvc, "repro", "download")
    p["data"].update(source="yfinance", tickers=["SPY", "TLT"], start="2020-01-02", end=None)
    write_params(tmp_path, p)
    sample = download({**p["data"], "source": "sample"}, ROOT / "data" / "sample")
    write_store(
        sample[sample["date"] <= "2024-06-28"], store_file(tmp_path / "data" / "store", "yfinance"), "2020-01-02"
    )
    assert "Running stage 'download'" in run(*dvc, "repro", "download")
    assert "didn't change, skipping" in run(*dvc, "repro", "download")
    write_store(sample, store_file(tmp_path / "data" / "store", "yfinance"), "2020-01-02")  # a week of new bars
    assert "Running stage 'download'" in run(*dvc, "repro", "download")
    raw = read_table(tmp_path / "data/raw/prices.parquet", COLUMNS)
    assert str(raw["date"].max().date()) == "2024-09-12" and set(raw["ticker"]) == {"SPY", "TLT"}
