"""Training on the cross-section (issue 17): per-date label normalisation (train.label_norm), whole-date
batches (train.batching by_date), the per-date IC loss (train.loss ic), their params checks, their
determinism, and the look-ahead perturbation tests extended to them."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pandas as pd
import pytest
import torch

from lib.errors import PipelineError
from lib.evaluation.forecast import cross_sectional_ic
from lib.ml.by_date import DateBatches, ic_loss, per_date_ic
from lib.ml.fit import _TorchFit, fit_torch
from lib.ml.folds import Fold, make_folds
from lib.ml.models import LSTMRegressor
from lib.ml.panel import WindowPanel
from lib.ml.trainer import RunCache, TrainJob, resolve_amp, seed_everything, train_fold, train_job
from lib.params import validate_params
from tests.helpers import default_params, gbm_bars, small_params

CPU = torch.device("cpu")
TICKERS = ("A", "B", "C", "D", "E", "F")


def _params(arch: str = "lstm", **train) -> dict:
    p = small_params()
    p["model"].update(arch=arch, hidden=6, layers=1, dropout=0.0, seq_len=5, gbm_max_iter=25, gbm_min_samples_leaf=20)
    p["train"].update(epochs=2, patience=2, batch_size=64, threads=1, **train)
    p["backtest"].update(rule="rank", top_k=2, top_fraction=None)
    return validate_params(p)


@functools.cache
def _bars() -> pd.DataFrame:
    return gbm_bars(420, TICKERS, seed=3)


def _panel(bars: pd.DataFrame, seq_len: int = 5) -> WindowPanel:
    from lib.data.features import build_features

    return WindowPanel.from_frame(build_features(bars, small_params()["features"]), seq_len)


def _fold(bars: pd.DataFrame) -> Fold:
    sessions = pd.DatetimeIndex(bars["date"].unique())
    wf = {**small_params()["walk_forward"], "folds": 1, "test_sessions": 60, "purge": 5, "embargo": 2}
    return make_folds(sessions, sessions[-6], wf)[0]


# ------------------------------------------------------------------------------------ label_norm
def _rows(panel: WindowPanel, fold: Fold) -> tuple[np.ndarray, np.ndarray]:
    fit = panel.rows(fold.fit_start, fold.fit_end, labelled=True, labels_before=fold.val_start)
    val = panel.rows(fold.val_start, fold.val_end, labelled=True, labels_before=fold.labels_before)
    return fit, val


@pytest.mark.parametrize("norm", ["cs_zscore", "cs_rank"])
def test_normalised_labels_have_the_stated_mean_and_variance_per_date(norm):
    """cs_zscore: mean 0, population variance 1 on every date; cs_rank: mean 0, variance 1 - 1/n^2 (n distinct
    labels). Over the fold's fit and val rows only; every other row is 0, and predictions map back as they are."""
    panel = _panel(_bars())
    fit, val = _rows(panel, _fold(_bars()))
    y, mean, std = panel.training_labels(fit, val, norm)
    assert (mean, std) == (0.0, 1.0) and y.dtype == np.float32
    used = np.concatenate([fit, val])
    assert (y[np.setdiff1d(np.arange(len(y)), used)] == 0).all()
    frame = pd.DataFrame({"y": y[used].astype(float), "date": panel.dates[used]})
    stats = frame.groupby("date")["y"].agg(["mean", lambda v: v.var(ddof=0), "size"])
    stats.columns = ["mean", "var", "n"]
    assert (stats["n"] == len(TICKERS)).all()  # the synthetic panel has every ticker on every date
    np.testing.assert_allclose(stats["mean"], 0.0, atol=1e-6)
    expected = 1.0 if norm == "cs_zscore" else 1 - 1 / stats["n"] ** 2
    np.testing.assert_allclose(stats["var"], expected, rtol=1e-5)


def test_label_norm_none_standardises_on_the_fit_rows_as_before():
    panel = _panel(_bars())
    fit, val = _rows(panel, _fold(_bars()))
    y, mean, std = panel.training_labels(fit, val, "none")
    assert mean == pytest.approx(panel.labels[fit].mean()) and std == pytest.approx(panel.labels[fit].std())
    np.testing.assert_array_equal(y, ((np.nan_to_num(panel.labels) - mean) / std).astype(np.float32))


