"""lib/data/synthetic.py: the planted signal is recovered by an oracle that knows it, strength 0 gives no
signal, the bars are valid, and a seed fixes every byte."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lib.data import synthetic
from lib.data.features import build_features
from lib.data.validation import validate_prices
from lib.evaluation.forecast import cross_sectional_ic, prediction_quality
from lib.evaluation.power import nw_standard_error
from tests.helpers import default_params, frame_sha


def _rank_ic(prices: pd.DataFrame) -> tuple[float, float]:
    """Mean per-date Rank IC of the oracle and its Newey-West standard error (10 lags, as the pipeline's
    test): per date, the Pearson correlation of the ranks across tickers (every ticker has every date)."""
    o = synthetic.oracle_prediction(prices).dropna()
    p, y = (o.pivot(index="date", columns="ticker", values=c).dropna().to_numpy() for c in ("prediction", "label"))
    rp, ry = (stats.rankdata(m, axis=1) for m in (p, y))
    rp, ry = rp - rp.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    x = (rp * ry).sum(1) / np.sqrt((rp**2).sum(1) * (ry**2).sum(1))
    return float(x.mean()), nw_standard_error(x, 10).value


def test_the_vectorised_rank_ic_is_the_pipelines():
    prices = synthetic.universe(20, 120, 0.05, 1)
    _, series = cross_sectional_ic(synthetic.oracle_prediction(prices), 5, 5)
    assert _rank_ic(prices)[0] == pytest.approx(series["rank_ic"].mean(), abs=1e-12)


@pytest.mark.parametrize(("strength", "seed"), [(0.0, 11), (0.035, 12), (0.07, 13)])
def test_oracle_recovers_the_planted_rank_ic(strength, seed):
    """300 tickers x 2,000 sessions: the oracle's mean per-date Rank IC lies within 3.5 standard errors
    (about 0.008) of the planted strength; the error is the sampling noise, not a bias."""
    mean, se = _rank_ic(synthetic.universe(300, 2000, strength, seed))
    assert se < 0.003
    assert abs(mean - strength) < 3.5 * se


def test_the_default_features_carry_the_signal():
    """`ret_5` of lib.data.features (in the default return windows) is the signal the generator plants."""
    params = default_params()["features"]
    assert 5 in params["return_windows"] and params["horizon"] == 5
    prices = synthetic.universe(120, 700, 0.07, 3)
    feats = build_features(prices, params)
    preds = feats[["date", "ticker", "ret_5", "label"]].rename(columns={"ret_5": "prediction"})
    stats, _ = cross_sectional_ic(preds, 5, 5)
    assert 0.04 < stats.values["rank_ic_mean"] < 0.10


def test_single_asset_carries_a_time_series_signal():
    """The pooled IC of one asset's trailing weekly return against the next week's: 0.2 planted."""
    prices = synthetic.single_asset(6000, 0.2, 5)
    assert prices["ticker"].nunique() == 1
    q = prediction_quality(synthetic.oracle_prediction(prices), 5).values
    assert abs(q["ic"] - 0.2) < 3.5 * q["ic_se"]
    null = prediction_quality(synthetic.oracle_prediction(synthetic.single_asset(6000, 0.0, 5)), 5).values
    assert abs(null["ic"]) < 3.5 * null["ic_se"]


def test_bars_are_valid_prices_that_pass_validation():
    prices = synthetic.universe(8, 300, 0.05, 0)
    assert list(prices.columns) == ["date", "ticker", "open", "high", "low", "close", "adj_close", "volume"]
    assert len(prices) == 8 * 300 and prices["date"].nunique() == 300
    assert (prices["high"] >= prices[["open", "close"]].max(axis=1)).all()
    assert (prices["low"] <= prices[["open", "close"]].min(axis=1)).all()
    assert (prices[["open", "high", "low", "close", "volume"]] > 0).all().all()
    params = default_params()
    cfg = {**params["validate"], "policy": "fail"}
    clean, findings = validate_prices(prices, cfg, synthetic.ticker_names(8), params["data"]["calendar"])
    assert findings == [] and len(clean) == len(prices)


def test_market_factor_is_common_and_the_idiosyncratic_part_has_its_volatility():
    prices = synthetic.universe(200, 500, 0.0, 4, market_vol=0.01, idio_vol=0.015)
    r = np.log(prices.pivot(index="date", columns="ticker", values="close")).diff().dropna()
    market = r.mean(axis=1)
    assert market.std() == pytest.approx(math.hypot(0.01, 0.015 / math.sqrt(200)), rel=0.1)
    assert (r.sub(market, axis=0)).std().mean() == pytest.approx(0.015, rel=0.05)


def test_a_seed_fixes_every_byte_and_another_seed_changes_them():
    a, b = synthetic.universe(5, 100, 0.05, 9), synthetic.universe(5, 100, 0.05, 9)
    assert frame_sha(a) == frame_sha(b)
    assert frame_sha(a) != frame_sha(synthetic.universe(5, 100, 0.05, 10))
    assert frame_sha(synthetic.single_asset(100, 0.1, 1)) == frame_sha(synthetic.single_asset(100, 0.1, 1))


def test_oracle_prediction_uses_only_the_past():
    """Changing every price after date T changes no oracle prediction dated <= T (and later ones do)."""
    prices = synthetic.universe(4, 200, 0.05, 2)
    cut = prices["date"].unique()[120]
    later = prices["date"] > cut
    changed = prices.copy()
    changed.loc[later, ["open", "high", "low", "close", "adj_close"]] *= 1.3
    a, b = synthetic.oracle_prediction(prices), synthetic.oracle_prediction(changed)
    early = a["date"] <= cut
    assert np.array_equal(a.loc[early, "prediction"], b.loc[early, "prediction"])
    assert not np.allclose(a.loc[~early, "prediction"].head(40), b.loc[~early, "prediction"].head(40))


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="rank_ic must be in"):
        synthetic.universe(5, 100, 1.0, 0)
    with pytest.raises(ValueError, match="sessions"):
        synthetic.universe(5, 5, 0.0, 0)
    assert synthetic.pearson_for_rank_ic(0.0) == 0.0
    assert synthetic.pearson_for_rank_ic(0.05) == pytest.approx(2 * math.sin(math.pi * 0.05 / 6), abs=1e-15)
