"""The model contract: every architecture fits, predicts and round-trips through its file;
schedules, gradient accumulation, ensembles, the final refit, resume after SIGKILL."""

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.errors import PipelineError
from lib.io import read_table
from lib.ml.fit import fit_torch
from lib.ml.folds import Fold
from lib.ml.models import GBMModel, LSTMRegressor, build_net
from lib.ml.panel import WindowPanel
from lib.ml.runtime import resolve_amp, seed_everything
from lib.ml.schedule import Schedule
from lib.ml.trainer import load_checkpoint, predict_rows, train_fold
from lib.params import validate_params
from tests.helpers import (
    ROOT,
    gbm_bars,
    run_stages,
    save_checkpoint,
    small_params,
    stage_commands,
    tool_env,
    write_params,
)

CPU = torch.device("cpu")
ARCHS = ["lstm", "gru", "alstm", "transformer", "ridge", "gbm"]


@pytest.fixture(scope="module")
def panel():
    from lib.data.features import build_features

    p = small_params()
    return WindowPanel.from_frame(build_features(gbm_bars(260, ("A", "B")), p["features"]), p["model"]["seq_len"])


def _fold(name="fold_00"):
    return Fold(name, "2020-05-01", "2020-08-31", "2020-09-09", "2020-10-15", "2020-10-23", "2020-12-31", "2020-10-23")


def _params(**model):
    p = small_params()
    p["model"].update(heads=2, ff_size=16, gbm_max_iter=20, gbm_min_samples_leaf=5, **model)
    p["train"].update(epochs=2)
    return validate_params(p)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_meets_the_contract(arch, panel, tmp_path):
    p = _params(arch=arch)
    seed_everything(0, 1)
    ckpt = train_fold(panel, _fold(), p, CPU, resolve_amp("off", CPU), lambda e: None)
    assert ckpt["arch"] == arch and len(ckpt["members"]) == 1 and math.isfinite(ckpt["best_val_loss"])
    path = tmp_path / "fold_00.pt"
    save_checkpoint({**ckpt, "params": p, "data_hash": "x"}, path)
    model, loaded = load_checkpoint(path)
    rows = panel.rows("2020-10-23", "2020-12-31", labelled=False)
    mean, each = predict_rows(model, loaded, panel, rows)
    assert mean.shape == (len(rows),) and each.shape == (1, len(rows)) and np.isfinite(mean).all()
    assert np.std(mean) > 0
    # the same file loads to the same predictions, byte for byte
    again, _ = predict_rows(*load_checkpoint(path), panel, rows)
    assert np.array_equal(mean, again)


def test_gbm_trees_from_the_file_predict_what_sklearn_predicts():
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))
    X[::17, 2] = np.nan
    y = X[:, 0] - 2 * np.nan_to_num(X[:, 2]) + rng.normal(0, 0.1, 500)
    est = HistGradientBoostingRegressor(max_iter=15, early_stopping=False, random_state=0).fit(X, y)
    m = GBMModel.__new__(GBMModel)
    m.baseline = float(np.ravel(est._baseline_prediction)[0])
    m._set_trees([it[0].nodes for it in est._predictors])
    np.testing.assert_allclose(m.predict(torch.from_numpy(X), torch.arange(500)), est.predict(X), rtol=1e-12)


def test_nets_take_params_by_keyword_and_ignore_other_archs_keys():
    cfg = {**_params()["model"], "arch": "transformer", "hidden": 8, "heads": 2, "ff_size": 12}
    net = build_net(cfg, n_features=5, seq_len=7)
    assert net(torch.zeros(3, 7, 5)).shape == (3,)
    assert build_net({**cfg, "arch": "alstm"}, 5, 7)(torch.zeros(2, 7, 5)).shape == (2,)


def _cfg(**kw):
    return {**_params()["train"], "patience": 100, "grad_clip": 0.0, "loss": "mse", **kw}