def _universe(seed: int = 0, dates: int = 320, tickers: int = 40, horizon: int = 5) -> pd.DataFrame:
    """A features table where the label is a market-wide move (predictable from the date's `market`
    feature, the same for every ticker) plus a small cross-sectional part carried by `signal`."""
    rng = np.random.default_rng(seed)
    d = pd.bdate_range("2021-01-01", periods=dates)
    market = rng.normal(size=dates)
    move = 0.03 * market + 0.005 * rng.normal(size=dates)
    signal = rng.normal(size=(dates, tickers))
    label = move[:, None] + 0.001 * signal + 0.01 * rng.normal(size=(dates, tickers))  # per-date IC about 0.1
    label[-horizon:] = np.nan
    ends = np.r_[d[horizon:], [pd.NaT] * horizon]
    return pd.DataFrame(
        {
            "date": np.repeat(d, tickers),
            "ticker": np.tile([f"T{i:02d}" for i in range(tickers)], dates),
            "market": np.repeat(market, tickers),
            "signal": signal.ravel(),
            "noise": rng.normal(size=dates * tickers),
            "label": label.ravel(),
            "label_end": np.repeat(pd.DatetimeIndex(ends), tickers),
        }
    )


def _universe_predictions(norm: str) -> pd.DataFrame:
    from lib.ml.trainer import load_checkpoint, predict_rows
    from tests.helpers import save_checkpoint

    frame = _universe()
    panel = WindowPanel.from_frame(frame, 1)
    d = pd.DatetimeIndex(np.unique(panel.dates)).strftime("%Y-%m-%d")
    fold = Fold("fold_00", d[0], d[179], d[185], d[229], d[240], d[314], d[237])
    p = _params("gbm", label_norm=norm)
    p["model"]["seq_len"] = 1
    seed_everything(0, 1)
    ckpt = train_fold(panel, fold, p, CPU, resolve_amp("off", CPU), lambda e: None)
    rows = panel.rows(fold.test_start, fold.test_end, labelled=True)
    save_checkpoint({**ckpt, "params": p, "data_hash": "x"}, path := _tmp_file())
    model, loaded = load_checkpoint(path)
    assert loaded["label_norm"] == norm  # the model file says which space its predictions are in
    pred, _ = predict_rows(model, loaded, panel, rows)
    return pd.DataFrame(
        {"date": panel.dates[rows], "ticker": panel.tickers[rows], "prediction": pred, "label": panel.labels[rows]}
    )


def _tmp_file():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp()) / "fold_00.pt"


def test_gbm_with_cs_rank_predicts_the_cross_section():
    """With the market's move in the raw label, gbm predicts one value per date on many dates (here 60 %
    of the test dates; its per-date Rank IC 0.04, t 1.4); on cs_rank labels its predictions vary within
    every date and rank the tickers: per-date Rank IC positive (0.075), t > 2 (3.7)."""
    pred = _universe_predictions("cs_rank")
    assert (pred.groupby("date")["prediction"].var(ddof=0) > 0).all()
    _, series = cross_sectional_ic(pred, horizon=5, min_cross_section=2)
    ic = series["rank_ic"].to_numpy()
    assert len(ic) == pred["date"].nunique()
    assert ic.mean() > 0 and ic.mean() / ic.std(ddof=1) * np.sqrt(len(ic)) > 2
    raw = _universe_predictions("none")
    assert (raw.groupby("date")["prediction"].var(ddof=0) == 0).mean() > 0.3  # market timing, no cross-section


# ----------------------------------------------------------------------------- no look-ahead
def _with_holes(bars: pd.DataFrame, fold: Fold) -> pd.DataFrame:
    """B misses two sessions 3 sessions before the validation window: its labels there end inside it."""
    sessions = pd.DatetimeIndex(bars["date"].unique())
    at = sessions.get_loc(pd.Timestamp(fold.val_start))
    return bars[~((bars["ticker"] == "B") & bars["date"].isin(sessions[at - 4 : at - 2]))].reset_index(drop=True)


