"""The alpha158 feature set (lib/data/alpha158.py) against a plain per-ticker computation, its invariances
and its leak test; the per-date normalisation of the featurize table (lib/data/feature_sets.py)."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from lib.data.alpha158 import KBAR, PRICE, ROLLING, build_alpha158, feature_names
from lib.data.cross_section import normalise_by_date
from lib.data.feature_sets import make_features
from lib.data.features import CALENDAR, build_features, feature_columns
from lib.errors import PipelineError
from lib.io import read_table
from lib.params import validate_params
from lib.tables import LABEL
from tests.helpers import default_params, gbm_bars, run_stages, write_params

WINDOWS = [5, 12]


@pytest.fixture(scope="module")
def cfg():
    c = default_params()["features"]
    c.update(set="alpha158", alpha158_windows=WINDOWS)
    return c


def sample_bars():
    """Three tickers, one starting later, with a run of flat bars (o = h = l = c, the same close six days in a
    row: flat windows) and repeated volumes and closes (ties)."""
    df = gbm_bars(90, ("AAA", "BBB", "CCC"), seed=3)
    df = df[~((df["ticker"] == "BBB") & (df.groupby("ticker").cumcount() < 17))].reset_index(drop=True)
    flat = (df["ticker"] == "AAA") & df.groupby("ticker").cumcount().between(40, 45)
    level = df.loc[flat, "close"].iloc[0]
    df.loc[flat, ["open", "high", "low", "close"]] = level
    df.loc[flat, "adj_close"] = level * 0.9
    ccc = df.index[df["ticker"] == "CCC"]
    df.loc[ccc[30:37], "volume"] = 5e5  # a flat volume window
    df.loc[ccc[50], ["close", "adj_close"]] = df.loc[ccc[48], ["close", "adj_close"]].to_numpy()
    df.loc[ccc[50], "high"] = df.loc[ccc[50], ["high", "open", "close"]].max()
    df.loc[ccc[50], "low"] = df.loc[ccc[50], ["low", "open", "close"]].min()
    return df


@pytest.fixture(scope="module")
def prices():
    return sample_bars()


@pytest.fixture(scope="module")
def built(prices, cfg):
    return build_alpha158(prices, cfg)


def _bars_of(prices, ticker):
    """One ticker's adjusted bars as plain arrays, by date."""
    t = prices[prices["ticker"] == ticker].sort_values("date")
    factor = (t["adj_close"] / t["close"]).to_numpy()
    return {
        "date": t["date"].to_numpy(),
        "o": t["open"].to_numpy() * factor,
        "h": t["high"].to_numpy() * factor,
        "l": t["low"].to_numpy() * factor,
        "c": t["adj_close"].to_numpy(),
        "v": t["volume"].to_numpy(dtype=float),
    }


def _share(changes):
    total = np.abs(changes).sum()
    gain, loss = changes[changes > 0].sum(), -changes[changes < 0].sum()
    return (0.0, 0.0, 0.0) if total == 0 else (gain / total, loss / total, (gain - loss) / total)


def _corr(a, b):
    return 0.0 if a.std() == 0 or b.std() == 0 else float(np.corrcoef(a, b)[0, 1])


