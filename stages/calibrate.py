"""calibrate: does the pipeline say "yes" when an edge is there? Power of the verdict's tests on synthetic data.

Not a DVC stage (a study of the pipeline itself, on data it makes up; nothing of the default run depends on it):

    python -m stages.calibrate [--families lstm,ridge,gbm] [--levels 0.035,0.07] [--seeds 3]
                               [--tickers 150] [--years 5] [--kinds cross_section,time_series]
                               [--jobs 1] [--small] [--out reports] [--work DIR]

For each kind, planted strength (0 and each level: the per-date Rank IC of the signal, `lib.data.synthetic`)
and seed it writes a synthetic universe (cross_section: --tickers x --years of bars with a market factor;
time_series: one asset, --ts-years, levels x --ts-scale), then runs the real stages in-process in a
temporary folder, exactly as dvc.yaml calls them: featurize, then per family train -> predict -> backtest
-> evaluate, with params.yaml's values overridden for the universe (OVERRIDES: the README's universe
settings and cheaper resampling; on a cross-section, labels and features ranked within each date and, for
the neural families, whole dates per batch fit to the per-date IC: IF_PRESENT, NEURAL_OVERRIDES). It never
reads real data.

Writes reports/calibration.json (settings, every run's outcomes, the summary, the acceptance checks, the
wall time), reports/calibration.csv (the summary) and reports/calibration.png (the power curves),
and prints the compact markdown table for the README (the full one per family: calibration.markdown_table).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lib.cli import run_stage, setup_logging
from lib.data import synthetic
from lib.errors import PipelineError
from lib.evaluation import calibration
from lib.evaluation.performance import returns_of
from lib.io import read_table, write_bytes, write_csv, write_json, write_table
from lib.params import NEURAL, load_params, validate_params
from lib.reporting import plots
from lib.schema import ARCHS
from lib.tables import PREDICTIONS, STRATEGY

log = logging.getLogger("calibrate")
ROOT = Path(__file__).resolve().parents[1]
SESSIONS_PER_YEAR = 252
# The README's universe settings ("The S&P 500 universe") and cheaper resampling (no calibrated test uses
# the bootstrap, Monte Carlo or SPA draws); per kind, the rule the data can carry.
OVERRIDES: dict[str, Any] = {
    "walk_forward": {"folds": 4, "test_sessions": 126},
    "model": {"hidden": 32, "layers": 1, "seq_len": 20, "ridge_alpha": 10000.0},
    "train": {"epochs": 4, "patience": 2, "batch_size": 1024, "sample_stride": 5, "final_refit": False},
    # cost_grid_bps [999, 1000]: one re-costed backtest (no edge survives 10 % a side) instead of a grid and a
    # bisection: no calibrated test uses the cost-sensitivity curve
    "evaluate": {
        "permutations": 20,
        "bootstrap_reps": 100,
        "monte_carlo_paths": 100,
        "spa_reps": 100,
        "cost_grid_bps": [999, 1000],
    },
}
KIND_OVERRIDES: dict[str, dict[str, Any]] = {
    "cross_section": {"backtest": {"rule": "rank", "top_k": None, "top_fraction": 0.1, "min_tickers": 10}},
    "time_series": {
        "backtest": {"rule": "threshold"},
        "walk_forward": {"folds": 4, "test_sessions": 252},
        "train": {"sample_stride": 1},  # one asset: every date is a training sample
    },
}
# Set only where params.yaml has the key: a cross-section learnt as Qlib does (per-date rank labels and
# features ranked within each date, so the market's move is in neither); no baseline books inside a run
# (the study runs each family on its own).
IF_PRESENT: dict[str, dict[str, dict[str, Any]]] = {
    "cross_section": {
        "train": {"label_norm": "cs_rank"},
        "features": {"cross_section": "rank", "cross_section_keep_raw": False},
        "evaluate": {"baseline_models": []},
    },
    "time_series": {"evaluate": {"baseline_models": []}},
}
# The neural families on a cross-section: whole dates per batch, fit to the per-date IC (train.loss ic).
NEURAL_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "cross_section": {"train": {"batching": "by_date", "loss": "ic"}},
    "time_series": {},
}
SMALL = {"families": ["ridge"], "levels": [0.1], "seeds": 2, "tickers": 30, "years": 4.0}


def _args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", default="lstm,ridge,gbm", help="comma-separated model.arch values")
    ap.add_argument("--levels", default="0.035,0.07", help="planted per-date Rank ICs beside 0")
    ap.add_argument("--seeds", type=int, default=3, help="universes per level (seeds 0, 1, ...)")
    ap.add_argument("--tickers", type=int, default=150)
    ap.add_argument("--years", type=float, default=5.0, help="sessions = years x 252 (cross_section)")
    ap.add_argument("--kinds", default="cross_section", help="cross_section and/or time_series")
    ap.add_argument("--ts-years", type=float, default=10.0, help="years of the single asset (time_series)")
    ap.add_argument("--ts-scale", type=float, default=4.0, help="time_series levels = levels x this")
    ap.add_argument("--jobs", type=int, default=2, help="universes run at once (processes, 1 torch thread each)")
    ap.add_argument("--small", action="store_true", help=f"a CI-sized study: {SMALL}")
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--work", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.small:
        for key, value in SMALL.items():
            setattr(args, key, ",".join(map(str, value)) if isinstance(value, list) else value)
    args.families = [f.strip() for f in str(args.families).split(",") if f.strip()]
    args.kinds = [k.strip() for k in str(args.kinds).split(",") if k.strip()]
    try:
        args.levels = [float(v) for v in str(args.levels).split(",") if v.strip()]
    except ValueError:
        args.levels = []
    return args


def _check(args: argparse.Namespace) -> None:
    calibration.check_settings(args.seeds, args.levels, args.families, ARCHS)
    if bad := sorted(set(args.kinds) - set(KIND_OVERRIDES)) or not args.kinds:
        raise PipelineError(f"calibrate: --kinds {args.kinds}: unknown {bad}; known: {list(KIND_OVERRIDES)}")
    if args.jobs < 1:
        raise PipelineError(f"calibrate: --jobs must be >= 1, got {args.jobs}")
    sessions = round(args.years * SESSIONS_PER_YEAR)
    need = 400 + OVERRIDES["walk_forward"]["test_sessions"] * OVERRIDES["walk_forward"]["folds"]
    if "cross_section" in args.kinds and (args.tickers < 10 or sessions < need):
        raise PipelineError(
            f"calibrate: --tickers {args.tickers} x --years {args.years:g} is too small to test a cross-section "
            f"(need >= 10 tickers and >= {need / SESSIONS_PER_YEAR:.1f} years)"
        )
    ts = KIND_OVERRIDES["time_series"]["walk_forward"]
    if "time_series" in args.kinds and args.ts_years * SESSIONS_PER_YEAR < 400 + ts["folds"] * ts["test_sessions"]:
        raise PipelineError(f"calibrate: --ts-years {args.ts_years:g} is too short for {ts['folds']} test years")


def _merge(base: dict[str, Any], *layers: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for layer in layers:
        for section, values in layer.items():
            out[section].update(values)
    return out


def run_params(base: dict[str, Any], kind: str, family: str) -> dict[str, Any]:
    """params.yaml's values with the study's overrides for the kind and the family (IF_PRESENT and, for a
    neural family, NEURAL_OVERRIDES where the schema has the key)."""
    p = _merge(base, OVERRIDES, KIND_OVERRIDES[kind], {"model": {"arch": family}, "train": {"threads": 1}})
    extra = [IF_PRESENT[kind], NEURAL_OVERRIDES[kind] if family in NEURAL else {}]
    for section, values in (item for layer in extra for item in layer.items()):
        p[section].update({k: v for k, v in values.items() if k in p[section]})
    return p


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Work in `folder`, with its own trials ledger (never the user's) and the stages' logs quiet."""
    old, ledger, root = Path.cwd(), os.environ.get("PIPELINE_LEDGER"), logging.getLogger()
    level = root.level
    os.chdir(folder)
    os.environ["PIPELINE_LEDGER"] = str(folder / "ledger.jsonl")
    root.setLevel(logging.WARNING)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        os.chdir(old)
        root.setLevel(level)
        if ledger is None:
            os.environ.pop("PIPELINE_LEDGER", None)
        else:
            os.environ["PIPELINE_LEDGER"] = ledger