def _moved_after(bars: pd.DataFrame, T: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Every price after T times a random path (OHLC bounds kept), volume tripled (tests/test_pipeline.py)."""
    out = bars.copy()
    later = out["date"] > T
    factor = np.exp(np.random.default_rng(seed).normal(0, 0.02, int(later.sum())))
    for col in ("open", "high", "low", "close", "adj_close"):
        out.loc[later, col] *= factor
    out.loc[later, "volume"] *= 3
    return out


@pytest.mark.parametrize("norm", ["cs_zscore", "cs_rank"])
def test_fit_labels_never_see_a_purged_row_of_their_date(norm):
    """Change every price from the validation window on: the normalised fit labels stay bit-identical,
    although ticker B's purged labels on the last fit dates change (they end inside validation). A
    normalisation over every labelled row of a date would let them in: the check must bite."""
    fold = _fold(_bars())
    bars = _with_holes(_bars(), fold)
    T = pd.Timestamp(fold.val_start) - pd.Timedelta(days=1)
    base, moved = _panel(bars), _panel(_moved_after(bars, T, seed=1))
    fit, val = _rows(base, fold)
    fit2, val2 = _rows(moved, fold)
    np.testing.assert_array_equal(fit, fit2)
    y, y2 = base.training_labels(fit, val, norm)[0], moved.training_labels(fit2, val2, norm)[0]
    np.testing.assert_array_equal(y[fit], y2[fit])
    assert not np.array_equal(y[val], y2[val])
    every = base.rows(fold.fit_start, fold.fit_end, labelled=True)  # no purge: B's late labels too
    assert len(every) > len(fit)
    naive = base.training_labels(every, np.zeros(0, np.int64), norm)[0]
    naive2 = moved.training_labels(every, np.zeros(0, np.int64), norm)[0]
    assert not np.array_equal(naive[fit], naive2[fit])


CASES = {
    "gbm cs_rank": ("gbm", {"label_norm": "cs_rank"}),
    "ridge cs_zscore": ("ridge", {"label_norm": "cs_zscore"}),
    "lstm by_date mse": ("lstm", {"batching": "by_date", "loss": "mse"}),
    "lstm by_date ic cs_rank": ("lstm", {"batching": "by_date", "loss": "ic", "label_norm": "cs_rank"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_predictions_dated_up_to_T_ignore_every_later_price(case):
    """A fold trained on labels realised before its test window; change every price after T, a day
    inside the test window: its predictions dated <= T stay bit-identical, later ones change."""
    arch, train = CASES[case]
    bars, fold = _bars(), _fold(_bars())
    sessions = pd.DatetimeIndex(bars["date"].unique())
    T = sessions[sessions.get_loc(pd.Timestamp(fold.test_start)) + 20]
    p = _params(arch, **train)
    out = []
    for prices in (bars, _moved_after(bars, T, seed=2)):
        panel = _panel(prices)
        seed_everything(0, 1)
        ckpt = train_fold(panel, fold, p, CPU, resolve_amp("off", CPU), lambda e: None)
        out.append(_predict(ckpt, p, panel, fold))
    before, after = (o[o["date"] <= T].reset_index(drop=True) for o in out)
    assert len(before) > 0
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    later = [o[o["date"] > T]["prediction"].to_numpy() for o in out]
    assert not np.array_equal(*later)


def _predict(ckpt: dict, params: dict, panel: WindowPanel, fold: Fold) -> pd.DataFrame:
    from lib.ml.trainer import load_checkpoint, predict_rows
    from tests.helpers import save_checkpoint

    path = _tmp_file()
    save_checkpoint({**ckpt, "params": params, "data_hash": "x"}, path)
    model, loaded = load_checkpoint(path)
    rows = panel.rows(fold.test_start, fold.test_end, labelled=False)
    pred, _ = predict_rows(model, loaded, panel, rows)
    return pd.DataFrame({"date": panel.dates[rows], "ticker": panel.tickers[rows], "prediction": pred})


# ----------------------------------------------------------------------------- by-date batches
def test_by_date_batches_hold_whole_dates_about_batch_size_rows():
    dates = torch.tensor(np.repeat(np.arange(30), 7)[np.random.default_rng(0).permutation(210)])
    rows = torch.arange(1000, 1210)
    full = torch.zeros(1210, dtype=torch.int64)
    full[rows] = dates
    sampler = DateBatches(rows, full, batch_size=20)
    assert sampler.per_batch == 3  # round(20 / 7 rows a date)
    batches = sampler.batches(torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == rows.tolist()  # every row once an epoch
    for b in batches:
        in_batch = set(full[b].tolist())
        assert len(in_batch) <= 3
        for d in in_batch:  # every row of each of its dates
            assert set(b.tolist()) >= set(rows[dates == d].tolist())
    again = sampler.batches(torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))  # seeded
    gen = torch.Generator().manual_seed(0)
    first, second = sampler.batches(gen), sampler.batches(gen)
    assert [full[b[0]].item() for b in first] != [full[b[0]].item() for b in second]  # a fresh order each epoch
    assert DateBatches(rows, full, batch_size=2).per_batch == 1  # at least one whole date


def test_the_fit_loop_steps_over_whole_dates():
    """Each micro-batch of the by_date loop is one batch of whole dates; `accumulate` of them make a step."""
    dates = torch.tensor(np.repeat(np.arange(40), 5))
    x, y = torch.randn(200, 3), torch.randn(200)
    cfg = {**_params()["train"], "batching": "by_date", "batch_size": 10, "accumulate": 3}
    run = _TorchFit(
        LSTMRegressor(3, 4, 1, 0.0), x, y, torch.arange(4, 150), torch.arange(160, 200), 3, cfg,
        resolve_amp("off", CPU), seed=0, n_epochs=1, dates=dates,
    )  # fmt: skip
    steps = list(run._steps())
    seen = torch.cat([rows for rows, _ in steps])
    assert sorted(seen.tolist()) == list(range(4, 150))
    for group, parts in steps:
        assert len(parts) <= 3 and torch.equal(torch.cat([r for r, _ in parts]), group)
        for rows, counted in parts:
            assert counted == len(rows)
            for d in set(dates[rows].tolist()):
                whole = set(range(max(4, 5 * d), min(150, 5 * d + 5)))
                assert set(rows.tolist()) >= whole


# ----------------------------------------------------------------------------- the ic loss
def test_ic_loss_is_minus_the_mean_per_date_pearson_correlation():
    """Dates a (3 rows), b (4 rows), c (1 row: left out), d (constant predictions: left out); rows shuffled."""
    pred = [0.1, 0.5, 0.2, 1.0, -1.0, 0.3, 0.7, 2.0, 0.4, 0.4, 0.4]
    y = [1.0, 2.0, 0.5, 0.2, 0.1, 0.3, -0.4, 5.0, 1.0, 2.0, 3.0]
    day = [0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3]
    ic_a = np.corrcoef(pred[0:3], y[0:3])[0, 1]
    ic_b = np.corrcoef(pred[3:7], y[3:7])[0, 1]
    order = np.random.default_rng(1).permutation(len(pred))
    p = torch.tensor(np.array(pred)[order], requires_grad=True)
    loss = ic_loss(p, torch.tensor(np.array(y)[order]), torch.tensor(np.array(day)[order]))
    assert loss.item() == pytest.approx(-(ic_a + ic_b) / 2, rel=1e-6)
    loss.backward()
    assert torch.isfinite(p.grad).all()
    grad_d = p.grad[torch.tensor(np.array(day)[order]) >= 2]
    assert (grad_d == 0).all()  # the skipped dates get no gradient
    ic, valid = per_date_ic(p.detach(), torch.tensor(np.array(y)[order]), torch.tensor(np.array(day)[order]))
    assert valid.tolist() == [True, True, False, False]
    assert ic[1].item() == pytest.approx(ic_b, rel=1e-6)


def test_ic_loss_moves_predictions_towards_the_per_date_ranking():
    """One gradient step on the ic loss raises the mean per-date correlation (it is differentiable)."""
    gen = torch.Generator().manual_seed(0)
    y, dates = torch.randn(60, generator=gen), torch.arange(60) // 6
    p = torch.randn(60, generator=gen, requires_grad=True)
    before = ic_loss(p, y, dates)
    before.backward()
    with torch.no_grad():
        after = ic_loss(p - 0.5 * p.grad, y, dates)
    assert after < before


def test_early_stopping_with_ic_is_the_mean_ic_over_the_validation_dates():
    """The best validation loss is minus the mean over validation dates of each date's IC over all its rows."""
    gen = torch.Generator().manual_seed(0)
    dates = torch.arange(300) // 6
    x = torch.randn(300, 3, generator=gen)
    y = x[:, 0] + torch.randn(300, generator=gen)
    cfg = {**_params()["train"], "batching": "by_date", "loss": "ic", "batch_size": 24, "epochs": 3, "patience": 3}
    torch.manual_seed(0)
    net = LSTMRegressor(3, 4, 1, 0.0)
    val = torch.arange(200, 300)
    logs = []
    _, best_val, _ = fit_torch(
        net, x, y, torch.arange(4, 180), val, 3, cfg, resolve_amp("off", CPU), "t", logs.append, seed=0, dates=dates
    )
    assert best_val == min(e.val_loss for e in logs) and best_val < 0
    from lib.ml.fit import predict_scaled

    pred = predict_scaled(net, x, val, 3, resolve_amp("off", CPU)).numpy()
    by_date = pd.DataFrame({"d": dates[val].numpy(), "p": pred, "y": y[val].numpy()}).groupby("d")
    expected = -by_date.apply(lambda g: np.corrcoef(g["p"], g["y"])[0, 1]).mean()
    assert best_val == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_ic_on_a_single_ticker_is_one_clear_error():
    cfg = {**_params()["train"], "batching": "by_date", "loss": "ic"}
    with pytest.raises(PipelineError, match="train.loss ic needs dates with at least 2 tickers"):
        fit_torch(
            LSTMRegressor(3, 4, 1, 0.0), torch.randn(50, 3), torch.randn(50), torch.arange(4, 40),
            torch.arange(40, 50), 3, cfg, resolve_amp("off", CPU), "t", lambda e: None, seed=0,
            dates=torch.arange(50),
        )  # fmt: skip


# ----------------------------------------------------------------------------- determinism
def test_by_date_ic_training_is_bit_identical_run_after_run():
    """An LSTM with dropout, whole-date batches and the ic loss on cs_rank labels: the train stage's
    entry twice gives one model file (tests/test_determinism.py holds the stressed version of this)."""
    p = _params("lstm", batching="by_date", loss="ic", label_norm="cs_rank")
    p["model"]["dropout"] = 0.2
    p["model"]["layers"] = 2
    panel, fold = _panel(_bars()), _fold(_bars())
    files = [train_job(TrainJob(panel, fold, p, "data", "cpu", RunCache(None), "[1/1]")).checkpoint for _ in range(2)]
    assert files[0] == files[1]
    other = copy.deepcopy(p)
    other["train"]["seed"] += 1
    assert train_job(TrainJob(panel, fold, other, "data", "cpu", RunCache(None), "[1/1]")).checkpoint != files[0]


# ----------------------------------------------------------------------------- params
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train.label_norm": "cs_rank"}, "backtest.rule threshold .* train.label_norm cs_rank"),
        (
            {"train.label_norm": "cs_zscore", "backtest.rule": "rank", "backtest.top_k": 2, "backtest.sizing": "kelly"},
            "backtest.sizing kelly .* train.label_norm cs_zscore",
        ),
        ({"train.loss": "ic"}, "train.loss ic .* needs train.batching by_date, got 'random'"),
        (
            {"train.loss": "ic", "train.batching": "by_date", "model.arch": "gbm"},
            "train.loss ic .* model.arch is 'gbm'",
        ),
        ({"train.loss": "ic", "train.batching": "by_date", "model.arch": "ridge"}, "model.arch is 'ridge'"),
        ({"train.label_norm": "rank"}, r"train.label_norm must be one of \['none', 'cs_zscore', 'cs_rank'\]"),
        ({"train.batching": "dates"}, r"train.batching must be one of \['random', 'by_date'\]"),
    ],
)
def test_params_errors_name_the_keys(changes, message):
    p = default_params()
    for key, value in changes.items():
        section, name = key.split(".")
        p[section][name] = value
    if p["backtest"]["top_k"] is not None and p["backtest"]["rule"] == "rank":
        p["backtest"]["top_fraction"] = None
    with pytest.raises(PipelineError, match=message) as err:
        validate_params(p)
    assert "\n" not in str(err.value)


