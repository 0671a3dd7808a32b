"""Time the data stages, each run alone as the pipeline runs it, on the real S&P 500 panel.

Developer script, not part of the pipeline. For the first 50, 100, 200 and 402 tickers of the
402-ticker panel (sorted by name; Yahoo files, dirty on purpose, see ../shared/data/SOURCES.md),
it writes a workspace with the universe study's `data` and `validate` params (source csv,
tickers ["*"], policy drop) and the default features, then runs

    python -m stages.download   (CSV files -> data/raw/prices.parquet)
    python -m stages.validate   (-> data/clean/prices.parquet, reports/validation.json)
    python -m stages.featurize  (-> data/features.parquet)

each in its own process, with the arguments `dvc.yaml` gives them, `--repeat` times (the fastest
run counts: the slower ones measured the machine's other work). For each stage it prints the
wall time (interpreter start, imports and file I/O included), the cost per input row and the
peak resident memory of the stage's process (`ru_maxrss` from `wait4`), and it fits
wall = start-up + cost x rows over the sizes: linear scaling is a constant cost per row with
small deviations from the line. Targets (issue 11), for 402 tickers on 2 cores: download +
validate + featurize <= 15 s and each stage <= 2 GB.

As a reference in the same process it also times writing and reading the 402-ticker features
table as CSV (the format before Parquet) and as Parquet, and prints the ratio.

    python bench/data_stages.py [--universe ../shared/data/universe] [--sizes 50,100,200,402] [--repeat 3]
                                [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.universe_scaling import UNIVERSE, link_tickers
from lib.io import read_table, write_csv, write_table
from lib.params import load_params

STAGES = ["download", "validate", "featurize"]
TARGET_S, TARGET_MIB = 15.0, 2048.0


def stage_argv() -> dict[str, list[str]]:
    """Each data stage's command line, from dvc.yaml."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stages[name]["cmd"].split() for name in STAGES}


def workspace(folder: Path, universe: Path, n: int) -> int:
    """A folder holding params.yaml and the first `n` ticker files; returns their total data rows."""
    files = link_tickers(universe, folder, n)
    params = load_params(ROOT / "params.yaml")
    for section in ("data", "validate"):
        params[section].update(UNIVERSE[section])
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return sum(sum(1 for _ in f.open()) - 1 for f in files)


def run_stage(folder: Path, argv: list[str]) -> tuple[float, float]:
    """Run one stage in its own process; (wall seconds, peak RSS MiB of that process)."""
    wall, _, mib = stage_usage(folder, argv)
    return wall, mib


