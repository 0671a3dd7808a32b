"""The real DVC pipeline in a temp copy of the repository, on a small config."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, small_params, write_params

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _run(cwd, *cmd, ok=True):
    env = {**os.environ, **GIT_ENV, "PIPELINE_QUIET": "1", "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(list(cmd), check=False, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if ok:
        assert r.returncode == 0, f"{cmd}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("e2e")
    dvc = [sys.executable, "-m", "dvc"]
    _run(repo, "git", "init", "-q")
    _run(repo, *dvc, "init", "-q")
    for item in ("stages", "lib", "data/sample", ".dvc/plots"):
        shutil.copytree(ROOT / item, repo / item, ignore=shutil.ignore_patterns("__pycache__"))
    for item in ("dvc.yaml", ".gitignore"):
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
    for out in ("data/raw/prices.csv", "data/clean/prices.csv", "data/features.csv", "models/final.pt",
                "models/fold_00.pt", "data/predictions.csv", "reports/signal.json", "reports/backtest/equity.csv",
                "reports/backtest/trades.csv", "reports/metrics.json", "reports/plots/equity.png",
                "reports/train/plots/metrics/fold_00/val_loss.tsv", "dvc.lock"):
        assert (path / out).exists(), out
    assert "Data and pipelines are up to date" in _run(path, *dvc, "status").stdout


def test_experiment_reruns_train_onwards_only(repo):
    path, dvc = repo
    r = _run(path, *dvc, "exp", "run", "-S", "model.hidden=4")
    text = r.stdout + r.stderr
    for stage in ("download", "validate", "featurize"):
        assert f"Stage '{stage}' didn't change, skipping" in text, stage
    for stage in ("train", "predict", "backtest", "evaluate"):
        assert f"Running stage '{stage}'" in text, stage
    diff = _run(path, *dvc, "metrics", "diff").stdout
    assert "strategy.total_return" in diff or "strategy.sharpe" in diff


def test_bad_experiment_value_fails_naming_the_key(repo):
    path, dvc = repo
    r = _run(path, *dvc, "exp", "run", "-S", "model.hidden=abc", ok=False)
    assert r.returncode != 0
    assert "model.hidden must be an integer, got 'abc'" in r.stdout + r.stderr


def test_plots_render_with_a_date_axis(repo):
    path, dvc = repo
    _run(path, *dvc, "plots", "show", "-o", "plots_html")
    html = (path / "plots_html" / "index.html").read_text()
    assert '"temporal"' in html and "Equity after costs" in html
