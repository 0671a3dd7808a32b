"""The real stages, in-process and as processes, on a small config: look-ahead, determinism, failures."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.io import atomic_path, read_table, write_table
from tests.helpers import ROOT, run_stages, small_params, stage_commands, write_params

pytestmark = pytest.mark.slow

AFTER_DOWNLOAD = ("validate", "featurize", "train", "predict", "backtest", "evaluate")


def _outputs():
    files = {
        "predictions": "data/predictions.parquet",
        "weights": "reports/backtest/weights.csv",
        "equity": "reports/backtest/equity.csv",
        "baseline_predictions": "data/baseline_predictions.parquet",  # evaluate.baseline_models: ridge, gbm
        "baseline_equity": "reports/backtest/baseline_equity.csv",
    }
    return {name: read_table(path, ["date"]) for name, path in files.items()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """Download once, run the rest; keep the raw prices and the outputs."""
    folder = tmp_path_factory.mktemp("base")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        shutil.copytree(ROOT / "data" / "sample", "data/sample")
        write_params(folder, small_params())
        run_stages("download", *AFTER_DOWNLOAD)
        out = _outputs()
        raw = read_table("data/raw/prices.parquet", ["date"])
        metrics = Path("reports/metrics.json").read_text()
        preds_text = Path("data/predictions.parquet").read_bytes()
        folds = [torch.load(f"models/fold_{i:02d}.pt", weights_only=True)["fold"] for i in range(2)]
    finally:
        os.chdir(cwd)
    return {"folder": folder, "out": out, "raw": raw, "metrics": metrics, "preds_text": preds_text, "folds": folds}


def _rerun_with(folder, raw):
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        write_table(raw, "data/raw/prices.parquet")
        run_stages(*AFTER_DOWNLOAD)
        return _outputs(), Path("reports/metrics.json").read_text(), Path("data/predictions.parquet").read_bytes()
    finally:
        os.chdir(cwd)


def _shift_prices_after(raw, T, seed):
    """Every price after T multiplied by a random path (bounds kept), volume tripled."""
    out = raw.copy()
    later = out["date"] > T
    factor = np.exp(np.random.default_rng(seed).normal(0, 0.02, later.sum()))
    for col in ("open", "high", "low", "close", "adj_close"):
        out.loc[later, col] *= factor
    out.loc[later, "volume"] *= 3
    return out


def test_outputs_cover_the_test_folds(base_run):
    preds = base_run["out"]["predictions"]
    folds = base_run["folds"]
    assert list(preds.columns) == ["date", "ticker", "fold", "prediction", "label"]
    assert preds["date"].min() == pd.Timestamp(folds[0]["test_start"])
    assert preds["date"].max() == pd.Timestamp(folds[1]["test_end"])
    assert sorted(preds["fold"].unique()) == [0, 1] and set(preds["ticker"]) == {"SPY", "TLT"}
    assert preds["prediction"].notna().all()


@pytest.mark.parametrize("which", ["first day of fold 1", "middle of fold 0", "last day of fold 0"])
def test_no_look_ahead_anywhere(base_run, tmp_path, which):
    """Change every price after T: no prediction, weight or equity value dated <= T may change."""
    folds = base_run["folds"]
    dates = base_run["out"]["predictions"]["date"].drop_duplicates().sort_values().reset_index(drop=True)
    first1 = dates[dates == pd.Timestamp(folds[1]["test_start"])].index[0]
    T = {
        "first day of fold 1": dates[first1],
        "middle of fold 0": dates[first1 // 2],
        "last day of fold 0": dates[first1 - 1],
    }[which]
    shutil.copytree(base_run["folder"], tmp_path / "run")
    out, _, _ = _rerun_with(tmp_path / "run", _shift_prices_after(base_run["raw"], T, seed=len(which)))
    for name, base in base_run["out"].items():
        before = base[base["date"] <= T].reset_index(drop=True)
        assert len(before) > 0
        pd.testing.assert_frame_equal(
            before.drop(columns="label", errors="ignore"),
            out[name][out[name]["date"] <= T].reset_index(drop=True).drop(columns="label", errors="ignore"),
            check_exact=True,
            obj=name,
        )
    for name in ("predictions", "equity"):  # the perturbation must bite, or the test proves nothing
        later = T + pd.Timedelta(days=10)
        base = base_run["out"][name]
        assert not base[base["date"] > later].equals(out[name][out[name]["date"] > later]), name


DETERMINISTIC = [
    "models/fold_00.pt",
    "models/fold_01.pt",
    "models/final.pt",
    "reports/train/metrics.json",
    "reports/train/curves.csv",
    "reports/signal.json",
    "reports/backtest/equity.csv",
    "reports/backtest/trades.csv",
    "models/baselines/ridge/fold_00.pt",
    "models/baselines/gbm/fold_01.pt",
    "data/baseline_predictions.parquet",
    "reports/backtest/baseline_equity.csv",
    "reports/plots/drawdown.csv",
    "reports/plots/equity.png",
    "reports/plots/pred_vs_real.png",
]


def test_two_runs_are_bit_identical(base_run, tmp_path):
    """Every output, model files and training metrics included (no timing, no temp-file name inside)."""
    shutil.copytree(base_run["folder"], tmp_path / "run")
    before = {f: (tmp_path / "run" / f).read_bytes() for f in DETERMINISTIC}
    _, metrics, preds = _rerun_with(tmp_path / "run", base_run["raw"])
    assert preds == base_run["preds_text"]
    assert metrics == base_run["metrics"]
    for f in DETERMINISTIC:
        assert (tmp_path / "run" / f).read_bytes() == before[f], f


# The instruction set another CPU would give: torch's and oneDNN's kernels held to a lower ISA, and
# numpy's AVX-512 kernels off (a no-op on a CPU without them). Results agree to these tolerances.
LOWER_ISA = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "NPY_DISABLE_CPU_FEATURES": "AVX512_SPR AVX512_ICL X86_V4",
}
CROSS_CPU_RTOL = {"predictions": 1e-6, "equity": 1e-9, "metrics": 1e-6}


def _numbers(obj, prefix=""):
    """Every number of a metrics file by its dotted key."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _numbers(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _numbers(val, f"{prefix}{i}.").items()}
    return {prefix[:-1]: obj} if isinstance(obj, int | float) and not isinstance(obj, bool) else {}


