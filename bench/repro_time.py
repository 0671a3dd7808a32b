"""Time the default `dvc repro` from scratch on the bundled sample (target: <= 5 min on 2 cores, aim 2).

Times the committed configuration (`git show HEAD:params.yaml`), not whatever the working copy's
params.yaml holds, with this interpreter first on PATH (dvc.yaml runs `python -m stages...`).
Runs in a temporary copy of the pipeline so the repository's outputs are untouched:
    python bench/repro_time.py [--runs 3]
Prints the wall time of each run and writes bench/results/repro_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = [
    "stages",
    "lib",
    "data/sample",
    "data/store",
    "data/universe",
    "track",
    ".dvc/plots",
    ".dvc/config",
    "dvc.yaml",
    ".gitignore",
]


def committed_params() -> str:
    """The default configuration: params.yaml as committed at HEAD."""
    return subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def bench_env() -> dict[str, str]:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "PIPELINE_QUIET": "1"}


def copy_pipeline(dest: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True)
    for item in COPY:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dest / item)
    (dest / "params.yaml").write_text(committed_params())
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "bench"], cwd=dest, check=True)  # dvclive needs a commit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    env = bench_env()
    walls = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            copy_pipeline(Path(tmp))
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=tmp, env=env, check=True)
            walls.append(time.perf_counter() - start)
        print(f"run {i + 1}: dvc repro {walls[-1]:.1f} s wall")
    result = {
        "runs_s": [round(w, 2) for w in walls],
        "median_s": round(sorted(walls)[len(walls) // 2], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    out = ROOT / "bench" / "results" / "repro_time.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
