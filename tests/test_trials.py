"""The trials command: every experiment counts (failed and queued too), the ledger outlives deleted
experiments, and the deflated Sharpe ratio falls as trials are added."""

import copy
import itertools
import json
import math
import shutil
import subprocess
import sys

import pytest
import yaml

from lib.evaluation.sharpe import probabilistic_sharpe_ratio
from lib.evaluation.trials import ledger_path, main_repository, parse_exp_show, read_ledger, summarize, table
from tests.helpers import ROOT, synthetic_study, tool_env


def _metrics(sr_annual: float, n: int = 1000) -> dict:
    return {
        "reports/metrics.json": {
            "data": {
                "strategy": {"sharpe": sr_annual},
                "significance": {"sharpe_daily": sr_annual / math.sqrt(252), "n": n, "skew": -0.3, "kurtosis": 5.0},
            }
        }
    }


def _rev(name: str, sr: float | None, error: bool = False) -> dict:
    data = {
        "params": {"params.yaml": {"data": {"evaluate": {"periods_per_year": 252}, "x": name}}},
        "metrics": _metrics(sr) if sr is not None else {},
    }
    return {
        "rev": f"{abs(hash(name)):040d}"[:40],
        "name": name,
        "data": data,
        "error": {"msg": "Experiment run failed", "type": ""} if error else None,
        "experiments": None,
    }


def _exp(name: str, sr: float | None, state: str | None = None, error: bool = False) -> dict:
    executor = None if state is None else {"state": state, "name": "dvc-task", "local": {}}
    return {"revs": [_rev(name, sr, error)], "executor": executor, "name": name}


def _show(exps: list[dict]) -> list[dict]:
    """The shape of `dvc exp show --json` (DVC 3): the workspace, then baselines with their experiments."""
    base = _rev("main", 0.5)
    workspace = copy.deepcopy(base) | {"rev": "workspace", "name": None}
    return [workspace, base | {"experiments": exps}]


def test_main_repository_from_a_dvc_temp_copy(tmp_path, monkeypatch):
    assert main_repository(tmp_path / "repo/.dvc/tmp/exps/tmpab12cd") == (tmp_path / "repo").resolve()
    assert main_repository(tmp_path / "repo/.dvc/tmp/exps/tmpab12cd/sub") == (tmp_path / "repo").resolve()
    assert main_repository(tmp_path / "repo") == (tmp_path / "repo").resolve()
    monkeypatch.setenv("PIPELINE_LEDGER", str(tmp_path / "x.jsonl"))
    assert ledger_path() == tmp_path / "x.jsonl"


def test_every_state_counts_as_a_trial():
    exps = [
        _exp("ok1", 0.9),
        _exp("ok2", 0.2, "success"),
        _exp("bad", None, "failed", error=True),
        _exp("waiting", None, "queued"),
        _exp("busy", None, "running"),
    ]
    trials = parse_exp_show(_show(exps))
    assert [t["state"] for t in trials] == ["success", "success", "success", "failed", "queued", "running"]
    s = summarize(trials, [])
    assert s["n_trials"] == 6 and s["counts"]["failed"] == 1 and s["counts"]["queued"] == 1
    assert s["counts"]["baselines"] == 1 and s["counts"]["workspace"] == 0  # the workspace equals its baseline
    assert s["best"]["name"] == "ok1" and s["best"]["sharpe_annual"] == pytest.approx(0.9)
    assert "trials: 6" in table(s) and "DSR" in table(s)