def _reference(b, i, d):
    """Every rolling operator at row i of one ticker, over the window of d rows ending at i (a plain loop)."""
    h, lo, c, v = b["h"], b["l"], b["c"], b["v"]
    win = slice(i - d + 1, i + 1)
    cw, hw, lw, vw = c[win], h[win], lo[win], v[win]
    dc, dv = np.diff(c[i - d : i + 1]), np.diff(v[i - d : i + 1])
    slope, intercept = np.polyfit(np.arange(d), cw, 1)
    fitted = intercept + slope * np.arange(d)
    ss_tot = ((cw - cw.mean()) ** 2).sum()
    ret = c[win] / c[i - d : i]
    wv = np.abs(ret - 1) * vw
    out = {
        "ROC": c[i - d] / c[i],
        "MA": cw.mean() / c[i],
        "STD": cw.std(ddof=1) / c[i],
        "BETA": slope / c[i],
        "RSQR": 0.0 if ss_tot == 0 else 1 - ((cw - fitted) ** 2).sum() / ss_tot,
        "RESI": (cw[-1] - fitted[-1]) / c[i],
        "MAX": hw.max() / c[i],
        "MIN": lw.min() / c[i],
        "QTLU": np.quantile(cw, 0.8) / c[i],
        "QTLD": np.quantile(cw, 0.2) / c[i],
        "RANK": rankdata(cw)[-1] / d,
        "RSV": 0.0 if hw.max() == lw.min() else (c[i] - lw.min()) / (hw.max() - lw.min()),
        "IMAX": (np.argmax(hw) + 1) / d,
        "IMIN": (np.argmin(lw) + 1) / d,
        "CORR": _corr(cw, np.log(vw)),
        "CORD": _corr(ret, np.log(vw / v[i - d : i] + 1)),
        "CNTP": np.mean(dc > 0),
        "CNTN": np.mean(dc < 0),
        "VMA": vw.mean() / v[i],
        "VSTD": vw.std(ddof=1) / v[i],
        "WVMA": 0.0 if wv.mean() == 0 else wv.std(ddof=1) / wv.mean(),
    }
    out["IMXD"], out["CNTD"] = out["IMAX"] - out["IMIN"], out["CNTP"] - out["CNTN"]
    out["SUMP"], out["SUMN"], out["SUMD"] = _share(dc)
    out["VSUMP"], out["VSUMN"], out["VSUMD"] = _share(dv)
    return out


def _check(built, prices, names, reference):
    """Each ticker's rows of `built` against reference(bars, row) -> {name: value}."""
    checked = 0
    for ticker, rows in built.groupby("ticker"):
        b = _bars_of(prices, ticker)
        where = {d: i for i, d in enumerate(b["date"])}
        for _, row in rows.iterrows():
            want = reference(b, where[row["date"].to_datetime64()])
            got = row[names].to_numpy(dtype=float)
            np.testing.assert_allclose(got, [want[n] for n in names], rtol=1e-9, atol=1e-12, err_msg=ticker)
            checked += 1
    assert checked == len(built) > 150


def test_columns_and_warm_up(built, prices):
    assert feature_columns(built) == feature_names(WINDOWS)
    assert len(feature_names([5, 10, 20, 30, 60])) == 158 == len(KBAR) + len(PRICE) + 29 * 5 == 9 + 4 + 29 * 5
    assert len(ROLLING) == len(set(ROLLING)) == 29
    sizes = prices.groupby("ticker").size() - built.groupby("ticker").size()
    assert (sizes == max(WINDOWS)).all()  # ROC and the day-on-day windows need max(windows) earlier rows
    assert np.isfinite(built[feature_columns(built)].to_numpy()).all()


def test_kbar(built, prices):
    def ref(b, i):
        o, h, lo, c = b["o"][i], b["h"][i], b["l"][i], b["c"][i]
        rng = h - lo
        parts = {"KMID": c - o, "KUP": h - max(o, c), "KLOW": min(o, c) - lo, "KSFT": 2 * c - h - lo}
        out = {"KLEN": rng / o}
        for name, x in parts.items():
            out[name], out[f"{name}2"] = x / o, (0.0 if rng == 0 else x / rng)
        return out

    _check(built, prices, list(KBAR), ref)


def test_price_ratios_with_typical_price_as_vwap(built, prices):
    def ref(b, i):
        o, h, lo, c = b["o"][i], b["h"][i], b["l"][i], b["c"][i]
        return {"OPEN0": o / c, "HIGH0": h / c, "LOW0": lo / c, "VWAP0": (h + lo + c) / 3 / c}

    _check(built, prices, list(PRICE), ref)