def test_gradient_accumulation_equals_the_large_batch():
    """batch 16 x accumulate 4 takes the same optimizer steps as batch 64 (no dropout, mean loss)."""
    torch.manual_seed(0)
    x, y = torch.randn(400, 3), torch.randn(400)
    rows, val = torch.arange(4, 330), torch.arange(330, 400)
    out = []
    for bs, acc in ((64, 1), (16, 4)):
        torch.manual_seed(1)
        net = LSTMRegressor(3, 6, 1, 0.0)
        fit_torch(
            net,
            x,
            y,
            rows,
            val,
            5,
            _cfg(batch_size=bs, accumulate=acc, epochs=2),
            resolve_amp("off", CPU),
            "t",
            lambda e: None,
            seed=3,
        )
        out.append(net.state_dict())
    for k in out[0]:
        torch.testing.assert_close(out[0][k], out[1][k], rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)  # and it is not trivially so: a different batch gives other weights
    net = LSTMRegressor(3, 6, 1, 0.0)
    fit_torch(
        net,
        x,
        y,
        rows,
        val,
        5,
        _cfg(batch_size=16, accumulate=1, epochs=2),
        resolve_amp("off", CPU),
        "t",
        lambda e: None,
        seed=3,
    )
    assert not torch.allclose(net.state_dict()["head.weight"], out[0]["head.weight"], atol=1e-4)


def test_schedules_and_warmup():
    lr = 1e-3
    cos = Schedule(_cfg(lr=lr, epochs=10, lr_schedule="cosine", warmup_epochs=0))
    assert cos.lr(0) == lr and cos.lr(5) == pytest.approx(lr / 2) and cos.lr(9) < lr / 20
    warm = Schedule(_cfg(lr=lr, epochs=10, lr_schedule="constant", warmup_epochs=3))
    assert [warm.lr(e) for e in range(5)] == pytest.approx([lr / 4, lr / 2, 3 * lr / 4, lr, lr])
    one = Schedule(_cfg(lr=lr, epochs=10, lr_schedule="onecycle", warmup_epochs=0))
    rates = [one.lr(e) for e in range(10)]
    assert (
        rates[0] == pytest.approx(lr / 25) and max(rates) == pytest.approx(lr) and rates[-1] == pytest.approx(lr / 1e4)
    )
    assert rates.index(max(rates)) == 3
    plat = Schedule(_cfg(lr=lr, lr_schedule="plateau", plateau_factor=0.5, plateau_patience=2))
    for v in (1.0, 0.9, 0.95, 0.96):
        plat.observe(v)
    assert plat.lr(4) == pytest.approx(lr / 2)
    plat.observe(0.97)
    assert plat.lr(5) == pytest.approx(lr / 2)


def test_ensemble_holds_every_member_and_predicts_their_mean(panel, tmp_path):
    p = _params(ensemble=3)
    logs = []
    ckpt = train_fold(panel, _fold(), p, CPU, resolve_amp("off", CPU), logs.append)
    assert len(ckpt["members"]) == 3 and ckpt["member_seeds"] == [42, 43, 44]
    assert {e.fold for e in logs} == {"fold_00/m0", "fold_00/m1", "fold_00/m2"}
    save_checkpoint({**ckpt, "params": p, "data_hash": "x"}, tmp_path / "f.pt")
    rows = panel.rows("2020-10-23", "2020-12-31", labelled=False)
    mean, each = predict_rows(*load_checkpoint(tmp_path / "f.pt"), panel, rows)
    assert each.shape == (3, len(rows)) and not np.array_equal(each[0], each[1])
    np.testing.assert_allclose(mean, each.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize("arch", ["lstm", "gbm"])
def test_final_refit_reaches_the_last_labelled_date(panel, arch):
    from lib.ml.folds import make_folds

    p = _params(arch=arch)
    labelled = panel.dates[~np.isnan(panel.labels)]
    final = make_folds(
        pd.DatetimeIndex(np.unique(panel.dates)),
        pd.Timestamp(labelled.max()),
        {**p["walk_forward"], "test_sessions": 40},
    )[-1]
    seed_everything(0, 1)
    plain = train_fold(panel, final, p, CPU, resolve_amp("off", CPU), lambda e: None, refit=False)
    refit = train_fold(panel, final, p, CPU, resolve_amp("off", CPU), lambda e: None, refit=True)
    last = str(np.datetime_as_string(labelled.max(), "D"))
    assert refit["final_refit"] and not plain["final_refit"]
    assert refit["trained_on"]["end"] == last and plain["trained_on"]["end"] < final.val_start
    assert refit["trained_on"]["rows"] > plain["n_fit"] + plain["n_val"] - 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("arch", "xgboost", "model.arch must be one of"),
        ("heads", "four", "model.heads must be an integer, got 'four'"),
        ("gbm_learning_rate", "fast", "model.gbm_learning_rate must be a number"),
        ("ensemble", 0, r"model.ensemble must be in \[1, 100\], got 0"),
        ("hidden", 10, r"model.hidden \(10\) must be a multiple of model.heads \(4\)"),
        ("hiden", 3, r"unknown key\(s\) \['model.hiden'\]"),
    ],
)
def test_bad_model_params_name_the_key(key, value, message):
    p = small_params()
    p["model"].update({"heads": 4, "arch": "transformer" if key == "hidden" else "lstm", key: value})
    with pytest.raises(PipelineError, match=message):
        validate_params(p)


