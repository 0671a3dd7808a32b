"""docs/deployment.md, tested: every command of its bash blocks runs here, in a copy of the replayed weekly
workspace (tests/test_replay.py), or names the replay test that runs its code path; its orders table is
orders.csv's columns."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from lib.live.ledger import LEDGER
from lib.portfolio.backtest import ORDERS
from tests.helpers import ROOT, tool_env
from tests.test_replay import replayed

pytestmark = pytest.mark.slow

DOC = ROOT / "docs" / "deployment.md"
# Commands that talk to the vendor and run `dvc repro`: the replay test runs their code path week by week
# (stages.refresh with a recorded vendor, then the retraining policy, the stages and stages.track).
COVERED = {
    "python -m stages.refresh": [
        "test_only_new_bars_are_fetched_each_week",
        "test_a_revised_bar_triggers_the_full_refetch_and_its_log_line",
        "test_the_policy_retrains_every_four_weeks_and_the_ledger_names_the_model",
        "test_the_ledger_grows_by_one_entry_a_week_and_never_changes",
    ],
}


@pytest.fixture(scope="session")
def replay(tmp_path_factory):
    return replayed(tmp_path_factory)  # the workspace of tests/test_replay.py, built once per session


def commands() -> list[str]:
    """Each line of the doc's ```bash blocks, without its trailing comment."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def _bash(cmd: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=300, check=False
    )


def test_every_command_runs_or_is_covered_by_the_replay(replay, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(replay["folder"], work)
    for setup in ("git init -q", "git add -A ':!track' && git commit -qm replay"):  # the ledger: not committed yet
        assert _bash(setup, work).returncode == 0
    replay_tests = (ROOT / "tests" / "test_replay.py").read_text()
    ran = []
    for cmd in commands():
        if cmd in COVERED:
            assert all(f"def {name}(" in replay_tests for name in COVERED[cmd]), cmd
            continue
        done = _bash(cmd, work)
        assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
        ran.append((cmd, done.stdout))
    assert len(ran) >= 8
    out = dict(ran)
    cut = next(o for c, o in ran if c.startswith("cut -d,"))
    assert len(cut.splitlines()) == 4 and all(
        line.startswith("10,2024-05-24,2024-05-28,") for line in cut.splitlines()[1:]
    )
    assert "live record: the only untuned period" in next(o for c, o in ran if "d['live']['label']" in c)
    assert "2024-05-24 -> 2024-05-28 scheduled: True" in next(o for c, o in ran if "signal.json" in c)
    assert out["cat broker_orders.csv"].splitlines()[0] == "ticker,side,shares"


def test_the_doc_names_the_ledger_columns_it_cuts_and_the_orders_columns():
    text = DOC.read_text(encoding="utf-8")
    cut = re.search(r"cut -d, -f([\d,-]+) track/ledger.csv \| tail -n 4 +# (.*)", text)
    fields = []
    for part in cut.group(1).split(","):
        lo, _, hi = part.partition("-")
        fields += list(range(int(lo), int(hi or lo) + 1))
    assert [LEDGER[i - 1] for i in fields] == cut.group(2).split(", ")
    table = re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE)
    assert table == ORDERS