FAMILIES = {
    "levels": ["ROC", "MA", "STD", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV"],
    "trend": ["BETA", "RSQR", "RESI"],
    "positions": ["IMAX", "IMIN", "IMXD"],
    "correlations": ["CORR", "CORD"],
    "counts": ["CNTP", "CNTN", "CNTD"],
    "sums": ["SUMP", "SUMN", "SUMD"],
    "volumes": ["VMA", "VSTD", "WVMA", "VSUMP", "VSUMN", "VSUMD"],
}


def test_families_cover_the_rolling_operators():
    assert sorted(op for ops in FAMILIES.values() for op in ops) == sorted(ROLLING)


@pytest.mark.parametrize("family", FAMILIES)
def test_rolling_family_matches_a_per_ticker_loop(built, prices, family):
    ops = FAMILIES[family]
    for d in WINDOWS:

        def reference(b, i, d=d):
            return {f"{op}{d}": value for op, value in _reference(b, i, d).items()}

        _check(built, prices, [f"{op}{d}" for op in ops], reference)


def test_flat_windows_give_qlibs_zero(built):
    """The six flat bars of AAA: a 5-day window inside them has no range, variance or change."""
    aaa = built[built["ticker"] == "AAA"].reset_index(drop=True)
    flat = aaa.iloc[45 - max(WINDOWS)]  # the last flat row (AAA lost max(WINDOWS) warm-up rows)
    assert flat["STD5"] == 0 and flat["KLEN"] == 0
    for name in ("KMID2", "KSFT2", "RSQR5", "RSV5", "CORR5", "SUMP5", "SUMD5", "CNTP5", "WVMA5"):
        assert flat[name] == 0, name


def test_scale_invariant(prices, cfg):
    """One ticker's prices x 7 and its volume x 3: every feature and the label unchanged."""
    scaled = prices.copy()
    bbb = scaled["ticker"] == "BBB"
    scaled.loc[bbb, ["open", "high", "low", "close", "adj_close"]] *= 7
    scaled.loc[bbb, "volume"] *= 3
    a, b = build_alpha158(prices, cfg), build_alpha158(scaled, cfg)
    cols = [*feature_columns(a), LABEL]
    assert a[["date", "ticker"]].equals(b[["date", "ticker"]])
    np.testing.assert_allclose(a[cols].to_numpy(), b[cols].to_numpy(), rtol=1e-9, atol=1e-12)


def test_zero_volume_drops_the_rows_that_need_a_ratio_to_it(prices, cfg):
    """A zero volume has no ratio: VMA/VSTD on that day, CORR/CORD on the windows holding it are NaN,
    so those rows of that ticker drop out; no value is infinite and the other tickers are untouched."""
    df = prices.copy()
    ccc = df.index[df["ticker"] == "CCC"]
    df.loc[ccc[70], "volume"] = 0.0
    base, out = build_alpha158(prices, cfg), build_alpha158(df, cfg)
    assert np.isfinite(out[feature_columns(out)].to_numpy()).all()
    day = df.loc[ccc[70], "date"]
    gone = set(base.loc[base["ticker"] == "CCC", "date"]) - set(out.loc[out["ticker"] == "CCC", "date"])
    assert day in gone and min(gone) == day and len(gone) == max(WINDOWS) + 1  # CORD also needs the day after
    others = base[base["ticker"] != "CCC"].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, out[out["ticker"] != "CCC"].reset_index(drop=True))


def _perturbed_after(df, t):
    later = df["date"] > t
    bumped = df.copy()
    factor = np.exp(np.random.default_rng(1).normal(0, 0.05, later.sum()))
    for col in ("open", "high", "low", "close", "adj_close"):
        bumped.loc[later, col] *= factor
    bumped.loc[later, "volume"] *= 3
    return bumped


@pytest.mark.parametrize(
    "changes",
    [
        {"cross_section": "none"},
        {"cross_section": "rank", "cross_section_keep_raw": True},
        {"cross_section": "zscore", "cross_section_keep_raw": False},
        {"set": "basic", "cross_section": "zscore", "cross_section_keep_raw": True},
        {"set": "basic", "cross_section": "rank", "cross_section_keep_raw": False},
    ],
)
def test_no_feature_uses_the_future(cfg, changes):
    """Change every bar after T: every feature dated <= T stays bit-identical, later ones change."""
    c = {**cfg, **changes}
    if c["set"] == "basic":
        c["sma_windows"] = [10, 50]
    df = gbm_bars(160, ("A", "B", "C", "D"), seed=5)
    t = df["date"].iloc[110]
    base, moved = make_features(df, c), make_features(_perturbed_after(df, t), c)
    cols = feature_columns(base)
    before = base["date"] <= t
    assert before.sum() > 100 and (~before).sum() > 100
    pd.testing.assert_frame_equal(
        base.loc[before, ["date", "ticker", *cols]], moved.loc[moved["date"] <= t, ["date", "ticker", *cols]]
    )
    moving = [n for n in cols if n not in CALENDAR]  # (the calendar is the dates themselves)
    changed = (base.loc[~before, moving].to_numpy() != moved.loc[moved["date"] > t, moving].to_numpy()).any(axis=0)
    assert changed.mean() > 0.9  # (a bar's own shape, KMID say, survives rescaling the bar; a rank may too)