def test_another_instruction_set_agrees_to_stated_tolerances(base_run, tmp_path):
    """The same run with every kernel held to a lower instruction set (as on another CPU): the bits
    may differ, the results may not: predictions to 1e-6, equity to 1e-9, every metric to 1e-6
    relative (finer than `dvc metrics diff` shows at its default precision)."""
    run = tmp_path / "run"
    shutil.copytree(base_run["folder"], run)
    for name in AFTER_DOWNLOAD:
        result = _stage(name, run, env=LOWER_ISA)
        assert result.returncode == 0, result.stderr
    with_cwd = os.getcwd()
    os.chdir(run)
    try:
        out = _outputs()
        metrics = json.loads(Path("reports/metrics.json").read_text())
    finally:
        os.chdir(with_cwd)
    base = base_run["out"]
    np.testing.assert_allclose(
        out["predictions"]["prediction"],
        base["predictions"]["prediction"],
        rtol=CROSS_CPU_RTOL["predictions"],
        atol=1e-9,
    )
    cols = [c for c in base["equity"].columns if c != "date"]
    np.testing.assert_allclose(out["equity"][cols], base["equity"][cols], rtol=CROSS_CPU_RTOL["equity"])
    ours, theirs = _numbers(metrics), _numbers(json.loads(base_run["metrics"]))
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=CROSS_CPU_RTOL["metrics"], abs=1e-9), key