def stage_usage(folder: Path, argv: list[str]) -> tuple[float, float, float]:
    """Run one stage in its own process; (wall seconds, CPU seconds, peak RSS MiB) of that process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *argv[1:]], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[2]} failed:\n{proc.stderr.read().decode()}")
    proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # KiB on Linux


def format_reference(features: Path) -> dict[str, float]:
    """Seconds to write and read the features table as CSV and as Parquet (same process)."""
    df = read_table(features, [])
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_format.") as tmp:
        for fmt in ("csv", "parquet"):
            path = Path(tmp) / f"features.{fmt}"
            t0 = time.perf_counter()
            write_table(df, path) if fmt == "parquet" else write_csv(df, path)
            out[f"write_{fmt}"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            read_table(path, [])
            out[f"read_{fmt}"] = time.perf_counter() - t0
            out[f"mib_{fmt}"] = path.stat().st_size / 2**20
    return out


def run(universe: Path, sizes: list[int], repeat: int) -> dict[str, Any]:
    argv = stage_argv()
    results: list[dict[str, Any]] = []
    reference: dict[str, float] = {}
    print(f"{'tickers':>7s} {'rows':>8s}  {'stage':10s} {'wall':>8s}  {'cost':>12s}  {'peak RSS':>10s}")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench_data_stages.") as tmp:
            folder = Path(tmp)
            rows = workspace(folder, universe, n)
            for name in STAGES:  # each stage `repeat` times in a row: the fastest wall, the largest peak
                walls, mibs = zip(*(run_stage(folder, argv[name]) for _ in range(repeat)), strict=True)
                wall, mib = min(walls), max(mibs)
                results.append(
                    {
                        "tickers": n,
                        "rows": rows,
                        "stage": name,
                        "seconds": round(wall, 3),
                        "us_per_row": round(wall / rows * 1e6, 3),
                        "peak_rss_mib": round(mib, 1),
                    }
                )
                print(
                    f"{n:7d} {rows:8d}  {name:10s} {wall:7.2f}s  {wall / rows * 1e6:7.2f} us/row  {mib:7.0f} MiB",
                    flush=True,
                )
            total = sum(r["seconds"] for r in results[-len(STAGES) :])
            peak = max(r["peak_rss_mib"] for r in results[-len(STAGES) :])
            print(
                f"{n:7d} {rows:8d}  {'total':10s} {total:7.2f}s  {total / rows * 1e6:7.2f} us/row  {peak:7.0f} MiB",
                flush=True,
            )
            if n == max(sizes):
                reference = format_reference(folder / "data/features.parquet")
    largest = [r for r in results if r["tickers"] == max(sizes)]
    total = sum(r["seconds"] for r in largest)
    peak = max(r["peak_rss_mib"] for r in largest)
    print(
        f"\n{max(sizes)} tickers: download + validate + featurize {total:.1f} s (target <= {TARGET_S:.0f} s: "
        f"{total / TARGET_S:.2f} of it), peak {peak:.0f} MiB (target <= {TARGET_MIB:.0f}: {peak / TARGET_MIB:.2f})"
    )
    print("linear scaling, least squares wall = start-up + cost x rows over the sizes:")
    for name in STAGES:
        rows = np.array([r["rows"] for r in results if r["stage"] == name], dtype=float)
        wall = np.array([r["seconds"] for r in results if r["stage"] == name])
        cost, fixed = np.polyfit(rows, wall, 1) if len(rows) > 1 else (wall[0] / rows[0], 0.0)
        worst = np.max(np.abs(fixed + cost * rows - wall) / wall)
        print(
            f"  {name:10s} start-up {fixed:5.2f} s + {cost * 1e6:5.2f} us/row; largest deviation from the line "
            f"{worst:.0%}"
        )
    print(
        f"features table, {max(sizes)} tickers: write CSV {reference['write_csv']:.2f} s vs Parquet "
        f"{reference['write_parquet']:.2f} s ({reference['write_csv'] / reference['write_parquet']:.0f}x); read CSV "
        f"{reference['read_csv']:.2f} s vs Parquet {reference['read_parquet']:.2f} s "
        f"({reference['read_csv'] / reference['read_parquet']:.0f}x); {reference['mib_csv']:.0f} MiB vs "
        f"{reference['mib_parquet']:.0f} MiB"
    )
    return {"results": results, "format_reference": {k: round(v, 3) for k, v in reference.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--universe",
        type=Path,
        default=Path("../shared/data/universe"),
        help="folder of <TICKER>.csv Yahoo files (default: ../shared/data/universe)",
    )
    ap.add_argument("--sizes", default="50,100,200,402", help="ticker counts, ascending, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each stage; the fastest counts (default 3)")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = ap.parse_args()
    if not args.universe.is_dir():
        raise SystemExit(f"{args.universe}: not a folder (pass --universe)")
    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, {os.cpu_count()} CPU(s), "
        f"{platform.machine()}; universe {args.universe}"
    )
    out = run(args.universe.resolve(), [int(s) for s in args.sizes.split(",")], args.repeat)
    if args.json:
        args.json.write_text(
            json.dumps({"platform": platform.platform(), "cpus": os.cpu_count(), **out}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
