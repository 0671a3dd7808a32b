"""refresh: the weekly command. Fetch only the bars after the stored ones, then `dvc repro`.

Not a DVC stage (it talks to the vendor, which no reproducible stage may depend on):

    python -m stages.refresh [--store data/store] [--sample-dir data/sample] [--raw data/raw/prices.parquet]
                             [--no-repro]

For yfinance and FMP, each ticker is asked for its bars from the `data.refresh_overlap`-th last stored one on; the
overlapping bars must still match (`data.refresh_tolerance`), else that ticker is refetched in full and one line
says so; the new bars are appended and the store (`<store>/<source>.parquet`, outside DVC's outputs) is written
atomically, only when something changed and every ticker succeeded. For `csv` and `sample` the folder is reread and
compared with the last run's download (`--raw`): the folder is the store, DVC sees its changes itself. Then, unless
`--no-repro` (the store only): the retraining policy writes `train.cutoff` (lib.live.weekly.plan_cutoff), `dvc
repro backtest` reruns the stages up to this week's orders (the download stage only when the store or the folder
changed), `stages.track` appends this week's ledger entry, drift and live record, and a last `dvc repro` runs
the evaluate stage on the ledger with this week's entry in it (so the tear sheet is never one week behind).
"""

import argparse
import logging
import subprocess
import sys
from functools import partial
from pathlib import Path

import pandas as pd

from lib.cli import run_stage
from lib.data.providers import download, fetch_bars
from lib.data.refresh import Refresh, refresh_bars
from lib.data.store import NETWORK_SOURCES, covers_start, read_store, store_file, write_store
from lib.errors import PipelineError
from lib.io import read_table
from lib.live.weekly import plan_cutoff
from lib.params import load_params
from lib.tables import COLUMNS

log = logging.getLogger("refresh")
TRACKED = "backtest"  # the last stage whose outputs stages.track reads (signal.json, orders.csv, equity.csv)


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, default=Path("data/store"), help="the store folder (dvc.yaml: download)")
    ap.add_argument("--sample-dir", type=Path, default=Path("data/sample"), help="the bundled sample (source sample)")
    ap.add_argument("--raw", type=Path, default=Path("data/raw/prices.parquet"), help="the last run's download")
    ap.add_argument("--no-repro", action="store_true", help="refresh the store only; do not run `dvc repro`")
    return ap.parse_args(argv)


def _from_network(cfg: dict, store: Path) -> tuple[Refresh, Path]:
    path = store_file(store, cfg["source"])
    found = read_store(path)
    stored = None
    if found is not None and covers_start(found[1], cfg["start"]):
        stored = found[0]
    elif found is not None:
        log.warning("%s starts at data.start=%s, after %s: refetching every ticker", path, found[1], cfg["start"])
    fetch = partial(fetch_bars, cfg)
    args = (cfg["start"], cfg["refresh_overlap"], cfg["refresh_tolerance"], cfg["source"])
    return refresh_bars(stored, cfg["tickers"], fetch, *args), path


def _from_folder(cfg: dict, sample_dir: Path, raw: Path) -> Refresh | None:
    """Reread the folder and compare it with the last run's download, bar for bar; None: no earlier run."""
    folder = download(cfg, sample_dir)
    if not raw.exists():
        return None
    frames = {t: g.drop(columns="ticker") for t, g in folder.groupby("ticker", sort=False)}
    last = read_table(raw, COLUMNS)[COLUMNS]

    def fetch(ticker: str, start: str | None) -> pd.DataFrame:
        bars = frames[ticker]
        return bars if start is None else bars[bars["date"] >= pd.Timestamp(start)]

    overlap = max(len(last), 1)  # the whole file is at hand: every bar is compared
    return refresh_bars(last, list(frames), fetch, None, overlap, cfg["refresh_tolerance"], cfg["source"])


def _say(result: Refresh, source: str, where: str) -> None:
    for u in result.updates:
        if u.new or u.refetched:
            log.info(
                "%s: %d new bar(s), last %s (asked from %s%s)",
                u.ticker,
                u.new,
                u.last,
                u.asked_from or "the start",
                f"; refetched in full: {u.refetched}" if u.refetched else "",
            )
    n, last = len(result.updates), max(u.last for u in result.updates)
    if not result.changed:
        print(f"refresh: nothing new from {source} since the last run ({n} tickers, last bar {last}); {where}")
    else:
        new = sum(u.new for u in result.updates)
        revised = [u.ticker for u in result.updates if u.refetched]
        more = f", refetched in full: {', '.join(revised)}" if revised else ""
        print(f"refresh: {new} new bar(s) for {n} tickers from {source}, last bar {last}{more}; {where}")


def _repro(*targets: str) -> None:
    try:
        done = subprocess.run([sys.executable, "-m", "dvc", "repro", *targets], check=False)
    except OSError as exc:
        raise PipelineError(f"refresh: could not run dvc repro ({exc})") from None
    if done.returncode != 0:
        raise PipelineError(f"refresh: dvc repro failed (exit code {done.returncode}); the store is kept")


def main(argv: list[str]) -> None:
    args = _args(argv)
    cfg = load_params()["data"]
    if cfg["source"] in NETWORK_SOURCES:
        result, path = _from_network(cfg, args.store)
        if result.changed:
            write_store(result.bars, path, cfg["start"])
        _say(result, cfg["source"], f"{path} {'written' if result.changed else 'unchanged'}")
    else:
        result = _from_folder(cfg, args.sample_dir, args.raw)
        if result is None:
            print(f"refresh: {cfg['source']} folder read; no earlier run ({args.raw} missing): dvc repro builds all")
        else:
            _say(result, cfg["source"], "the folder is the store (DVC tracks it)")
    if args.no_repro:
        return
    if result is not None:  # the retraining policy moves train.cutoff (or not) before DVC sees the params
        plan_cutoff(str(pd.Timestamp(result.bars["date"].max()).date()))
    _repro(TRACKED)
    import stages.track  # after the orders: this week's ledger entry, drift, live record (imported late: torch)

    stages.track.main([])
    _repro()  # evaluate, which reads the ledger


if __name__ == "__main__":
    run_stage("refresh", main)