def test_metrics_lead_with_the_verdict_and_training_keeps_what_users_compare(base_run):
    metrics = json.loads(base_run["metrics"])
    assert list(metrics)[:2] == ["vs_benchmark", "vs_momentum"]
    train = json.loads((base_run["folder"] / "reports/train/metrics.json").read_text())
    assert set(train) == {"fold_00", "fold_01", "final"}
    assert all(set(v) == {"best_val_loss", "best_epoch"} for v in train.values())
    curves = pd.read_csv(base_run["folder"] / "reports/train/curves.csv")
    assert list(curves.columns) == ["model", "epoch", "train_loss", "val_loss", "lr"]
    assert set(curves["model"]) == {"fold_00", "fold_01", "final"} and curves["epoch"].dtype.kind == "i"


def test_signal_says_when_the_orders_execute(base_run):
    sig = json.loads((base_run["folder"] / "reports/signal.json").read_text())
    # the data end on Tuesday 31 December 2019: the orders fill at the next real session, 2 January 2020 (not the
    # weekday 1 January), which is in the same ISO week, so the as-of date is no scheduled weekly rebalance
    assert sig["fill"] == "next_open" and (sig["as_of"], sig["executes"]) == ("2019-12-31", "2020-01-02")
    assert sig["scheduled_rebalance"] is False


