"""Time the data stages (validate, featurize) and their CSV input/output on a real multi-ticker panel.

Developer script, not part of the pipeline. Reads the 402-ticker S&P 500 panel of Yahoo files
(`Date,High,Low,Open,Close,Volume,Adj Close,Name`, dirty on purpose, see ../shared/data/SOURCES.md),
turns it into the pipeline's long table `date,ticker,open,high,low,close,adj_close,volume` and runs,
for the first 50, 100, 200 and 402 tickers (sorted by name), what the stages run:

    write raw CSV -> read_csv + check_schema -> validate_prices (policy repair) -> write clean CSV
    -> read_table -> build_features (default params) -> write features CSV

    python bench/data_stages.py [--universe ../shared/data/universe] [--sizes 50,100,200,402] [--json out.json]

Prints wall time per step, cost per input row (µs/row) and the peak resident memory of the process
during the step (VmHWM, reset before each step; falls back to ru_maxrss, the process peak so far).
`--tracemalloc` also reports Python-level peak allocations per step (slows the steps down).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.features import build_features
from lib.io import read_table, write_csv
from lib.params import load_params
from lib.providers import COLUMNS
from lib.validate import check_schema, validate_prices

YAHOO = {"Date": "date", "Open": "open", "High": "high", "Low": "low", "Close": "close", "Adj Close": "adj_close",
         "Volume": "volume"}


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_mib(resettable: bool) -> float:
    if resettable:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def read_universe(folder: Path, n: int) -> pd.DataFrame:
    """The first `n` tickers' files (sorted by name) as one long table, ticker = file name."""
    files = sorted(folder.glob("*.csv"))[:n]
    if len(files) < n:
        raise SystemExit(f"{folder}: {len(files)} ticker files, {n} asked for")
    parts = []
    for f in files:
        df = pd.read_csv(f).rename(columns=YAHOO)
        parts.append(df.assign(ticker=f.stem)[COLUMNS])
    return pd.concat(parts, ignore_index=True)


def _step(results: list[dict[str, Any]], n: int, rows: int | None, name: str, fn: Callable[[], Any], trace: bool) -> Any:
    resettable = _reset_peak()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    rows = len(out) if rows is None else rows
    row = {"tickers": n, "rows": rows, "step": name, "seconds": round(wall, 4),
           "us_per_row": round(wall / max(rows, 1) * 1e6, 3), "peak_rss_mib": round(_peak_mib(resettable), 1)}
    if trace:
        row["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    results.append(row)
    extra = f"  tracemalloc {row['tracemalloc_peak_mib']:8.1f} MiB" if trace else ""
    print(f"{n:5d} {rows:8d}  {name:16s} {wall:8.3f} s  {row['us_per_row']:8.2f} us/row  "
          f"peak RSS {row['peak_rss_mib']:8.1f} MiB{extra}", flush=True)
    return out


def run(universe: Path, sizes: list[int], trace: bool) -> list[dict[str, Any]]:
    params = load_params(ROOT / "params.yaml")
    vcfg = {**params["validate"], "policy": "repair"}
    fcfg = params["features"]
    results: list[dict[str, Any]] = []
    print(f"{'n':>5s} {'rows':>8s}  {'step':16s} {'wall':>10s}  {'cost':>14s}  peak memory")
    with tempfile.TemporaryDirectory(prefix="bench_data_stages.") as tmp:
        raw_csv, clean_csv, feat_csv = (Path(tmp) / f for f in ("raw.csv", "clean.csv", "features.csv"))
        for n in sizes:
            long = _step(results, n, None, "read universe", lambda n=n: read_universe(universe, n), trace)
            rows = len(long)
            tickers = sorted(long["ticker"].unique())
            _step(results, n, rows, "write raw csv", lambda long=long: write_csv(long, raw_csv), trace)
            raw = _step(results, n, rows, "read raw csv",
                        lambda: check_schema(pd.read_csv(raw_csv, dtype={"ticker": str}), str(raw_csv)), trace)
            clean, findings = _step(results, n, rows, "validate", lambda raw=raw, t=tickers: validate_prices(raw, vcfg, t),
                                    trace)
            _step(results, n, rows, "write clean csv", lambda clean=clean: write_csv(clean, clean_csv), trace)
            clean = _step(results, n, rows, "read clean csv", lambda: read_table(clean_csv, COLUMNS), trace)
            feats = _step(results, n, len(clean), "featurize", lambda clean=clean: build_features(clean, fcfg), trace)
            _step(results, n, len(clean), "write features", lambda feats=feats: write_csv(feats, feat_csv), trace)
            total = sum(r["seconds"] for r in results[-8:] if r["step"] in ("validate", "featurize"))
            print(f"{n:5d} {rows:8d}  validate+featurize {total:.3f} s; {len(findings)} findings, "
                  f"{len(clean)} clean rows, {feats.shape[0]} x {feats.shape[1]} features", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universe", type=Path, default=Path("../shared/data/universe"),
                    help="folder of <TICKER>.csv Yahoo files (default: ../shared/data/universe)")
    ap.add_argument("--sizes", default="50,100,200,402", help="ticker counts, comma-separated")
    ap.add_argument("--tracemalloc", action="store_true", help="also report Python-level peak allocations")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = ap.parse_args()
    if not args.universe.is_dir():
        raise SystemExit(f"{args.universe}: not a folder (pass --universe)")
    print(f"python {platform.python_version()}, pandas {pd.__version__}, {os.cpu_count()} CPU(s), "
          f"{platform.machine()}; universe {args.universe}")
    results = run(args.universe, [int(s) for s in args.sizes.split(",")], args.tracemalloc)
    if args.json:
        args.json.write_text(json.dumps({"platform": platform.platform(), "cpus": os.cpu_count(),
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