def test_cross_section_columns_and_values(cfg):
    """keep_raw adds `<name>_cs` right after each raw feature (calendar ones left raw, once); without it the
    normalised values replace the raw ones; either way each date's normalised feature has mean 0."""
    df = gbm_bars(120, ("A", "B", "C", "D", "E"), seed=2)
    c = {**default_params()["features"], "sma_windows": [10, 50], "cross_section": "zscore"}
    raw = make_features(df, {**c, "cross_section": "none"})
    kept = make_features(df, {**c, "cross_section_keep_raw": True})
    replaced = make_features(df, {**c, "cross_section_keep_raw": False})
    names = feature_columns(raw)
    assert feature_columns(kept)[:4] == ["ret_1", "ret_1_cs", "ret_5", "ret_5_cs"]
    assert [n for n in feature_columns(kept) if not n.endswith("_cs")] == names
    assert not any(f"{n}_cs" in kept for n in CALENDAR) and all(n in kept for n in CALENDAR)
    assert feature_columns(replaced) == names
    pd.testing.assert_frame_equal(kept[names], raw[names])
    pd.testing.assert_frame_equal(replaced[list(CALENDAR)], raw[list(CALENDAR)])
    np.testing.assert_array_equal(replaced["rsi"].to_numpy(), kept["rsi_cs"].to_numpy())
    moving = [n for n in names if n not in CALENDAR]  # normalised in chunks: as all at once
    pd.testing.assert_frame_equal(replaced[moving], normalise_by_date(raw[moving], raw["date"], "zscore"))
    means = replaced.groupby("date")[["rsi", "ret_5"]].mean()
    np.testing.assert_allclose(means.to_numpy(), 0.0, atol=1e-12)
    assert not np.allclose(replaced["rsi"], raw["rsi"])


def test_featurize_stage_writes_the_chosen_set(workdir):
    """download -> validate -> featurize on the sample with alpha158 and per-date ranks kept beside the raw
    features: 2 x 158 feature columns, every one finite."""
    p = default_params()
    p["features"].update(set="alpha158", cross_section="rank", cross_section_keep_raw=True)
    write_params(workdir, p)
    run_stages("download", "validate", "featurize")
    out = read_table(workdir / "data/features.parquet", [])
    names = feature_names([5, 10, 20, 30, 60])
    assert feature_columns(out) == [n for name in names for n in (name, f"{name}_cs")]
    assert out["ticker"].nunique() == len(p["data"]["tickers"]) and len(out) > 10_000
    assert np.isfinite(out[feature_columns(out)].to_numpy()).all()


def test_default_set_is_the_basic_one_unchanged():
    p = default_params()["features"]
    assert (p["set"], p["cross_section"]) == ("basic", "none")
    df = gbm_bars(260, ("A", "B"))
    pd.testing.assert_frame_equal(make_features(df, p), build_features(df, p), check_exact=True)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("set", "alpha360", r"features\.set must be one of \['basic', 'alpha158'\], got 'alpha360'"),
        ("alpha158_windows", [], r"features\.alpha158_windows must be a list of at least 1 item"),
        ("alpha158_windows", [5, 1], r"features\.alpha158_windows\[1\] must be in \[2, 2520\], got 1"),
        ("cross_section", "robust", r"features\.cross_section must be one of \['none', 'zscore', 'rank'\]"),
        ("cross_section_keep_raw", "yes", r"features\.cross_section_keep_raw must be true or false"),
    ],
)
def test_bad_params_name_the_key(key, value, message):
    p = default_params()
    p["features"][key] = value
    with pytest.raises(PipelineError, match=message):
        validate_params(p)