def test_dsr_falls_as_trials_are_added_and_equals_psr_for_one():
    srs = [1.1, 0.3, -0.2, 0.6, 0.1, 0.9]
    scored = [_exp(f"e{i}", sr) for i, sr in enumerate(srs)]
    # failed and queued runs add trials without adding Sharpe ratios: the variance stays, the DSR falls
    dsrs = [
        summarize(parse_exp_show(_show(scored + [_exp(f"q{j}", None, "queued") for j in range(k)])), [])
        for k in range(0, 30, 3)
    ]
    assert [d["n_trials"] for d in dsrs] == list(range(7, 37, 3))
    values = [d["best"]["dsr"] for d in dsrs]
    assert all(a > b for a, b in itertools.pairwise(values)), values
    assert values[0] < dsrs[0]["best"]["psr"]
    # and with more scored trials of the same spread the best one is deflated further
    more = summarize(parse_exp_show(_show([_exp(f"e{i}", sr) for i, sr in enumerate(srs * 5)])), [])
    assert more["best"]["dsr"] < values[0]
    one = summarize(parse_exp_show(_show([]))[:1], [])
    b = one["best"]
    assert one["n_trials"] == 1 and b["dsr"] == probabilistic_sharpe_ratio(b["sharpe_daily"], b["n"], -0.3, 5.0).value


def test_the_ledger_outlives_deleted_experiments():
    ledger = [
        {
            "params_hash": f"h{i}",
            "sharpe_daily": 0.01 * i,
            "n": 1000,
            "skew": 0.0,
            "kurtosis": 3.0,
            "periods_per_year": 252,
        }
        for i in range(8)
    ]
    ledger.append(dict(ledger[0]))  # the same params run twice: one trial
    s = summarize(parse_exp_show(_show([_exp("kept", 2.0)])), ledger)
    assert s["n_trials"] == 8 and s["sharpe_source"] == "ledger" and s["counts"]["ledger_runs"] == 9
    assert s["best"]["name"] == "kept"  # the best of both sources


def _run(cwd, *cmd, ok=True):
    r = subprocess.run(
        list(cmd), check=False, cwd=cwd, capture_output=True, text=True, timeout=300, env=tool_env(PIPELINE_LEDGER="")
    )
    assert ok is None or (r.returncode == 0) == ok, f"{cmd}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.slow
def test_trials_command_on_a_real_repository_with_experiments(tmp_path):
    """A git+DVC repository with the real evaluate stage on a synthetic study: one experiment run in
    DVC's temp copy (its ledger line must reach the main repository) and one queued; then the trials
    command. (Failed runs only reach `dvc exp show` through the queue's slow worker: mocked above.)"""
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = [sys.executable, "-m", "dvc"]
    _run(repo, "git", "init", "-q")
    _run(repo, *dvc, "init", "-q")
    _run(repo, *dvc, "config", "core.analytics", "false")
    for item in ("stages", "lib", "track"):  # track/ledger.csv: a dependency of evaluate
        shutil.copytree(ROOT / item, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    p = synthetic_study(repo, 0.2, 11, n=300, test=200)
    p["evaluate"].update(permutations=2, bootstrap_reps=10, spa_reps=10, monte_carlo_paths=10)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate": stage}}, sort_keys=False))
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "study")
    _run(repo, *dvc, "exp", "run", "-q", "--temp", "-S", "evaluate.seed=2")
    _run(repo, *dvc, "exp", "run", "-q", "--queue", "-S", "evaluate.seed=3")
    ledger = read_ledger(repo / ".trials/ledger.jsonl")
    assert len(ledger) == 1  # written by the run in .dvc/tmp/exps/<tmp>/, to the main repository
    assert not list((repo / ".dvc/tmp/exps").rglob("ledger.jsonl"))
    r = _run(repo, sys.executable, "-m", "stages.trials")
    out = json.loads((repo / "reports/trials.json").read_text())
    c = out["counts"]
    assert (c["baselines"], c["success"], c["failed"], c["queued"]) == (0, 1, 0, 1), c
    assert out["n_trials"] == 2 and out["best"]["psr"] is not None
    # one scored Sharpe ratio gives no spread of trial Sharpes: the DSR cannot deflate yet, and says so
    assert out["best"]["dsr"] == out["best"]["psr"] and "no variance" in out["reason"]
    assert r.stdout.startswith("trials: 2 ")
