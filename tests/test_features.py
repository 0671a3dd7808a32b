import numpy as np
import pandas as pd
import pytest

from lib.features import LABEL, build_features, feature_columns
from tests.conftest import default_params, gbm_bars


@pytest.fixture
def cfg():
    return default_params()["features"]


def test_no_feature_uses_the_future(cfg):
    """Change every bar after T: every feature dated <= T stays bit-identical."""
    df = gbm_bars(600, ("A", "B"))
    base = build_features(df, cfg)
    T = pd.Timestamp("2021-03-15")
    later = df["date"] > T
    bumped = df.copy()
    rng = np.random.default_rng(1)
    factor = np.exp(rng.normal(0, 0.05, later.sum()))
    for col in ("open", "high", "low", "close", "adj_close"):
        bumped.loc[later, col] *= factor
    bumped.loc[later, "volume"] *= 3
    moved = build_features(bumped, cfg)
    cols = feature_columns(base)
    before = base["date"] <= T
    pd.testing.assert_frame_equal(base.loc[before, cols], moved.loc[moved["date"] <= T, cols])
    assert not base.loc[~before, cols].equals(moved.loc[moved["date"] > T, cols])


def test_features_are_scale_invariant(cfg):
    """Back-adjusted history is rescaled by a constant at each new dividend: nothing may change."""
    df = gbm_bars(400)
    scaled = df.copy()
    scaled[["open", "high", "low", "close", "adj_close"]] *= 0.37
    a, b = build_features(df, cfg), build_features(scaled, cfg)
    cols = [*feature_columns(a), LABEL]
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-9, atol=1e-12)


def test_label_is_forward_log_return_of_adj_close(cfg):
    df = gbm_bars(400)
    out = build_features(df, cfg).set_index("date")
    adj = df.set_index("date")["adj_close"]
    t = out.index[10]
    i = adj.index.get_loc(t)
    assert out.loc[t, LABEL] == pytest.approx(np.log(adj.iloc[i + cfg["horizon"]] / adj.iloc[i]), rel=1e-12)
    assert out[LABEL].isna().sum() == cfg["horizon"]  # the last horizon rows: no label yet


def test_warm_up_rows_dropped_and_windows_from_params(cfg):
    df = gbm_bars(400)
    out = build_features(df, cfg)
    assert len(out) == 400 - max(cfg["sma_windows"]) + 1
    assert not out[feature_columns(out)].isna().any().any()
    cfg.update(sma_windows=[7], return_windows=[3], calendar=False)
    cols = feature_columns(build_features(df, cfg))
    assert "sma_ratio_7" in cols and "ret_3" in cols and "dow_sin" not in cols


def test_known_values(cfg):
    df = gbm_bars(300)
    out = build_features(df, cfg).set_index("date")
    c = df.set_index("date")["adj_close"]
    t = out.index[50]
    assert out.loc[t, "sma_ratio_10"] == pytest.approx(c.loc[:t].iloc[-10:].mean() ** -1 * c[t] - 1, rel=1e-10)
    assert out.loc[t, "ret_21"] == pytest.approx(np.log(c[t] / c.loc[:t].iloc[-22]), rel=1e-12)
    assert -0.5 <= out["rsi"].min() and out["rsi"].max() <= 0.5
    assert out.loc[t, "dow_sin"] == pytest.approx(np.sin(2 * np.pi * t.dayofweek / 5))
