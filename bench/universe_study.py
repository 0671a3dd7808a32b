"""The README's universe study, redone cross-sectionally: 12 real pipeline runs on the 402-ticker panel.

Developer script, not part of the pipeline. Each run is `bench/universe_scaling.py`'s fresh copy of the
pipeline with the study's settings (`UNIVERSE` there) and one family x feature set x labels cell:

* families lstm, gbm, ridge; feature sets `basic` and `alpha158`;
* labels `none` (raw forward returns, raw features) or `cs_rank`, learnt as the calibration learns a
  cross-section (its `IF_PRESENT` and `NEURAL_OVERRIDES`, stages/calibrate.py: per-date rank labels,
  features ranked within each date in place of the raw ones, and for the neural families whole dates per
  batch fit to the per-date IC).

    python bench/universe_study.py [--universe ../shared/data/universe] [--families lstm,gbm,ridge]
                                   [--json bench/results/universe_study.json]

Cells already in --json from an earlier run are kept unless this run redoes them (`--families ridge`
reruns ridge's four). Prints the README's markdown table (per-date Rank IC with its interval and minimum
detectable effect, pooled IC, quantile spread, the long-only book against buy-and-hold and the momentum
baseline, the long-short book, the wall time of the whole run) and writes every run's headline metrics
to --json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.universe_scaling import UNIVERSE, run
from lib.params import NEURAL
from stages.calibrate import IF_PRESENT, NEURAL_OVERRIDES

FEATURE_SETS = ["basic", "alpha158"]
LABELS = ["none", "cs_rank"]
BOOKS = ["strategy", "benchmark", "momentum", "long_short"]
BOOK_KEYS = ["total_return", "sharpe", "sharpe_pvalue", "max_drawdown", "n_trades"]
HEADER = (
    "| family | features | labels | per-date Rank IC (NW t) [95 %] · MDE | pooled IC [95 % bootstrap] "
    "| Q5−Q1 / week (p) | long-only − B&H / yr (p) | − momentum / yr (p) | long-short Sharpe (p) | wall |"
)


def overrides(family: str, features: str, labels: str) -> dict[str, str]:
    """The `--set` values of one cell (YAML text, as bench/universe_scaling.py takes them): no baseline books
    (each family is the book; buy-and-hold and momentum stay), and for `cs_rank` the calibration's settings."""
    out = {"evaluate.baseline_models": "[]", "model.arch": family, "features.set": features}
    if labels == "cs_rank":
        out |= _dotted(IF_PRESENT["cross_section"]) | (
            _dotted(NEURAL_OVERRIDES["cross_section"]) if family in NEURAL else {}
        )
    return out


def _dotted(layer: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {f"{section}.{key}": json.dumps(value) for section, values in layer.items() for key, value in values.items()}


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers the README's table shows, from one run's reports/metrics.json."""
    cs, pooled = metrics["cross_sectional_ic"], metrics["predictions"]
    return {
        "rank_ic": cs["rank_ic_mean"],
        "rank_ic_t_nw": cs["rank_ic_tstat_nw"],
        "rank_ic_dates": cs["n_dates"],
        "rank_ic_mde": metrics["power"]["rank_ic"],
        "pooled_ic": pooled["ic"],
        "pooled_ic_low": metrics["intervals"]["predictions"]["ic"]["low"],
        "pooled_ic_high": metrics["intervals"]["predictions"]["ic"]["high"],
        "spread_week": metrics["quantile_spread"]["mean"],
        "spread_p": metrics["quantile_spread"]["pvalue"],
        "vs_benchmark": metrics["vs_benchmark"]["mean_annual"],
        "vs_benchmark_p": metrics["vs_benchmark"]["pvalue"],
        "vs_momentum": metrics["vs_momentum"]["mean_annual"],
        "vs_momentum_p": metrics["vs_momentum"]["pvalue"],
        "long_short_sharpe": metrics["long_short"]["sharpe"],
        "long_short_p": metrics["long_short"]["sharpe_pvalue"],
        "books": {name: {key: metrics[name][key] for key in BOOK_KEYS} for name in BOOKS},
        "n_predictions": pooled["n"],
        "period": metrics["period"],
    }


def row(cell: dict[str, Any]) -> str:
    """One markdown row (the README's minus signs): the per-date Rank IC's interval is mean ± 1.96 × mean / t_NW."""
    h = cell["headline"]
    ic, t = h["rank_ic"], h["rank_ic_t_nw"]
    half = 1.96 * abs(ic / t) if t else float("nan")
    return (
        f"| {cell['family']} | {cell['features']} | {cell['labels']} "
        f"| {ic:+.3f} ({t:+.2f}) [{ic - half:+.3f}, {ic + half:+.3f}] · {h['rank_ic_mde']:.3f} "
        f"| {h['pooled_ic']:+.3f} [{h['pooled_ic_low']:+.3f}, {h['pooled_ic_high']:+.3f}] "
        f"| {100 * h['spread_week']:+.2f} % ({h['spread_p']:.2f}) "
        f"| {100 * h['vs_benchmark']:+.1f} % ({h['vs_benchmark_p']:.2f}) "
        f"| {100 * h['vs_momentum']:+.1f} % ({h['vs_momentum_p']:.2f}) "
        f"| {h['long_short_sharpe']:+.2f} ({h['long_short_p']:.2f}) | {cell['total_s']:.0f} s |"
    ).replace("-", "−")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--universe", type=Path, default=Path("../shared/data/universe"))
    ap.add_argument("--families", default="lstm,gbm,ridge")
    ap.add_argument("--json", type=Path, default=ROOT / "bench/results/universe_study.json")
    args = ap.parse_args()
    if not args.universe.is_dir():
        raise SystemExit(f"{args.universe}: not a folder (pass --universe)")
    old = json.loads(args.json.read_text())["cells"] if args.json.exists() else []
    cells = {(c["family"], c["features"], c["labels"]): c for c in old}  # a rerun replaces its own cells
    for family, features, labels in itertools.product(args.families.split(","), FEATURE_SETS, LABELS):
        res = run(args.universe.resolve(), 402, UNIVERSE["walk_forward"]["folds"], overrides(family, features, labels))
        cell = {"family": family, "features": features, "labels": labels, "total_s": res["total_s"],
                "seconds": res["seconds"], "headline": headline(res["metrics"])}  # fmt: skip
        cells[family, features, labels] = cell
        print(row(cell), flush=True)
        study = {"cpus": os.cpu_count(), "study": UNIVERSE, "cells": list(cells.values())}
        args.json.write_text(json.dumps(study, indent=2) + "\n")  # after every run: a stopped study keeps its cells
    print(HEADER, "|---" * 10 + "|", *map(row, cells.values()), sep="\n")


if __name__ == "__main__":
    main()
