import copy

import numpy as np
import pandas as pd
import pytest

from lib.features import build_features, feature_columns
from lib.io import read_table
from lib.providers import download
from lib.tables import LABEL, LABEL_END
from tests.helpers import ROOT, default_params, frame_sha, gbm_bars, run_stages, write_params


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
# Captured from the per-ticker (pre-vectorisation) build_features on the bundled sample: the
# vectorised code must give the same bits (every float exactly equal, same columns and order).
SAMPLE = ROOT / "data" / "sample"
DEFAULT_FEATURES = {  # params.yaml's features section when the goldens were captured (pinned here)
    "horizon": 5, "return_windows": [1, 5, 10, 21, 63], "sma_windows": [10, 50, 200], "ema_windows": [12, 26],
    "rsi_window": 14, "macd_fast": 12, "macd_slow": 26, "macd_signal": 9, "bollinger_window": 20,
    "bollinger_k": 2.0, "atr_window": 14, "vol_windows": [5, 21, 63], "volume_window": 21, "calendar": True}
OTHER_FEATURES = {
    "horizon": 3, "return_windows": [2, 7], "sma_windows": [5, 30], "ema_windows": [3, 40], "rsi_window": 9,
    "macd_fast": 5, "macd_slow": 15, "macd_signal": 4, "bollinger_window": 10, "bollinger_k": 1.5,
    "atr_window": 7, "vol_windows": [10], "volume_window": 10, "calendar": False}


def sample_prices(tickers: list[str], start: str | None, shuffle: bool = False) -> pd.DataFrame:
    cfg = {"source": "sample", "tickers": tickers, "start": start, "end": None}
    df = download(cfg, SAMPLE)
    if shuffle:  # rows of all tickers interleaved in random order
        df = df.sample(frac=1.0, random_state=7).reset_index(drop=True)
    return df


GOLDEN = {
    "default": {
        "tickers": ["SPY", "QQQ", "TLT", "GLD"], "start": "2005-01-01", "shuffle": False, "cfg": DEFAULT_FEATURES,
        "input_sha": "9d5ee5a0a92f151ee302449c4aae310ca9b9119d35e7a05acf07daf2b1fb0b51",
        "shape": (19032, 28), "sha": "159d65d098db945ff0195404fd2d0b97757f94d43a5f82b2b3e6314cd6112a4b"},
    "other": {
        "tickers": ["TLT", "AAPL", "GLD", "IWM", "QQQ", "SPY"], "start": None, "shuffle": True, "cfg": OTHER_FEATURES,
        "input_sha": "2b1a090ace2ce367fe1335552107a8d5511418f9baa5338c19a4cc339f394248",
        "shape": (35073, 18), "sha": "76273f9e4642871134e1eb23201e17170f3a30232639d707f64519d22bf9ded2"},
}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_identical_to_golden_reference(name):
    g = GOLDEN[name]
    prices = sample_prices(g["tickers"], g["start"], g["shuffle"])
    assert frame_sha(prices) == g["input_sha"], "the sample input itself changed (lib.providers or data/sample)"
    out = build_features(prices, copy.deepcopy(g["cfg"]))
    assert out.shape == g["shape"]
    assert list(out.columns) == golden_columns(g["cfg"])
    assert out["date"].dtype == prices["date"].dtype and out["ticker"].dtype == prices["ticker"].dtype
    assert (out[feature_columns(out)].dtypes == np.float64).all() and out[LABEL].dtype == np.float64
    assert out.index.equals(pd.RangeIndex(len(out)))
    assert frame_sha(out.drop(columns=LABEL_END)) == g["sha"]  # the golden hash predates the label end column


def test_data_stages_through_parquet_give_the_golden_features(workdir):
    """download -> validate -> featurize on the sample, the default params: the same bits as the
    golden reference captured before Parquet (and before vectorisation)."""
    golden = GOLDEN["default"]
    p = default_params()
    assert p["features"] == golden["cfg"] and p["data"]["tickers"] == golden["tickers"]
    write_params(workdir, p)
    run_stages("download", "validate", "featurize")
    out = read_table(workdir / "data/features.parquet", [])
    assert out.shape == golden["shape"]
    assert frame_sha(out.drop(columns=LABEL_END)) == golden["sha"]


def golden_columns(cfg) -> list[str]:
    cols = ["date", "ticker", *(f"ret_{w}" for w in cfg["return_windows"]), *(f"sma_ratio_{w}" for w in cfg["sma_windows"]),
            *(f"ema_ratio_{w}" for w in cfg["ema_windows"]), "rsi", "macd", "macd_signal", "macd_hist", "bollinger_pctb",
            "atr", *(f"rvol_{w}" for w in cfg["vol_windows"]), "volume_z"]
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
