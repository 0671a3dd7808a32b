"""trials: how many experiments stand behind the best Sharpe ratio, and its deflated Sharpe ratio.

Not a DVC stage (it reads the experiment history, which no reproducible stage may depend on):

    python -m stages.trials [--out reports/trials.json] [--exp-json FILE] [--ledger FILE]

Reads `dvc exp show --json --all-commits` (or `--exp-json`, a saved copy) and the ledger that
evaluate appends to (`.trials/ledger.jsonl` of the main repository, or `PIPELINE_LEDGER`), counts
every trial (failed and queued runs too), and writes reports/trials.json and a short table.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from lib.cli import run_stage
from lib.errors import PipelineError
from lib.evaluation.trials import ledger_path, parse_exp_show, read_ledger, summarize, table
from lib.io import write_json


def exp_show() -> list[dict]:
    cmd = ["dvc", "exp", "show", "--json", "--all-commits"]
    try:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise PipelineError("trials: `dvc` not found on PATH") from None
    if r.returncode != 0:
        raise PipelineError(f"trials: `{' '.join(cmd)}` failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout or "[]")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("reports/trials.json"))
    ap.add_argument("--exp-json", type=Path, help="saved `dvc exp show --json` output instead of running dvc")
    ap.add_argument("--ledger", type=Path, help="ledger file (default: .trials/ledger.jsonl of the main repository)")
    args = ap.parse_args(argv)
    entries = json.loads(args.exp_json.read_text()) if args.exp_json else exp_show()
    summary = summarize(parse_exp_show(entries), read_ledger(args.ledger or ledger_path()))
    write_json(summary, args.out)
    print(table(summary))


if __name__ == "__main__":
    run_stage("trials", main, sys.argv[1:])