def test_unused_arch_keys_are_not_errors():
    p = small_params()
    p["model"].update(arch="ridge", heads=3, hidden=10)  # heads does not divide hidden: only transformer cares
    validate_params(p)


# ------------------------------------------------------------------------ resume after SIGKILL, end to end
def _train_proc(folder):
    module, argv = stage_commands()["train"]
    env = {**tool_env(PIPELINE_QUIET="0"), "CI": ""}
    return subprocess.Popen(
        [sys.executable, "-m", module, *argv],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_training_killed_mid_run_resumes_and_ends_bit_identical(tmp_path, monkeypatch):
    """SIGKILL after the first completed epoch; the rerun resumes there and every output equals an
    uninterrupted run's, byte for byte (dropout on and two members, so RNG state must be restored)."""
    base = tmp_path / "base"
    shutil.copytree(ROOT / "data" / "sample", base / "data" / "sample")
    p = small_params()
    p["model"].update(dropout=0.3, ensemble=2)
    p["train"].update(epochs=4, patience=4)
    write_params(base, p)
    monkeypatch.chdir(base)
    run_stages("download", "validate", "featurize")
    shutil.copytree(base, tmp_path / "killed")

    proc = _train_proc(tmp_path / "killed")
    cache = tmp_path / "killed" / ".cache" / "train"
    deadline = time.monotonic() + 120
    while not list(cache.glob("*/*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(cache.glob("*/*.pt")) and not (tmp_path / "killed" / "models" / "final.pt").exists()
    rerun = _train_proc(tmp_path / "killed")
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "resumed fold_00/m0 at epoch " in err, err
    assert not list(cache.glob("*/*")), "the resume state is removed once every model is written"

    outputs = {}
    for name in ("killed", "base"):
        monkeypatch.chdir(tmp_path / name)
        if name == "base":
            run_stages("train")
        run_stages("predict", "backtest", "evaluate")
        outputs[name] = {
            f: Path(f).read_bytes()
            for f in (
                "data/predictions.parquet",
                "reports/metrics.json",
                "reports/train/metrics.json",
                "reports/train/curves.csv",
                "models/fold_00.pt",
                "models/final.pt",
            )
        }
    for f, data in outputs["base"].items():
        assert outputs["killed"][f] == data, f
    preds = read_table(tmp_path / "base" / "data/predictions.parquet", [])
    assert list(preds.columns) == ["date", "ticker", "fold", "prediction", "label", "member_0", "member_1"]
    np.testing.assert_allclose(preds["prediction"], preds[["member_0", "member_1"]].mean(axis=1), rtol=1e-12)
    card = (tmp_path / "base" / "reports/model_card.md").read_text()
    assert "lstm ensemble of 2" in card and "| fold_01 |" in card and "refit on all labelled rows" in card