def test_train_owns_its_folders(base_run, tmp_path, monkeypatch):
    """Files left by a run with more folds do not survive a new training run."""
    shutil.copytree(base_run["folder"], tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    shutil.copy("models/fold_01.pt", "models/fold_05.pt")
    Path("reports/train/fold_05").mkdir()
    run_stages("train")
    assert sorted(p.name for p in Path("models").glob("*.pt")) == ["final.pt", "fold_00.pt", "fold_01.pt"]
    assert sorted(p.name for p in Path("reports/train").iterdir()) == ["curves.csv", "metrics.json"]


def test_predict_refuses_models_from_another_config_or_data(base_run, tmp_path, monkeypatch):
    from lib.errors import PipelineError

    shutil.copytree(base_run["folder"], tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    shutil.copy("models/fold_01.pt", "models/fold_05.pt")
    with pytest.raises(PipelineError, match=r"model file\(s\) \['fold_05'\] are not from walk_forward.folds=2"):
        run_stages("predict")
    Path("models/fold_05.pt").unlink()
    p = small_params()
    p["model"]["hidden"] = 16
    write_params(Path("."), p)
    with pytest.raises(PipelineError, match="models/fold_00.pt was trained with model.hidden=8 but params.yaml has 16"):
        run_stages("predict")
    write_params(Path("."), small_params())
    features = read_table("data/features.parquet", [])
    write_table(features.assign(rsi=features["rsi"] + 1e-12), "data/features.parquet")
    with pytest.raises(PipelineError, match="models/fold_00.pt was trained on other features"):
        run_stages("predict")


def test_evaluate_writes_all_of_its_outputs_or_none(base_run, tmp_path, monkeypatch):
    from lib.reporting import plots

    shutil.copytree(base_run["folder"], tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    Path("reports/metrics.json").unlink()
    shutil.rmtree("reports/plots")

    def broken(*args, **kwargs):
        raise OverflowError("matplotlib cannot draw this")

    monkeypatch.setattr(plots, "scatter", broken)
    with pytest.raises(OverflowError):
        run_stages("evaluate")
    assert not Path("reports/metrics.json").exists() and not Path("reports/plots").exists()


def test_evaluate_prints_a_short_table_and_the_verdict(base_run, tmp_path, monkeypatch, capsys):
    shutil.copytree(base_run["folder"], tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    run_stages("evaluate")
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["book", "total", "CAGR", "Sharpe", "(p)", "max", "DD", "trades"]
    ic = next(i for i, line in enumerate(lines) if line.startswith("IC "))
    assert [line.split()[0] for line in lines[1:ic]] == ["strategy", "buy-and-hold", "momentum", "ridge", "gbm"]
    assert len({len(line) for line in lines[:ic]}) == 1  # aligned columns, the baseline models' books too
    assert lines[ic + 1].startswith("vs buy-and-hold: ") and lines[-1].startswith("verdict: ")
    assert any(line.startswith("Model Confidence Set") for line in lines)
    assert "80 % probability" in lines[-1]  # the verdict states its power
    assert "e-" not in "\n".join(lines) and all(len(line) < 160 for line in lines[:-1]) and len(lines[-1]) < 260


# ---------------------------------------------------------------------------- failures as a user sees them
def _stage(name, cwd, env=None):
    module, argv = stage_commands()[name]
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=120,
    )


def _setup(workdir, **data):
    p = small_params()
    p["data"].update(data)
    write_params(workdir, p)
    return p


def test_bad_param_stops_before_work(workdir):
    p = small_params()
    p["model"]["hiden"] = 3
    write_params(workdir, p)
    r = _stage("download", workdir)
    assert r.returncode == 1
    assert "error [download]: params.yaml: unknown key(s) ['model.hiden']" in r.stderr
    assert not (workdir / "data" / "raw" / "prices.parquet").exists()


def test_corrupt_csv_and_unknown_ticker(workdir):
    csv = workdir / "mycsv"
    csv.mkdir()
    text = (ROOT / "data" / "sample" / "SPY.csv").read_text().splitlines()
    text[100] = text[100].replace(",", ";", 2)
    (csv / "SPY.csv").write_text("\n".join(text))
    _setup(workdir, source="csv", csv_dir=str(csv), tickers=["SPY"])
    r = _stage("download", workdir)
    assert r.returncode == 1 and "SPY.csv" in r.stderr and "line 101" in r.stderr, r.stderr
    assert not (workdir / "data" / "raw" / "prices.parquet").exists()
    _setup(workdir, tickers=["SPY", "XYZ"])
    r = _stage("download", workdir)
    assert r.returncode == 1 and "ticker XYZ: no file" in r.stderr


def test_nan_in_data_fails_validation_with_report(workdir):
    _setup(workdir)
    assert _stage("download", workdir).returncode == 0
    raw = read_table(workdir / "data/raw/prices.parquet", [])
    raw.loc[40, "close"] = np.nan
    write_table(raw, workdir / "data/raw/prices.parquet")
    r = _stage("validate", workdir)
    assert r.returncode == 1
    assert f"validation failed: {raw.loc[40, 'ticker']} {raw.loc[40, 'date'].date()} close rule=nan" in r.stderr
    assert not (workdir / "data/clean/prices.parquet").exists() and (workdir / "reports/validation.json").exists()


def test_fmp_missing_key_and_network_error_never_leak_the_key(workdir):
    _setup(workdir, source="fmp", retries=1, backoff_s=0.0, timeout_s=2.0)
    env = {k: v for k, v in os.environ.items() if k != "FMP_API_KEY"}
    r = subprocess.run(
        [sys.executable, "-m", "stages.download", *stage_commands()["download"][1]],
        check=False,
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert r.returncode == 1 and "needs an API key: set FMP_API_KEY" in r.stderr
    key = "leaky-key-9876"
    r = _stage("download", workdir, {"FMP_API_KEY": key, "FMP_BASE_URL": "http://127.0.0.1:9"})
    assert r.returncode == 1 and "failed after 2 tries (ConnectionError" in r.stderr
    assert key not in r.stderr + r.stdout
    assert not (workdir / "data/raw/prices.parquet").exists()


def test_missing_model_is_a_clear_error(base_run, tmp_path, monkeypatch):
    from lib.errors import PipelineError

    shutil.copytree(base_run["folder"], tmp_path / "run")
    (tmp_path / "run" / "models" / "final.pt").unlink()
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(PipelineError, match=r"models/final.pt: model not found \(run the train stage\)"):
        run_stages("predict")


def test_atomic_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
