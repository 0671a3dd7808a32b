"""Time the featurize stage on the real S&P 500 panel for each feature set: basic (the default) and alpha158,
and alpha158 normalised per date.

Developer script, not part of the pipeline. It writes a workspace with the universe study's `data` and
`validate` params over the 402-ticker panel (Yahoo files, dirty on purpose, see ../shared/data/SOURCES.md),
runs `stages.download` and `stages.validate` once, then for each case rewrites `features` in its params.yaml
and runs

    python -m stages.featurize   (data/clean/prices.parquet -> data/features.parquet)

in its own process, with the arguments `dvc.yaml` gives it, `--repeat` times: the fastest wall counts (the
slower runs measured the machine's other work), with its CPU time (user + system, from `wait4`) and the peak
resident memory of the stage's process. As a reference in one process it also times
`lib.data.feature_sets.make_features` on the clean table for each case, wall and CPU seconds (CPU time is
less sensitive to other work on the machine), and prints each case's ratio to basic. The machine's load average is printed before and after: on a shared machine, read the
figures with it. Target (issue 17): alpha158 at 402 tickers within 15 s on 2 cores.

    python bench/featurize_speed.py [--universe ../shared/data/universe] [--tickers 402] [--repeat 3]
                                    [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.data_stages import run_stage, stage_argv, stage_usage, workspace
from lib.data.feature_sets import make_features
from lib.io import read_table
from lib.tables import COLUMNS

TARGET_S = 15.0
CASES: dict[str, dict[str, Any]] = {
    "basic": {"set": "basic", "cross_section": "none"},
    "alpha158": {"set": "alpha158", "cross_section": "none"},
    "alpha158+zscore": {"set": "alpha158", "cross_section": "zscore", "cross_section_keep_raw": True},
    "alpha158+rank": {"set": "alpha158", "cross_section": "rank", "cross_section_keep_raw": False},
}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} {five:.1f} {fifteen:.1f} (1, 5, 15 min)"


def _set_features(folder: Path, changes: dict[str, Any]) -> dict[str, Any]:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["features"].update(changes)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params["features"]


def stage_times(folder: Path, cases: list[str], repeat: int) -> dict[str, dict[str, float]]:
    """Each case's featurize stage in its own process: the fastest run's wall and CPU seconds, the largest
    peak RSS (MiB), the output's shape."""
    argv = stage_argv()["featurize"]
    out: dict[str, dict[str, float]] = {}
    for name in cases:
        _set_features(folder, CASES[name])
        runs = [stage_usage(folder, argv) for _ in range(repeat)]
        wall, cpu, _ = min(runs)
        mib = max(r[2] for r in runs)
        rows, cols = read_table(folder / "data/features.parquet", []).shape
        out[name] = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mib": round(mib, 1)}
        out[name] |= {"rows": rows, "cols": cols}
        print(
            f"  stage {name:16s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  {mib:6.0f} MiB  -> {rows} x {cols}", flush=True
        )
    return out


def in_process_times(folder: Path, cases: list[str]) -> dict[str, dict[str, float]]:
    """make_features on the clean table in this process, each case once: wall and CPU seconds."""
    prices = read_table(folder / "data/clean/prices.parquet", COLUMNS)
    base = yaml.safe_load((folder / "params.yaml").read_text())["features"]
    out: dict[str, dict[str, float]] = {}
    for name in cases:
        wall, cpu = time.perf_counter(), time.process_time()
        make_features(prices, {**base, **CASES[name]})
        out[name] = {"wall": round(time.perf_counter() - wall, 3), "cpu": round(time.process_time() - cpu, 3)}
    ref = out[cases[0]]
    for name, t in out.items():
        print(
            f"  in-process {name:16s} wall {t['wall']:6.2f} s  cpu {t['cpu']:6.2f} s  "
            f"({t['wall'] / ref['wall']:.1f}x / {t['cpu'] / ref['cpu']:.1f}x basic)",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universe", type=Path, default=Path("../shared/data/universe"), help="folder of Yahoo files")
    ap.add_argument("--tickers", type=int, default=402, help="the first N tickers by name (default 402)")
    ap.add_argument("--repeat", type=int, default=3, help="stage runs per case; the fastest counts (default 3)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {list(CASES)}; basic first")
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = ap.parse_args()
    if not args.universe.is_dir():
        raise SystemExit(f"{args.universe}: not a folder (pass --universe)")
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown or cases[0] != "basic":
        raise SystemExit(f"--cases: unknown {unknown} or basic not first; known: {list(CASES)}")
    print(f"python {platform.python_version()}, pandas {pd.__version__}, {os.cpu_count()} CPU(s); {_load()}")
    with tempfile.TemporaryDirectory(prefix="bench_featurize.") as tmp:
        folder = Path(tmp)
        rows = workspace(folder, args.universe.resolve(), args.tickers)
        for name in ("download", "validate"):
            run_stage(folder, stage_argv()[name])
        print(f"{args.tickers} tickers, {rows} input rows; featurize, fastest of {args.repeat}:")
        stages = stage_times(folder, cases, args.repeat)
        reference = in_process_times(folder, cases)
    a158 = stages.get("alpha158")
    if a158:
        print(
            f"alpha158 featurize stage {a158['seconds']:.1f} s (target <= {TARGET_S:.0f} s: "
            f"{a158['seconds'] / TARGET_S:.2f} of it), {a158['cpu_seconds']:.1f} CPU s; basic {stages['basic']['seconds']:.1f} s, "
            f"{stages['basic']['cpu_seconds']:.1f} CPU s; {_load()}"
        )
    if args.json:
        result = {"platform": platform.platform(), "cpus": os.cpu_count(), "tickers": args.tickers, "rows": rows}
        result |= {"stage": stages, "in_process": reference, "load_after": os.getloadavg()}
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
