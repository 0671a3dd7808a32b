import json
import math

import numpy as np
import pandas as pd
import pytest

from lib.evaluation.forecast import prediction_quality
from lib.evaluation.performance import active, performance

NO_TRADES = pd.DataFrame({"notional": [], "cost": []})


def test_known_values():
    e = np.array([100.0, 110.0, 99.0, 108.9])
    m = performance(e, np.ones(4), pd.DataFrame({"notional": [100.0], "cost": [0.1]}), 252, 0.0).values
    r = np.array([0.1, -0.1, 0.1])
    assert m["total_return"] == pytest.approx(0.089)
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert m["max_drawdown"] == pytest.approx(-0.1)
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt((0.01) / 3) * math.sqrt(252))
    assert m["hit_rate"] == pytest.approx(2 / 3)
    assert m["n_trades"] == 1 and isinstance(m["n_trades"], int)


def test_flat_equity_gives_null_with_reasons_not_nan():
    s = performance(np.full(50, 100.0), np.zeros(50), NO_TRADES, 252, 0.0)
    for key in ("sharpe", "sharpe_pvalue", "sortino", "calmar", "hit_rate"):
        assert s.values[key] is None and s.reasons[key]
    assert s.values["total_return"] == 0.0 and s.values["n_trades"] == 0
    json.dumps(s.values, allow_nan=False)


def test_active_significance_and_identical_curves():
    rng = np.random.default_rng(0)
    base = 100 * np.cumprod(1 + rng.normal(0, 0.01, 500))
    better = base * np.cumprod(np.full(500, 1.001))
    a = active(better, base, 252)
    assert a.values["pvalue"] < 0.01 and a.values["information_ratio"] > 0
    same = active(base, base, 252)
    assert same.values["pvalue"] is None and same.reasons["pvalue"] == "identical returns"


