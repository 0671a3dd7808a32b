"""The real DVC pipeline in a temp copy of the repository, on a small config."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, small_params, tool_env, write_params

pytestmark = pytest.mark.slow


def _run(cwd, *cmd, ok=True):
    r = subprocess.run(list(cmd), check=False, cwd=cwd, capture_output=True, text=True, env=tool_env(), timeout=600)
    if ok:
        assert r.returncode == 0, f"{cmd}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("e2e")
    dvc = [sys.executable, "-m", "dvc"]
    _run(repo, "git", "init", "-q")
    _run(repo, *dvc, "init", "-q")
    for item in ("stages", "lib", "data/sample", "data/store", "data/universe", "track", ".dvc/plots"):
        shutil.copytree(ROOT / item, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
    for item in ("dvc.yaml", ".gitignore", ".dvc/config"):
        shutil.copy(ROOT / item, repo / item)
    write_params(repo, small_params())
    _run(repo, *dvc, "config", "core.analytics", "false")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "init")
    _run(repo, *dvc, "repro")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "baseline")
    return repo, dvc


def test_repro_writes_every_output(repo):
    path, dvc = repo
    for out in (
        "data/raw/prices.parquet",
        "data/clean/prices.parquet",
        "data/features.parquet",
        "models/final.pt",
        "models/fold_00.pt",
        "data/predictions.parquet",
        "reports/signal.json",
        "reports/backtest/equity.csv",
        "reports/backtest/trades.csv",
        "reports/metrics.json",
        "reports/plots/equity.png",
        "reports/train/curves.csv",
        "reports/train/metrics.json",
        "dvc.lock",
    ):
        assert (path / out).exists(), out
    assert "Data and pipelines are up to date" in _run(path, *dvc, "status").stdout


def test_experiment_reruns_train_onwards_only(repo):
    path, dvc = repo
    r = _run(path, *dvc, "exp", "run", "-S", "model.hidden=4", "-S", "train.lr=1e-5")  # DVC writes 1e-05 back
    text = r.stdout + r.stderr
    for stage in ("download", "validate", "featurize"):
        assert f"Stage '{stage}' didn't change, skipping" in text, stage
    for stage in ("train", "predict", "backtest", "evaluate"):
        assert f"Running stage '{stage}'" in text, stage
    diff = _run(path, *dvc, "metrics", "diff").stdout
    assert "strategy.total_return" in diff or "strategy.sharpe" in diff


def test_bad_experiment_value_fails_naming_the_key_and_the_documented_recovery_works(repo):
    path, dvc = repo
    r = _run(path, *dvc, "exp", "run", "-S", "model.hidden=abc", ok=False)
    assert r.returncode != 0
    assert "model.hidden must be an integer, got 'abc'" in r.stdout + r.stderr
    readme = (ROOT / "README.md").read_text()
    recovery = (
        "rm -r params.yaml dvc.lock reports && git checkout HEAD -- params.yaml dvc.lock reports\n  && dvc checkout"
    )
    assert recovery in readme
    _run(path, "bash", "-c", recovery.replace("\n ", ""))
    assert "Data and pipelines are up to date" in _run(path, *dvc, "status").stdout
    assert _run(path, "git", "status", "--porcelain").stdout == ""


def test_plots_page_is_utf8_with_one_colour_per_book_and_readable_training_curves(repo):
    path, dvc = repo
    _run(path, *dvc, "plots", "show", "-o", "plots_html")
    html = (path / "plots_html" / "index.html").read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in html and "Equity after costs" in html and '"temporal"' in html
    assert '"color": {"field": "field"' in html  # colour by book, not by revision
    assert '"title": "equity"' in html and '"title": "y"' not in html
    assert "Training curves" in html and '"facet": {"field": "model"' in html and '"format": "d"' in html


def test_users_csv_folder_is_a_dependency(repo, tmp_path):
    """An edited file in data.csv_dir reruns the pipeline (DVC templating puts the folder in deps)."""
    path, dvc = repo
    folder = tmp_path / "mycsv"
    shutil.copytree(ROOT / "data" / "sample", folder)
    p = small_params()
    p["data"].update(source="csv", csv_dir=str(folder))
    write_params(path, p)
    _run(path, *dvc, "repro", "download")
    assert "up to date" in _run(path, *dvc, "status", "download").stdout
    with open(folder / "SPY.csv", "a") as f:
        f.write("2024-09-13,560.0,563.0,559.0,562.0,562.0,1000000\n")
    status = _run(path, *dvc, "status", "download").stdout
    assert "changed deps" in status and str(folder) in status
    write_params(path, small_params())


def test_membership_folder_is_a_dependency(repo):
    """data.membership lives in data/universe/, a dep of predict in dvc.yaml: a new or edited file there
    reruns predict onwards (a null path could not be a dependency), and train stays up to date."""
    path, dvc = repo
    (path / "data/universe/spy.csv").write_text("ticker,start,end\nSPY,2016-01-04,\n")
    status = _run(path, *dvc, "status", "predict").stdout
    assert "changed deps" in status and "data/universe" in status
    assert "up to date" in _run(path, *dvc, "status", "train").stdout
    (path / "data/universe/spy.csv").unlink()
    assert "up to date" in _run(path, *dvc, "status", "predict").stdout


def test_git_ignores_dvc_plots_output():
    assert "dvc_plots/" in (ROOT / ".gitignore").read_text().splitlines()


def test_repro_benchmark_times_the_committed_config_with_this_python(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("repro_time", ROOT / "bench" / "repro_time.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    head = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert bench.committed_params() == head.stdout
    monkeypatch.setenv("PATH", "/nonexistent")
    assert bench.bench_env()["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_remote_round_trip_push_clone_pull_metrics_diff(repo, tmp_path):
    """Share results the DVC way: push to a local-folder remote, clone, pull, compare metrics."""
    path, dvc = repo
    remote = tmp_path / "remote"
    _run(path, *dvc, "remote", "add", "-f", "-d", "shared", str(remote))
    _run(path, *dvc, "push")
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(path), str(clone))
    _run(clone, *dvc, "remote", "add", "-f", "-d", "shared", str(remote))
    _run(clone, *dvc, "pull")
    assert (clone / "models" / "final.pt").read_bytes() == (path / "models" / "final.pt").read_bytes()
    assert "Data and pipelines are up to date" in _run(clone, *dvc, "status").stdout
    assert _run(clone, *dvc, "metrics", "diff").returncode == 0
    _run(path, *dvc, "remote", "remove", "shared")


def test_queued_grid_runs_and_ranks(repo):
    """The README's sweep: queue a two-point grid, run the queue, rank the experiments."""
    path, dvc = repo
    _run(path, *dvc, "exp", "run", "--queue", "-S", "model.hidden=4,6")
    _run(path, *dvc, "queue", "start", "-j", "1")
    deadline = time.time() + 300
    while time.time() < deadline:
        status = _run(path, *dvc, "queue", "status").stdout
        if status.count("Success") + status.count("Failed") >= 2:
            break
        time.sleep(2)
    shown = json.loads(_run(path, *dvc, "exp", "show", "--json", "--sort-by", "vs_benchmark.mean_annual").stdout)
    done = [
        r["data"]
        for b in shown
        for exp in (b.get("experiments") or [])
        for r in exp.get("revs", [])
        if r.get("data") and r["data"].get("metrics") and not r.get("error")
    ]
    hidden = {d["params"]["params.yaml"]["data"]["model"]["hidden"] for d in done}
    logs = "\n".join(p.read_text()[-2000:] for p in (path / ".dvc" / "tmp" / "exps").rglob("*.out"))
    assert {4, 6} <= hidden, f"{hidden}\n{status}\n{logs}"
