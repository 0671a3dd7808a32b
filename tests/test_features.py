import numpy as np
import pandas as pd
import pytest

from lib.data.features import build_features, feature_columns
from lib.io import read_table
from lib.tables import LABEL, LABEL_END
from tests.golden import GOLDEN, OPT_IN_FEATURES, assert_matches_golden, features_of, sample_prices, stored
from tests.helpers import default_params, frame_sha, gbm_bars, run_stages, write_params


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


# --------------------------------------------------------------------------- golden references
# tests/golden.py: the per-ticker (pre-vectorisation) build_features on the bundled sample, stored
# as tables; compared as values to a stated tolerance, since numpy's SIMD kernels differ by CPU.


def test_stored_goldens_hold_the_first_captured_bits():
    for name, g in GOLDEN.items():
        assert frame_sha(stored(name).drop(columns=LABEL_END)) == g["sha"]


@pytest.mark.parametrize("name", list(GOLDEN))
def test_matches_golden_reference(name):
    prices = sample_prices(name)
    assert frame_sha(prices) == GOLDEN[name]["input_sha"], (
        "the sample input itself changed (lib.data.providers or data/sample)"
    )
    out = features_of(name, prices)
    assert list(out.columns) == golden_columns(GOLDEN[name]["cfg"])
    assert out["date"].dtype == prices["date"].dtype and out["ticker"].dtype == prices["ticker"].dtype
    assert out.index.equals(pd.RangeIndex(len(out)))
    assert_matches_golden(out, name)


def test_golden_comparison_tolerates_cpu_noise_but_not_a_change():
    """Prices moved by a few ulps (the size of the difference between SIMD kernels) still match;
    a real change of one feature's definition (a 1e-6 relative move of one column) does not."""
    prices = sample_prices("default")
    rng = np.random.default_rng(0)
    noisy = prices.copy()
    for col in ("open", "high", "low", "close", "adj_close", "volume"):
        ulps = rng.integers(-4, 5, len(prices))
        noisy[col] = prices[col] * (1.0 + ulps * np.finfo(float).eps)
    out = features_of("default", noisy)
    assert frame_sha(out) != frame_sha(features_of("default", prices))  # the noise did reach the bits
    assert_matches_golden(out, "default")
    out["rvol_21"] *= 1 + 1e-6
    with pytest.raises(AssertionError):
        assert_matches_golden(out, "default")


@pytest.mark.slow
def test_data_stages_through_parquet_give_the_golden_features(workdir):
    """download -> validate -> featurize on the sample, the default params: the golden values
    captured before Parquet (and before vectorisation)."""
    p = default_params()
    assert p["features"] == {**GOLDEN["default"]["cfg"], **OPT_IN_FEATURES}
    assert p["data"]["tickers"] == GOLDEN["default"]["tickers"]
    write_params(workdir, p)
    run_stages("download", "validate", "featurize")
    assert_matches_golden(read_table(workdir / "data/features.parquet", []), "default")


def golden_columns(cfg) -> list[str]:
    cols = [
        "date",
        "ticker",
        *(f"ret_{w}" for w in cfg["return_windows"]),
        *(f"sma_ratio_{w}" for w in cfg["sma_windows"]),
        *(f"ema_ratio_{w}" for w in cfg["ema_windows"]),
        "rsi",
        "macd",
        "macd_signal",
        "macd_hist",
        "bollinger_pctb",
        "atr",
        *(f"rvol_{w}" for w in cfg["vol_windows"]),
        "volume_z",
    ]
    if cfg["calendar"]:
        cols += ["dow_sin", "dow_cos", "month_sin", "month_cos"]
    return [*cols, LABEL, LABEL_END]


def test_label_end_is_the_tickers_own_horizon_th_next_session(cfg):
    """With holes in one ticker, its label ends later in calendar time than the other's."""
    bars = gbm_bars(300, ("A", "B"))
    holes = bars["date"].isin(bars["date"].unique()[[150, 151]]) & (bars["ticker"] == "B")
    out = build_features(bars[~holes], cfg)
    for ticker, g in out.groupby("ticker"):
        dates = bars.loc[~holes & (bars["ticker"] == ticker), "date"].reset_index(drop=True)
        pos = dates.searchsorted(g["date"])
        known = pos + cfg["horizon"] < len(dates)
        expected = dates.reindex(pos[known] + cfg["horizon"]).to_numpy()
        assert (g[LABEL_END].to_numpy()[known] == expected).all() and g[LABEL_END][~known].isna().all()
        assert g[LABEL].notna().to_numpy().tolist() == known.tolist()