def test_the_new_keys_default_to_todays_training():
    t = default_params()["train"]
    assert (t["label_norm"], t["batching"]) == ("none", "random")
    p = default_params()
    p["train"].update(loss="ic", batching="by_date", label_norm="cs_rank")
    p["backtest"].update(rule="rank", top_k=3, top_fraction=None)
    assert validate_params(p)["train"]["loss"] == "ic"


# ----------------------------------------------------------------------------- under torchrun
def _fit_by_date(loss: str) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x, y, dates = torch.randn(120, 3, generator=gen), torch.randn(120, generator=gen), torch.arange(120) // 6
    cfg = {**_params()["train"], "batching": "by_date", "loss": loss, "batch_size": 24, "accumulate": 2, "epochs": 2}
    torch.manual_seed(0)
    net = LSTMRegressor(3, 4, 1, 0.0)
    fit_torch(
        net, x, y, torch.arange(2, 90), torch.arange(90, 120), 3, cfg, resolve_amp("off", CPU), "t", lambda e: None,
        seed=0, dates=dates,
    )  # fmt: skip
    return net.state_dict()


def _by_date_on_rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        for loss in ("mse", "ic"):
            torch.save(_fit_by_date(loss), f"{out}/{loss}{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_by_date_batches_train_data_parallel(tmp_path):
    """Two gloo ranks split each whole-date batch by rows: with mse they follow one process to rounding;
    with ic (each rank's IC over its share of a date's rows) the ranks stay in step."""
    import torch.multiprocessing as mp

    mp.spawn(_by_date_on_rank, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2)
    one = _fit_by_date("mse")
    load = functools.partial(torch.load, weights_only=True)
    for rank in range(2):
        for key, weights in one.items():
            torch.testing.assert_close(load(tmp_path / f"mse{rank}.pt")[key], weights, rtol=0, atol=1e-5)
    ic0, ic1 = load(tmp_path / "ic0.pt"), load(tmp_path / "ic1.pt")
    assert all(torch.equal(ic0[k], ic1[k]) for k in ic0)