def _overlapping_panel(n_dates: int, tickers: int, seed: int, skill: float) -> pd.DataFrame:
    """Weekly labels (sums of 5 daily returns, overlapping) and slow-moving predictions, each with a
    factor common to all tickers, as with SPY and QQQ and a model that sees the market."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=n_dates)
    common = rng.normal(size=n_dates + 5)
    view = np.convolve(rng.normal(size=n_dates + 9), np.ones(10), "valid")
    parts = []
    for k in range(tickers):
        daily = common + 0.3 * rng.normal(size=n_dates + 5)
        label = np.convolve(daily, np.ones(5), "valid")[1:]
        parts.append(
            pd.DataFrame(
                {
                    "date": dates,
                    "ticker": f"T{k}",
                    "label": label,
                    "prediction": skill * label + view + rng.normal(size=n_dates),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_ic_uses_every_date_and_counts_dates_not_pairs():
    one = _overlapping_panel(300, 1, 0, 0.3)
    copies = pd.concat([one.assign(ticker=t) for t in "ABCD"], ignore_index=True)
    a, b = prediction_quality(one, 5).values, prediction_quality(copies, 5).values
    assert a["n"] == 300 and b["n"] == 1200 and a["n_dates"] == b["n_dates"] == 300  # no every-5th sampling
    assert b["ic"] == pytest.approx(a["ic"]) and a["ic"] > 0.1
    # four copies of one ticker carry the information of one: the standard error must not shrink by 2
    assert b["ic_se"] == pytest.approx(a["ic_se"], rel=1e-9)
    assert b["ic_pvalue"] == pytest.approx(a["ic_pvalue"], rel=1e-9)
    assert b["directional_pvalue"] == pytest.approx(a["directional_pvalue"], rel=1e-9)


def test_ic_standard_error_covers_correlated_tickers_and_overlap():
    """Across many panels with no skill, the IC spreads as its standard error says (not sqrt(4) less)."""
    ics, ses = [], []
    for seed in range(60):
        q = prediction_quality(_overlapping_panel(250, 4, seed, 0.0), 5).values
        ics.append(q["ic"])
        ses.append(q["ic_se"])
    ratio = np.std(ics) / np.mean(ses)
    assert 0.75 < ratio < 1.35, ratio


def test_prediction_quality_known_and_degenerate_cases():
    dates = pd.bdate_range("2020-01-01", periods=100)
    y = np.sin(np.arange(100))
    df = pd.DataFrame({"date": dates, "ticker": "A", "prediction": y, "label": y})
    q = prediction_quality(df, 5)
    assert q.values["n"] == 100
    assert q.values["ic"] == pytest.approx(1.0) and q.values["directional_accuracy"] == 1.0
    assert q.values["directional_pvalue"] < 1e-3 and q.values["ic_pvalue"] < 1e-3
    const = prediction_quality(df.assign(prediction=0.0), 5)
    assert const.values["ic"] is None and const.reasons["ic"]


def test_return_based_building_blocks_agree_with_performance():
    from lib.evaluation.performance import cagr_of, max_drawdown_of, returns_of, sharpe_of

    e = 100 * np.cumprod(1 + np.random.default_rng(3).normal(0.0005, 0.01, 300))
    m = performance(e, np.ones(300), NO_TRADES, 252, 0.01).values
    r = returns_of(e)
    assert sharpe_of(r, 252, 0.01) == pytest.approx(m["sharpe"], rel=1e-12)
    assert cagr_of(r, 252) == pytest.approx(m["cagr"], rel=1e-10)
    assert max_drawdown_of(r) == pytest.approx(m["max_drawdown"], rel=1e-12)
    assert sharpe_of(np.zeros(10), 252) is None and sharpe_of(r[:2], 252) is None
    assert max_drawdown_of(np.array([0.1, 0.1])) == 0.0 and max_drawdown_of(np.array([-0.5])) == -0.5


def _panel(pred_fn, n_dates=60, tickers=6, seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2021-01-01", periods=n_dates)
    rows = []
    for d in dates:
        y = rng.normal(0, 0.02, tickers)
        rows += [
            {"date": d, "ticker": f"T{i}", "fold": 0, "prediction": pred_fn(y[i], rng), "label": y[i]}
            for i in range(tickers)
        ]
    return pd.DataFrame(rows)


def test_quantile_spread_by_hand_and_sign():
    from lib.evaluation.forecast import quantile_spread

    perfect = _panel(lambda y, rng: y)
    s, series = quantile_spread(perfect, 3, 5)
    one = perfect[perfect["date"] == perfect["date"].iloc[0]].sort_values("prediction")
    # 6 tickers in 3 groups: top 2 minus bottom 2
    assert series["spread"].iloc[0] == pytest.approx(one["label"].tail(2).mean() - one["label"].head(2).mean())
    assert s.values["mean"] > 0 and s.values["pvalue"] < 1e-6
    reverse, _ = quantile_spread(_panel(lambda y, rng: -y), 3, 5)
    assert reverse.values["mean"] == pytest.approx(-s.values["mean"])
    few, _ = quantile_spread(perfect.head(6), 3, 5)
    assert few.values["mean"] is None and few.reasons["mean"]


def test_quantile_spread_keeps_ties_in_one_group_whatever_the_ticker_names():
    from lib.evaluation.forecast import quantile_spread

    # a few distinct predictions per date (as gbm makes): the spread must not depend on ticker names
    tied = _panel(lambda y, rng: float(rng.integers(0, 3)))
    renamed = tied.assign(ticker=tied["ticker"].map(lambda t: f"Z{99 - int(t[1:])}"))
    a, series = quantile_spread(tied, 5, 5)
    b, _ = quantile_spread(renamed, 5, 5)
    assert a.values["mean"] == pytest.approx(b.values["mean"], abs=1e-15)
    one = tied[tied["date"] == series["date"].iloc[0]]
    top, bottom = one["prediction"].max(), one["prediction"].min()
    want = one.loc[one["prediction"] == top, "label"].mean() - one.loc[one["prediction"] == bottom, "label"].mean()
    assert series["spread"].iloc[0] == pytest.approx(want)  # whole tied blocks, top minus bottom
    flat, flat_series = quantile_spread(tied.assign(prediction=1.0), 5, 5)
    assert flat_series.empty and flat.values["mean"] is None  # all tied: no spread on any date


def test_rank_ic_of_resampled_dates_equals_rank_ic_of_the_resampled_matrices():
    from lib.evaluation.forecast import rank_ic, rank_ic_of_dates

    rng = np.random.default_rng(5)
    pm = rng.integers(0, 4, (40, 7)).astype(float)  # ties in the predictions
    ym = np.round(rng.normal(size=(40, 7)), 1)  # and in the labels
    pm[2, 3], ym[5, :] = np.nan, np.nan  # a missing cell and a date without labels
    of = rank_ic_of_dates(pm, ym)
    for _ in range(20):
        dates = rng.integers(0, 40, 40)  # repeats, as a bootstrap draws them
        assert of(dates) == pytest.approx(rank_ic(pm[dates], ym[dates]), abs=1e-13)
    assert of(np.arange(40)) == pytest.approx(rank_ic(pm, ym), abs=1e-13)
    assert of(np.array([5, 5])) is None  # no labelled pair
    flat = rank_ic_of_dates(np.ones_like(pm), ym)
    assert flat(np.arange(40)) is None and rank_ic(np.ones_like(pm), ym) is None  # no variation


def test_rank_ic_matches_prediction_quality_and_ignores_missing_cells():
    from lib.evaluation.forecast import ic_matrices, rank_ic

    pred = _panel(lambda y, rng: y + rng.normal(0, 0.02))
    _, p, y = ic_matrices(pred)
    assert rank_ic(p, y) == pytest.approx(prediction_quality(pred, 5).values["ic"], abs=1e-12)
    p = p.copy()
    p[0, 0] = np.nan
    assert rank_ic(p, y) is not None and rank_ic(np.ones_like(y), y) is None


def test_fold_table_splits_by_fold_dates():
    from lib.evaluation.forecast import fold_table

    pred = _panel(lambda y, rng: y, n_dates=40, tickers=2)
    pred["fold"] = (pred["date"] >= pred["date"].iloc[40]).astype(int)
    dates = pd.bdate_range("2020-12-31", periods=41)
    eq = pd.DataFrame(
        {
            "date": dates,
            "strategy": 100 * 1.001 ** np.arange(41),
            "benchmark": 100 * np.cumprod(1 + np.random.default_rng(1).normal(0, 0.01, 41)),
        }
    )
    rows = fold_table(eq, pred, 252, 0.0, "benchmark")
    assert [r["fold"] for r in rows] == [0, 1] and sum(r["sessions"] for r in rows) == 40
    assert rows[0]["sharpe"] is None  # constant daily return: zero volatility, not inf
    assert rows[1]["rank_ic"] == pytest.approx(1.0)


def test_member_ics_sit_beside_the_ensembles():
    from lib.evaluation.study import member_ics

    panel = _overlapping_panel(200, 3, 1, 0.0)
    rng = np.random.default_rng(0)
    panel["member_0"] = panel["label"]
    panel["member_1"] = rng.normal(size=len(panel))
    panel["prediction"] = (panel["member_0"] + panel["member_1"]) / 2
    s = member_ics(panel, 5).values
    assert s["member_0_ic"] == pytest.approx(1.0) and abs(s["member_1_ic"]) < 0.1
    assert s["member_1_ic"] < s["ensemble_ic"] < s["member_0_ic"]
    assert member_ics(panel.drop(columns=["member_0", "member_1"]), 5).values == {}


def test_rank_ic_is_spearman_and_per_date_ic_equals_a_loop_over_dates():
    from scipy import stats as sps

    from lib.evaluation.forecast import per_date_ic, rank_ic

    pred = _panel(lambda y, rng: np.round(y + rng.normal(0, 0.02), 2))  # rounding makes ties
    assert rank_ic(pred["prediction"], pred["label"]) == pytest.approx(
        sps.spearmanr(pred["prediction"], pred["label"]).statistic, abs=1e-12
    )
    first = pred["date"] == pred["date"].iloc[0]
    pred.loc[first, "prediction"] = 0.5  # a date without varying predictions is left out
    got = per_date_ic(pred, 5)
    expected = [
        (d, np.corrcoef(g["prediction"], g["label"])[0, 1], sps.spearmanr(g["prediction"], g["label"]).statistic)
        for d, g in pred.groupby("date")
        if g["prediction"].nunique() > 1
    ]
    assert list(got["date"]) == [e[0] for e in expected]
    assert np.allclose(got["ic"], [e[1] for e in expected], rtol=0, atol=1e-12)
    assert np.allclose(got["rank_ic"], [e[2] for e in expected], rtol=0, atol=1e-12)
    assert per_date_ic(pred, 7).empty  # 6 tickers a date: none has 7
