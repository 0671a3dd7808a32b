"""Time the universe study stage by stage, for several ticker counts, fold counts and settings.

Developer script, not part of the pipeline. Each run is a fresh copy of the pipeline (the
committed params.yaml plus the universe study's changes, `UNIVERSE` below and the README's
"S&P 500 universe" section) on the first N tickers of the 402-ticker panel, run with
`dvc repro --single-item <stage>` stage by stage so every stage gets its own wall time.

    python bench/universe_scaling.py --tickers 100,200,402 [--folds 4] [--set train.workers=2 ...] [--json out.json]

Every combination of --tickers, --folds and each --set group (`;`-separated groups, each a
comma-free list of key=value; an empty group is the study as is) is one run. Prints one line
per run: seconds per stage and in all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.repro_time import bench_env, copy_pipeline

STAGES = ["download", "validate", "featurize", "train", "predict", "backtest", "evaluate"]
UNIVERSE: dict[str, dict[str, Any]] = {  # the README's universe study
    "data": {"source": "csv", "csv_dir": "universe", "tickers": ["*"], "start": None},
    "validate": {"policy": "drop"},
    "walk_forward": {"folds": 4, "test_sessions": 126},
    "model": {"hidden": 32, "layers": 1, "seq_len": 20, "ridge_alpha": 10000.0},  # weak signals: shrink hard
    "train": {"epochs": 4, "patience": 2, "batch_size": 1024, "sample_stride": 5, "final_refit": False},
    "backtest": {"rule": "rank", "top_fraction": 0.1, "min_tickers": 50},
    "evaluate": {"permutations": 20},
}


def link_tickers(universe: Path, folder: Path, n: int) -> list[Path]:
    """Symlink the first `n` ticker files of `universe` (sorted by name) into `folder/universe`."""
    files = sorted(universe.glob("*.csv"))[:n]
    if len(files) < n:
        raise SystemExit(f"{universe}: {len(files)} ticker files, {n} asked for")
    (folder / "universe").mkdir(parents=True)
    for f in files:
        (folder / "universe" / f.name).symlink_to(f.resolve())
    return files


def study_params(folder: Path, folds: int, overrides: dict[str, Any]) -> None:
    """Rewrite the copy's params.yaml: the study, `folds` folds, then the overrides (YAML values)."""
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for section, values in UNIVERSE.items():
        params[section].update(values)
    params["walk_forward"]["folds"] = folds
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        params[section][name] = yaml.safe_load(value)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(universe: Path, tickers: int, folds: int, overrides: dict[str, Any]) -> dict[str, Any]:
    env = bench_env()
    with tempfile.TemporaryDirectory(prefix="bench_universe.") as tmp:
        folder = Path(tmp)
        copy_pipeline(folder)
        link_tickers(universe, folder, tickers)
        study_params(folder, folds, overrides)
        seconds = {}
        for stage in STAGES:
            t0 = time.perf_counter()
            r = subprocess.run(
                [sys.executable, "-m", "dvc", "repro", "-q", "--single-item", stage],
                check=False,
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
            )
            seconds[stage] = round(time.perf_counter() - t0, 1)
            if r.returncode != 0:
                raise SystemExit(f"{stage} failed ({tickers} tickers, {folds} folds, {overrides}):\n{r.stderr[-3000:]}")
        metrics = json.loads((folder / "reports/metrics.json").read_text())
    total = round(sum(seconds.values()), 1)
    return {
        "tickers": tickers,
        "folds": folds,
        "overrides": overrides,
        "seconds": seconds,
        "total_s": total,
        "n_predictions": metrics["predictions"]["n"],
        "metrics": metrics,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universe", type=Path, default=Path("../shared/data/universe"))
    ap.add_argument("--tickers", default="402", help="ticker counts, comma-separated")
    folds = str(UNIVERSE["walk_forward"]["folds"])
    ap.add_argument("--folds", default=folds, help=f"walk_forward.folds values, comma-separated (default {folds})")
    ap.add_argument("--set", default="", help="override groups: 'train.workers=1;train.workers=2'")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.universe.is_dir():
        raise SystemExit(f"{args.universe}: not a folder (pass --universe)")
    groups = [dict(kv.split("=", 1) for kv in g.split() if kv) for g in args.set.split(";")]
    print(f"{os.cpu_count()} CPU(s); stages: {' '.join(STAGES)}", flush=True)
    results = []
    for n, folds, overrides in itertools.product(
        [int(t) for t in args.tickers.split(",")], [int(f) for f in args.folds.split(",")], groups
    ):
        res = run(args.universe.resolve(), n, folds, overrides)
        res.pop("metrics")
        results.append(res)
        per_stage = " ".join(f"{s} {v:.0f}" for s, v in res["seconds"].items())
        print(
            f"{n:4d} tickers, {folds} folds {' '.join(f'{k}={v}' for k, v in overrides.items()) or '':18s} "
            f"total {res['total_s']:6.0f} s  ({per_stage})",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"cpus": os.cpu_count(), "study": UNIVERSE, "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