def _commands() -> dict[str, list[str]]:
    """dvc.yaml's stages after `validate`, in order, as (module, argv): what `dvc repro` runs on clean prices."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    names = list(stages)
    return {n: shlex.split(stages[n]["cmd"])[2:] for n in names[names.index("validate") + 1 :]}


def _stage(argv: list[str]) -> float:
    """One stage in-process in the current folder, its printout swallowed; returns its seconds."""
    import importlib

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        importlib.import_module(argv[0]).main(argv[1:])
    return time.perf_counter() - start


def _universe(kind: str, level: float, seed: int, args: argparse.Namespace) -> pd.DataFrame:
    if kind == "time_series":
        return synthetic.single_asset(round(args.ts_years * SESSIONS_PER_YEAR), level, seed)
    return synthetic.universe(args.tickers, round(args.years * SESSIONS_PER_YEAR), level, seed)


def one_universe(task: tuple[str, float, int, argparse.Namespace, dict[str, Any], Path]) -> list[dict[str, Any]]:
    """Write one synthetic universe, featurize it once, and run train -> evaluate for every family: a
    record per (family, test) with the p-value, the strength, whether it fired and its standard error."""
    kind, level, seed, args, base, work = task
    folder = work / f"{kind}_{level:g}_{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    records, commands = [], _commands()
    with _inside(folder):
        write_table(_universe(kind, level, seed, args), "data/clean/prices.parquet")
        for family in args.families:
            params = run_params(base, kind, family)
            (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            names = list(commands)
            todo = names if family == args.families[0] else names[names.index("train") :]  # features: once
            seconds = {name: round(_stage(commands[name]), 2) for name in todo}
            shutil.copytree("reports", f"runs/{family}/reports", dirs_exist_ok=True)  # kept when --work is given
            records += _records(params, {"kind": kind, "family": family, "level": level, "seed": seed}, seconds)
            log.info("%s level %g seed %d %s: %s", kind, level, seed, family, seconds)
    return records


def _records(params: dict[str, Any], run: dict[str, Any], seconds: dict[str, float]) -> list[dict[str, Any]]:
    """The outcome of each test of the run in the current folder, with its standard error."""
    metrics = json.loads(Path("reports/metrics.json").read_text())
    preds = read_table("data/predictions.parquet", PREDICTIONS)
    equity = pd.read_csv("reports/backtest/equity.csv")
    active = returns_of(equity[STRATEGY].to_numpy()) - returns_of(equity["benchmark"].to_numpy())
    ses = calibration.standard_errors(preds, active, params)
    ses["pooled_ic"] = metrics.get("predictions", {}).get("ic_se")
    outcomes = calibration.outcomes(metrics, params["evaluate"]["alpha"])
    total = round(sum(seconds.values()), 1)
    return [{**run, "test": t, **o, "se": ses.get(t), "seconds": total} for t, o in outcomes.items()]


def _tasks(args: argparse.Namespace, base: dict[str, Any], work: Path) -> list[tuple]:
    out = []
    for kind in args.kinds:
        scale = args.ts_scale if kind == "time_series" else 1.0
        for level in [0.0, *(lv * scale for lv in args.levels)]:
            out += [(kind, level, seed, args, base, work) for seed in range(args.seeds)]
    return out


def _run_all(tasks: list[tuple], jobs: int) -> list[dict[str, Any]]:
    if jobs == 1:
        return [r for t in tasks for r in one_universe(t)]
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=setup_logging) as pool:
        return [r for batch in pool.map(one_universe, tasks) for r in batch]


def main(argv: list[str]) -> None:
    args = _args(argv)
    _check(args)
    base = load_params(ROOT / "params.yaml")
    for kind in args.kinds:  # every run's params valid before any work
        for family in args.families:
            validate_params(run_params(base, kind, family))
    alpha = base["evaluate"]["alpha"]
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="calibrate-")))
        records = _run_all(_tasks(args, base, work.resolve()), args.jobs)
    wall = time.perf_counter() - start
    rows = calibration.summarise(records, alpha)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {
        "settings": {
            **settings,
            "alpha": alpha,
            "overrides": OVERRIDES,
            "kind_overrides": KIND_OVERRIDES,
            "if_present": IF_PRESENT,
            "neural_overrides": NEURAL_OVERRIDES,
        },
        "acceptance": calibration.acceptance(rows, alpha),
        "summary": rows,
        "runs": records,
        "wall_seconds": round(wall, 1),
    }
    png = plots.power_curves(pd.DataFrame(rows), alpha)
    write_json(report, args.out / "calibration.json")
    write_csv(pd.DataFrame(rows), args.out / "calibration.csv")
    write_bytes(png, args.out / "calibration.png")  # not reports/plots/: that folder is an evaluate output
    print(calibration.readme_table(rows))
    print(f"\n{len(records)} outcomes from {len(records) and len({(r['kind'], r['level'], r['seed']) for r in records})}"
          f" universes in {wall:.0f} s; acceptance: {report['acceptance']}")  # fmt: skip


if __name__ == "__main__":
    run_stage("calibrate", main, sys.argv[1:])
