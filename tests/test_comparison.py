"""The model against its baselines: paired active return and IC difference with intervals over
dates, SPA against all baselines, Hansen's Model Confidence Set over all books."""

import numpy as np
import pandas as pd
import pytest

from lib.evaluation.comparison import ic_difference, model_confidence_set, paired_active, spa_against

N = 1000


def _returns(seed=0, mean=0.0003, sd=0.01):
    return np.random.default_rng(seed).normal(mean, sd, N)


def test_mcs_keeps_only_the_clearly_best_book():
    best, a, b = _returns(1, 0.004), _returns(2, 0.0), _returns(3, 0.0)
    mcs = model_confidence_set({"best": best, "a": a, "b": b}, 0.05, 500, seed=0)
    assert mcs.included == {"best": True, "a": False, "b": False}
    assert mcs.pvalues["best"].value == 1.0 and mcs.pvalues["a"].value <= 0.05 and mcs.pvalues["b"].value <= 0.05
    assert mcs.block_length >= 1 and mcs.reason == ""
    assert model_confidence_set({"best": best, "a": a, "b": b}, 0.05, 500, seed=0) == mcs  # seeded


def test_mcs_keeps_books_it_cannot_tell_apart():
    a, b = _returns(1), _returns(2)
    mcs = model_confidence_set({"a": a, "b": b}, 0.05, 500, seed=0)
    assert mcs.included == {"a": True, "b": True}


def test_two_identical_books_are_both_kept():
    a, worse = _returns(1, 0.003), _returns(2, -0.003)
    mcs = model_confidence_set({"a": a, "copy": a.copy(), "worse": worse}, 0.05, 500, seed=0)
    assert mcs.included == {"a": True, "copy": True, "worse": False}
    assert mcs.pvalues["a"] == mcs.pvalues["copy"] and "copy has a's returns" in mcs.reason
    alone = model_confidence_set({"a": a, "copy": a.copy()}, 0.05, 500, seed=0)
    assert alone.included == {"a": True, "copy": True} and alone.pvalues["a"].value == 1.0


def test_a_book_beaten_by_a_constant_every_day_is_out():
    a = _returns(1)
    mcs = model_confidence_set({"a": a, "up": a + 1e-4}, 0.05, 500, seed=0)
    assert mcs.included == {"a": False, "up": True} and mcs.pvalues["a"].value == 0.0
    assert "a beaten by up by a constant every day" in mcs.reason


def test_mcs_undefined_and_bad_input():
    short = model_confidence_set({"a": np.zeros(2), "b": np.ones(2)}, 0.05, 10, seed=0)
    assert short.pvalues["a"].value is None and "too few days" in short.pvalues["a"].reason
    with pytest.raises(ValueError, match="finite"):
        model_confidence_set({"a": np.array([0.0, np.nan, 0.1])}, 0.05, 10, seed=0)


def test_paired_interval_covers_zero_for_equal_books_and_excludes_it_for_a_shifted_copy():
    a = _returns(1)
    noise = np.random.default_rng(9).normal(0, 0.002, N)
    equal = a + (noise - noise.mean())  # same mean return, other days
    shifted = a - 0.001 + noise  # 0.001 a day less: 25 % a year
    out = paired_active(a, {"same": a.copy(), "equal": equal, "shifted": shifted}, 252, 500, seed=0, alpha=0.05)
    same = out["same"]
    assert same.estimate.value == 0.0 and same.low.value <= 0.0 <= same.high.value
    eq = out["equal"]
    assert eq.estimate.value == pytest.approx(0.0, abs=1e-12) and eq.low.value < 0.0 < eq.high.value
    sh = out["shifted"]
    assert sh.estimate.value == pytest.approx(252 * (0.001 - noise.mean()), rel=1e-9)
    assert 0.0 < sh.low.value < sh.estimate.value < sh.high.value
    assert paired_active(a, {"shifted": shifted}, 252, 500, seed=0, alpha=0.05)["shifted"] == sh  # seeded
    with pytest.raises(ValueError, match="shifted has 999 returns"):
        paired_active(a, {"shifted": shifted[1:]}, 252, 10, seed=0, alpha=0.05)


def _predictions(signal: float, seed: int, n_dates: int = 120, n_tickers: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-01", periods=n_dates)
    label = np.random.default_rng(0).normal(0, 0.02, (n_dates, n_tickers))  # the same labels for every set
    pred = signal * label + rng.normal(0, 0.02, label.shape)
    return pd.DataFrame(
        {
            "date": np.repeat(dates, n_tickers),
            "ticker": np.tile([f"T{i:02d}" for i in range(n_tickers)], n_dates),
            "prediction": pred.ravel(),
            "label": label.ravel(),
        }
    )


def test_ic_difference_paired_by_date():
    good, noise = _predictions(1.0, 1), _predictions(0.0, 2)
    d = ic_difference(good, noise, 10, 500, seed=0, alpha=0.05)
    assert d.estimate.value > 0.5 and 0.0 < d.low.value < d.estimate.value < d.high.value
    same = ic_difference(good, good.copy(), 10, 500, seed=0, alpha=0.05)
    assert same.estimate.value == 0.0 and same.low.value == 0.0 == same.high.value
    few = ic_difference(good, noise[noise["date"] <= noise["date"].iloc[0]], 10, 50, seed=0, alpha=0.05)
    assert few.estimate.value is None and "not on the same rows" in few.estimate.reason


def test_ic_difference_of_few_tickers_is_the_pooled_rank_ic_difference():
    from lib.evaluation.forecast import rank_ic

    good, noise = _predictions(1.0, 1), _predictions(0.0, 2)
    d = ic_difference(good, noise, 10_000, 300, seed=0, alpha=0.05)  # no date has 10,000 tickers
    expected = rank_ic(good["prediction"], good["label"]) - rank_ic(noise["prediction"], good["label"])
    assert d.estimate.value == pytest.approx(expected, abs=1e-12)
    assert 0.0 < d.low.value < d.estimate.value < d.high.value


def test_spa_against_the_baselines():
    base = {"ridge": _returns(2), "gbm": _returns(3)}
    strong = spa_against(_returns(1, 0.003), base, 500, seed=0)
    assert set(strong) == {"vs_ridge", "vs_gbm", "beats_all", "beaten_by_any"}
    assert strong["beats_all"].value < 0.05 and strong["beaten_by_any"].value == 1.0
    weak = spa_against(_returns(1, -0.003), base, 500, seed=0)
    assert weak["beats_all"].value > 0.5 and weak["beaten_by_any"].value < 0.05
