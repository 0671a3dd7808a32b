import numpy as np
import pandas as pd
import pytest
import torch

from lib.ml.folds import Fold
from lib.ml.panel import WindowPanel, windows
from lib.ml.trainer import EpochLog, resolve_amp, seed_everything, train_fold
from tests.helpers import gbm_bars, small_params


def _features():
    from lib.data.features import build_features

    p = small_params()
    return build_features(gbm_bars(260, ("A", "B")), p["features"]), p


def test_windows_gather_the_right_rows():
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    w = windows(x, torch.tensor([4, 9]), 3)
    assert w.shape == (2, 3, 2)
    assert w[0, :, 0].tolist() == [4.0, 6.0, 8.0] and w[1, -1, 1].item() == 19.0


def test_panel_windows_never_cross_tickers():
    feats, _ = _features()
    panel = WindowPanel.from_frame(feats, 10)
    rows = panel.rows("2000-01-01", "2100-01-01", labelled=False)
    starts = rows - 9
    assert (panel.tickers[starts] == panel.tickers[rows]).all()
    assert len(rows) == len(feats) - 2 * 9


def test_amp_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu).name == "float32"
    assert resolve_amp("off", cpu).name == "float32"
    on = resolve_amp("on", cpu)
    assert on.name == "bfloat16" and not on.scaler.is_enabled() and on.loss_scale() == 1.0


def _fold():
    return Fold(
        "fold_00", "2020-05-01", "2020-08-31", "2020-09-09", "2020-10-15", "2020-10-23", "2020-12-31", "2020-10-23"
    )


@pytest.mark.parametrize("amp_mode", ["off", "on"])
def test_train_fold_logs_epochs_and_reloads_best(amp_mode):
    """The mixed-precision path (bfloat16 autocast on CPU) runs end to end on a tiny model."""
    feats, p = _features()
    panel = WindowPanel.from_frame(feats, p["model"]["seq_len"])
    seed_everything(0, 1)
    amp = resolve_amp(amp_mode, torch.device("cpu"))
    logs: list[EpochLog] = []
    ckpt = train_fold(panel, _fold(), p, torch.device("cpu"), amp, logs.append)
    assert [e.epoch for e in logs] == list(range(ckpt["epochs_run"]))
    assert {e.amp_dtype for e in logs} == {amp.name}
    assert ckpt["best_val_loss"] == min(e.val_loss for e in logs)
    assert logs[ckpt["best_epoch"]].val_loss == ckpt["best_val_loss"]
    assert ckpt["fold"]["test_start"] == "2020-10-23" and ckpt["amp_dtype"] == amp.name
    assert all(np.isfinite([e.train_loss, e.samples_per_s, e.lr]).all() for e in logs)


def test_training_is_bit_identical():
    feats, p = _features()
    panel = WindowPanel.from_frame(feats, p["model"]["seq_len"])
    states = []
    for _ in range(2):
        seed_everything(3, 1)
        ckpt = train_fold(
            panel, _fold(), p, torch.device("cpu"), resolve_amp("off", torch.device("cpu")), lambda e: None
        )
        states.append(ckpt["members"][0]["state_dict"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_scaler_is_fitted_on_fit_rows_only():
    feats, p = _features()
    panel = WindowPanel.from_frame(feats, p["model"]["seq_len"])
    fold = _fold()
    scaler = panel.fit_scaler(fold.fit_start, fold.fit_end)
    inside = feats[(feats["date"] >= pd.Timestamp(fold.fit_start)) & (feats["date"] <= pd.Timestamp(fold.fit_end))]
    np.testing.assert_allclose(scaler.mean_, inside[panel.features].mean().to_numpy(), rtol=1e-10)


def test_identical_checkpoints_are_identical_bytes_wherever_saved(tmp_path):
    from tests.helpers import save_checkpoint

    ckpt = {"state_dict": {"w": torch.arange(6.0).reshape(2, 3)}, "params": {"a": 1}, "fold": _fold().as_dict()}
    save_checkpoint(ckpt, tmp_path / "a" / "fold_00.pt")
    save_checkpoint(ckpt, tmp_path / "b" / "final.pt")
    assert (tmp_path / "a" / "fold_00.pt").read_bytes() == (tmp_path / "b" / "final.pt").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a model"])
def test_a_damaged_checkpoint_is_one_clear_error(tmp_path, damage):
    from lib.errors import PipelineError
    from lib.ml.trainer import load_checkpoint
    from tests.helpers import save_checkpoint

    path = tmp_path / "fold_00.pt"
    save_checkpoint({"model": {"arch": "lstm"}, "features": ["a"], "seq_len": 3, "x": torch.zeros(1000)}, path)
    data = path.read_bytes()
    path.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"\x00\x01junk" * 50, "not a model": data}[damage]
    )
    with pytest.raises(PipelineError, match=rf"{path}: not a readable model checkpoint .*rerun the train stage"):
        load_checkpoint(path)


def test_purge_by_label_end_date_on_a_ticker_with_holes():
    """B misses two sessions just before the validation and test windows: its labels there reach
    further ahead in calendar time. No fit label may end inside validation, no training label inside test."""
    from lib.data.features import build_features
    from lib.ml.folds import make_folds

    p = small_params()
    bars = gbm_bars(400, ("A", "B"))
    sessions = pd.DatetimeIndex(bars["date"].unique())
    wf = {**p["walk_forward"], "folds": 1, "test_sessions": 60, "purge": 5, "embargo": 0, "val_fraction": 0.2}
    fold = make_folds(sessions, sessions[-6], wf)[0]
    for boundary in (fold.val_start, fold.test_start):  # two missing days of B, 3 sessions before each window
        at = sessions.get_loc(pd.Timestamp(boundary))
        bars = bars[~((bars["ticker"] == "B") & bars["date"].isin(sessions[at - 4 : at - 2]))]
    panel = WindowPanel.from_frame(build_features(bars, p["features"]), 5)
    fit = panel.rows(fold.fit_start, fold.fit_end, labelled=True, labels_before=fold.val_start)
    val = panel.rows(fold.val_start, fold.val_end, labelled=True, labels_before=fold.labels_before)
    assert panel.label_end[fit].max() < np.datetime64(fold.val_start)
    assert panel.label_end[val].max() < np.datetime64(fold.test_start)
    # the calendar count alone lets B's labels through: the purge by label end is what holds
    by_date = panel.rows(fold.fit_start, fold.fit_end, labelled=True)
    assert panel.label_end[by_date].max() >= np.datetime64(fold.val_start)
    by_date = panel.rows(fold.val_start, fold.val_end, labelled=True)
    assert panel.label_end[by_date].max() >= np.datetime64(fold.test_start)


def test_resume_cache_is_keyed_by_config_and_drops_other_configs(tmp_path):
    from lib.ml.trainer import RunCache

    p = small_params()
    first = RunCache.for_run(tmp_path, p, "abc", "cpu")
    first.folder.mkdir(parents=True)
    assert RunCache.for_run(tmp_path, p, "abc", "cpu").folder == first.folder  # same config: same state
    p["model"]["hidden"] += 1
    other = RunCache.for_run(tmp_path, p, "abc", "cpu")
    assert other.folder != first.folder and not first.folder.exists()  # a stale config's state is gone
    assert RunCache.for_run(tmp_path, p, "abd", "cpu").folder != other.folder  # new data: new key
