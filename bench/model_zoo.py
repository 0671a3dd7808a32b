"""The six architectures on the default config, one `-S` apart: IC (p), Sharpe after costs, active
return against buy-and-hold (p), and the wall time of train -> evaluate.

Runs in a temporary copy of the pipeline (the committed params), as bench/repro_time.py does:
    python bench/model_zoo.py [--archs lstm gru alstm transformer ridge gbm]
Prints a Markdown table and writes bench/results/model_zoo.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repro_time import ROOT, bench_env, copy_pipeline

ARCHS = ["lstm", "gru", "alstm", "transformer", "ridge", "gbm"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archs", nargs="+", default=ARCHS)
    args = ap.parse_args()
    env, dvc = bench_env(), [sys.executable, "-m", "dvc"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        copy_pipeline(Path(tmp))
        subprocess.run([*dvc, "repro", "-q", "featurize"], cwd=tmp, env=env, check=True)
        for arch in args.archs:
            start = time.perf_counter()
            subprocess.run(
                [*dvc, "exp", "run", "-q", "-S", f"model.arch={arch}"],
                cwd=tmp,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            wall = time.perf_counter() - start
            m = json.loads((Path(tmp) / "reports" / "metrics.json").read_text())
            rows.append(
                {
                    "arch": arch,
                    "ic": m["predictions"]["ic"],
                    "ic_pvalue": m["predictions"]["ic_pvalue"],
                    "sharpe": m["strategy"]["sharpe"],
                    "active_annual": m["vs_benchmark"]["mean_annual"],
                    "active_pvalue": m["vs_benchmark"]["pvalue"],
                    "benchmark_sharpe": m["benchmark"]["sharpe"],
                    "train_to_evaluate_s": round(wall, 1),
                }
            )
            print(f"{arch}: {rows[-1]}", flush=True)
    print("\n| arch | IC (p) | Sharpe after costs | active vs buy-and-hold (p) | train → evaluate |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arch']} | {r['ic']:.3f} ({r['ic_pvalue']:.2f}) | {r['sharpe']:.2f} | "
            f"{100 * r['active_annual']:+.1f} % ({r['active_pvalue']:.2f}) | {r['train_to_evaluate_s']:.0f} s |"
        )
    print(f"| buy-and-hold | | {rows[0]['benchmark_sharpe']:.2f} | | |")
    out = ROOT / "bench" / "results" / "model_zoo.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
