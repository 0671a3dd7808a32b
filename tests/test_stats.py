"""lib.evaluation.sharpe and lib.evaluation.resampling: published worked examples, hand computations,
limiting properties, undefined cases and the bootstrap/SPA behaviour that the verdict relies on."""

import itertools
import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats as sps

from lib.evaluation.estimate import Estimate
from lib.evaluation.resampling import block_length, bootstrap_ci, monte_carlo, spa_test, spa_vs_baselines
from lib.evaluation.sharpe import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)

PHI = NormalDist()  # the hand computations use the standard library, not scipy as lib.evaluation.sharpe and lib.evaluation.resampling does
GAMMA = 0.5772156649015329


def psr_by_hand(sr, n, skew, kurt, bench):
    return PHI.cdf((sr - bench) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2))


# ------------------------------------------------------------------ published worked example


def test_deflated_sharpe_reproduces_the_published_numerical_example():
    # Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", J. Portfolio Management 40(5),
    # section "A numerical example": N = 100 trials whose ANNUALISED Sharpe ratios have variance
    # 1/2, a selected annualised SR of 2.5 over T = 1250 daily returns (250 a year), skewness -3,
    # kurtosis 10 (raw). Printed: SR0 = 0.1132 (per day), DSR = 0.9004; and with N = 46 trials the
    # DSR would be 0.9505. Per-day units: SR = 2.5/sqrt(250), V = 0.5/250 (a variance scales by 250).
    sr, var = 2.5 / math.sqrt(250), 0.5 / 250
    # hand arithmetic: Phi^-1(0.99) = 2.326348, Phi^-1(1 - 1/(100e)) = 2.680210
    sr0_hand = math.sqrt(var) * ((1 - GAMMA) * PHI.inv_cdf(1 - 1 / 100) + GAMMA * PHI.inv_cdf(1 - 1 / (100 * math.e)))
    dsr_hand = psr_by_hand(sr, 1250, -3.0, 10.0, sr0_hand)  # z = 0.044942*sqrt(1249)/1.237171 = 1.28382
    assert round(sr0_hand, 4) == 0.1132 and round(dsr_hand, 4) == 0.9004  # the hand arithmetic is the paper's

    sr0 = expected_max_sharpe(100, var)
    assert sr0.reason == "" and sr0.value == pytest.approx(sr0_hand, abs=1e-12)
    dsr = deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 100, var)
    assert dsr.value == pytest.approx(dsr_hand, abs=1e-12)
    assert round(dsr.value, 4) == 0.9004
    assert round(deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, 46, var).value, 4) == 0.9505
    # DSR is the PSR at the deflated threshold
    assert dsr == probabilistic_sharpe_ratio(sr, 1250, -3.0, 10.0, sr_benchmark=sr0.value)


def test_psr_against_hand_computation_and_the_normal_limit():
    # Inputs of the hedge-fund illustration attributed to Bailey & López de Prado (2012), "The
    # Sharpe Ratio Efficient Frontier" (24 monthly returns, annualised SR 1.585, skew -2.448,
    # kurtosis 10.164; used so by the pypbo test suite, esvhd/pypbo). The paper's printed PSR could
    # not be checked here, so the expectation is this hand computation:
    # sr = 1.585/sqrt(12) = 0.457550; variance term = 1 + 2.448*0.457550 + 9.164/4*0.457550^2
    # = 2.599721; z = 0.457550*sqrt(23)/sqrt(2.599721) = 1.360923; Phi(z) = 0.913234.
    sr = 1.585 / math.sqrt(12)
    psr = probabilistic_sharpe_ratio(sr, 24, -2.448, 10.164)
    assert psr.value == pytest.approx(0.913234, abs=1e-6)
    assert psr.value == pytest.approx(psr_by_hand(sr, 24, -2.448, 10.164, 0.0), abs=1e-12)
    # normal returns (skew 0, kurtosis 3): PSR = Phi(sr*sqrt(n-1)/sqrt(1 + sr^2/2))
    # sr 0.05, n 1001: z = 0.05*sqrt(1000)/sqrt(1.00125) = 1.580152, Phi = 0.942964
    assert probabilistic_sharpe_ratio(0.05, 1001, 0.0, 3.0).value == pytest.approx(0.942964, abs=1e-6)
    assert probabilistic_sharpe_ratio(0.0, 500, 0.0, 3.0).value == pytest.approx(0.5)
    # negative skew and fat tails widen the Sharpe ratio's error: lower PSR for the same SR > 0
    assert probabilistic_sharpe_ratio(0.05, 1001, -1.0, 8.0).value < 0.942964


def test_min_track_record_length_hand_computation_and_inversion():
    # Normal daily returns, annualised SR 2 against a benchmark of 1, 95 % confidence (the
    # setting of the MinTRL-by-frequency illustration in Bailey & López de Prado 2012):
    # sr = 2/sqrt(250) = 0.126491, sr* = 0.063246, z = 1.644854,
    # MinTRL = 1 + (1 + 2/4*0.016)*(1.644854/0.063246)^2 = 1 + 1.008*676.40 = 682.80 days (2.73 years).
    sr, bench = 2 / math.sqrt(250), 1 / math.sqrt(250)
    hand = 1 + (1 + 0.5 * sr**2) * (PHI.inv_cdf(0.95) / (sr - bench)) ** 2
    got = min_track_record_length(sr, 0.0, 3.0, bench, alpha=0.05)
    assert got.value == pytest.approx(hand, rel=1e-12) and got.value == pytest.approx(682.797, abs=1e-3)
    # MinTRL solves PSR = 1 - alpha for n, for any moments with a defined variance term
    for skew, kurt, alpha in ((-0.72, 5.78, 0.05), (0.3, 4.0, 0.01)):
        n_star = min_track_record_length(0.1, skew, kurt, 0.02, alpha).value
        assert probabilistic_sharpe_ratio(0.1, n_star, skew, kurt, 0.02).value == pytest.approx(1 - alpha, abs=1e-12)


# ------------------------------------------------------------------ limiting properties


def test_psr_rises_with_n_and_dsr_falls_with_trials():
    psr = [probabilistic_sharpe_ratio(0.05, n, -0.5, 5.0).value for n in (50, 250, 1000, 5000)]
    assert all(a < b for a, b in itertools.pairwise(psr))
    dsr = [deflated_sharpe_ratio(0.08, 1000, -0.5, 5.0, k, 0.001).value for k in (1, 2, 10, 100, 1000)]
    assert all(a > b for a, b in itertools.pairwise(dsr))
    sr0 = [expected_max_sharpe(k, 0.001).value for k in (1, 2, 10, 100)]
    assert sr0[0] == 0.0 and all(a < b for a, b in itertools.pairwise(sr0))


def test_one_trial_dsr_is_psr_against_zero():
    for sr, n, skew, kurt in ((0.05, 300, -1.0, 6.0), (-0.02, 100, 0.2, 3.5), (0.1, 2000, 0.0, 3.0)):
        assert deflated_sharpe_ratio(sr, n, skew, kurt, 1, 0.004) == probabilistic_sharpe_ratio(sr, n, skew, kurt, 0.0)


def test_sharpe_moments_matches_scipy_population_moments():
    r = np.random.default_rng(1).standard_t(5, 800) * 0.01 + 0.0004
    m = sharpe_moments(r, risk_free=0.0001)
    x = r - 0.0001
    assert m.n == 800
    assert m.sr == pytest.approx(x.mean() / x.std(ddof=1), rel=1e-12)
    assert m.skew == pytest.approx(sps.skew(x, bias=True), rel=1e-10)
    assert m.kurtosis == pytest.approx(sps.kurtosis(x, fisher=False, bias=True), rel=1e-10)  # raw: normal = 3
    sr, n, skew, kurt = m  # unpacks as (sr, n, skew, kurtosis)
    assert probabilistic_sharpe_ratio(sr, n, skew, kurt).value == pytest.approx(psr_by_hand(sr, n, skew, kurt, 0.0))


# ------------------------------------------------------------------ undefined -> None with a reason


@pytest.mark.parametrize(
    "result",
    [
        probabilistic_sharpe_ratio(sharpe_moments(np.full(30, 0.001)).sr, 30, 0.0, 3.0),  # zero variance
        probabilistic_sharpe_ratio(sharpe_moments(np.array([0.01, -0.02])).sr, 2, 0.0, 3.0),  # n < 3
        probabilistic_sharpe_ratio(0.1, 2, 0.0, 3.0),  # n < 3 with moments given
        probabilistic_sharpe_ratio(0.5, 100, 5.0, 3.0),  # 1 - 5*0.5 + 0.5*0.25 < 0
        deflated_sharpe_ratio(0.5, 100, 5.0, 3.0, 10, 0.01),  # same negative variance term
        deflated_sharpe_ratio(0.1, 100, 0.0, 3.0, 0, 0.01),  # n_trials < 1
        expected_max_sharpe(0, 0.01),
        expected_max_sharpe(10, -0.01),  # negative variance of trial Sharpe ratios
        min_track_record_length(0.02, 0.0, 3.0, sr_benchmark=0.05),  # sr < benchmark
        min_track_record_length(0.05, 0.0, 3.0, sr_benchmark=0.05),  # sr == benchmark
        min_track_record_length(0.5, 5.0, 3.0),  # negative variance term
        min_track_record_length(0.1, 0.0, 3.0, alpha=1.5),
        min_track_record_length(None, 0.0, 3.0),
        probabilistic_sharpe_ratio(float("nan"), 100, 0.0, 3.0),
    ],
)
def test_undefined_results_are_none_with_a_reason(result):
    assert isinstance(result, Estimate) and result.value is None and result.reason


def test_degenerate_moments_are_finite_and_json_safe():
    for r in (np.full(30, 0.001), np.array([0.01, -0.02]), np.array([])):
        m = sharpe_moments(r)
        assert m.sr is None and math.isfinite(m.skew) and math.isfinite(m.kurtosis)
        json.dumps(m, allow_nan=False)
    with pytest.raises(ValueError, match="finite"):
        sharpe_moments(np.array([0.01, np.nan, 0.02]))


# ------------------------------------------------------------------ block length and bootstrap


def test_block_length_bounds_fallback_and_dependence():
    rng = np.random.default_rng(2)
    iid = rng.normal(size=1000)
    ar = np.zeros(1000)
    for t in range(1, 1000):
        ar[t] = 0.8 * ar[t - 1] + iid[t]
    assert 1.0 <= block_length(iid) < block_length(ar) <= 1000
    assert block_length(np.c_[iid, ar]) == pytest.approx(block_length(ar))  # the more dependent column
    for degenerate in (np.zeros(50), np.ones(5), np.array([1.0, np.nan, 2.0, 3.0] * 10), np.array([0.5])):
        b = block_length(degenerate)
        assert math.isfinite(b) and 1.0 <= b <= max(len(degenerate), 1)


def test_bootstrap_ci_deterministic_covers_estimate_and_matches_analytic_width():
    x = np.random.default_rng(3).normal(0.001, 0.01, 500)
    a = bootstrap_ci(x, np.mean, reps=2000, seed=7)
    assert a == bootstrap_ci(x, np.mean, reps=2000, seed=7)  # identical floats
    assert a != bootstrap_ci(x, np.mean, reps=2000, seed=8)
    assert a["low"] < a["estimate"] < a["high"] and a["estimate"] == pytest.approx(x.mean())
    assert a["dropped"] == 0 and a["reps"] == 2000 and a["reason"] == "" and a["block_length"] >= 1
    analytic = 2 * PHI.inv_cdf(0.975) * x.std(ddof=1) / math.sqrt(len(x))
    assert (a["high"] - a["low"]) == pytest.approx(analytic, rel=0.25)


def test_bootstrap_ci_resamples_rows_together():
    rng = np.random.default_rng(4)
    s = rng.normal(0.0, 0.01, 300)
    both = np.column_stack([s + 0.001, s])  # strategy = benchmark + 0.001 every day

    def active_mean(m):
        return float(np.mean(m[:, 0] - m[:, 1]))

    out = bootstrap_ci(both, active_mean, reps=300, seed=1, block=5.0)
    assert out["low"] == pytest.approx(0.001, abs=1e-15) and out["high"] == pytest.approx(0.001, abs=1e-15)
    assert out["block_length"] == 5.0
    # a tuple of date x ticker matrices: rows (dates) drawn together across both arrays
    pred = rng.normal(size=(200, 4))
    pooled = bootstrap_ci((pred, 2 * pred), lambda p, y: float(np.corrcoef(p.ravel(), y.ravel())[0, 1]), 200, 1)
    assert pooled["low"] == pytest.approx(1.0) and pooled["high"] == pytest.approx(1.0)


def test_bootstrap_ci_drops_undefined_resamples_and_counts_them():
    x = np.random.default_rng(5).normal(0.0, 1.0, 200)

    def positive_mean_or_none(v):
        m = float(np.mean(v))
        return m if m > 0.05 else (None if m < -0.05 else float("nan"))

    out = bootstrap_ci(x, positive_mean_or_none, reps=400, seed=3)
    assert 0 < out["dropped"] < 400 and out["low"] > 0.05
    json.dumps(out, allow_nan=False)
    short = bootstrap_ci(np.array([1.0, 2.0]), np.mean, reps=10, seed=0)
    assert short["estimate"] is None and short["low"] is None and short["reason"]
    none = bootstrap_ci(x, lambda v: None, reps=20, seed=0)
    assert none["low"] is None and none["dropped"] == 20 and "every resample" in none["reason"]


# ------------------------------------------------------------------ Monte Carlo


def test_monte_carlo_loss_probability_and_determinism():
    rng = np.random.default_rng(6)
    up = monte_carlo(rng.normal(0.002, 0.01, 750), paths=1000, seed=1)
    down = monte_carlo(rng.normal(-0.002, 0.01, 750), paths=1000, seed=1)
    assert up["prob_loss"] < 0.01 and down["prob_loss"] > 0.99
    r = np.random.default_rng(7).normal(0.0005, 0.01, 500)
    assert monte_carlo(r, 300, seed=9) == monte_carlo(r, 300, seed=9)
    q = up["final_multiple"]
    assert list(q) == ["q05", "q25", "q50", "q75", "q95"] and list(q.values()) == sorted(q.values())
    assert all(v <= 0 for v in up["max_drawdown"].values())


def test_monte_carlo_exact_on_a_constant_series_and_undefined_when_short():
    out = monte_carlo(np.full(250, 0.001), paths=50, seed=0)
    assert out["final_multiple"]["q05"] == pytest.approx(1.001**250) == out["final_multiple"]["q95"]
    assert out["max_drawdown"]["q50"] == 0.0 and out["prob_loss"] == 0.0
    short = monte_carlo(np.array([0.01, 0.02]), paths=10, seed=0)
    assert short["prob_loss"] is None and short["reason"]


# ------------------------------------------------------------------ SPA


def test_spa_detects_a_large_edge_and_is_deterministic():
    rng = np.random.default_rng(9)
    base = rng.normal(0.0, 0.01, 750)
    strategy = base + 0.002 + rng.normal(0.0, 0.002, 750)  # baseline plus a large edge
    other = rng.normal(0.0, 0.012, 750)
    out = spa_vs_baselines(strategy, {"buy_and_hold": base, "momentum": other}, reps=500, seed=1)
    assert out == spa_vs_baselines(strategy, {"buy_and_hold": base, "momentum": other}, reps=500, seed=1)
    assert out["vs_each"]["buy_and_hold"]["consistent"] < 0.01
    assert out["beats_all"]["consistent"] < 0.05
    assert out["beaten_by_any"]["consistent"] == 1.0  # no baseline earns more on average
    # and the other way round: a baseline with the edge beats the strategy
    flipped = spa_vs_baselines(base, {"better": strategy, "other": other}, reps=500, seed=1)
    assert flipped["beaten_by_any"]["consistent"] < 0.01 and flipped["beats_all"]["consistent"] > 0.5
    # an exactly constant edge is decided without the bootstrap
    exact = spa_test(base, {"s": base + 0.001}, reps=100, seed=0)
    assert exact["consistent"] == 0.0 and exact["reason"]


def test_spa_on_pure_noise_is_not_significant():
    rejections = 0
    for s in range(20):
        rng = np.random.default_rng(100 + s)
        base = rng.normal(0.0, 0.01, 500)
        out = spa_vs_baselines(base + rng.normal(0.0, 0.005, 500), {"b": base}, reps=300, seed=1)
        rejections += out["beats_all"]["consistent"] < 0.05
    assert rejections <= 4  # about 1 expected at the 5 % level; P(>= 5 of 20) = 0.3 %


def test_spa_is_studentised():
    # one model beats the benchmark by a small, precise margin; another adds only huge noise. The
    # raw-mean comparison of arch 8.0.0 lets the noisy model's spread swamp the real edge.
    rng = np.random.default_rng(3)
    bench = rng.normal(0.0, 0.01, 1000)
    models = {"good": bench + 0.0003 + rng.normal(0.0, 0.001, 1000), "noisy": bench + rng.normal(0.0, 0.05, 1000)}
    assert spa_test(bench, models, reps=1000, seed=0)["consistent"] < 0.01


# ------------------------------------------------------------------ permutation null, break-even cost


def test_shuffle_in_time_keeps_each_tickers_values_and_dates():
    import pandas as pd

    from lib.evaluation.permutation import shuffle_in_time

    df = pd.DataFrame(
        {
            "date": list(range(50)) * 2,
            "ticker": ["A"] * 50 + ["B"] * 50,
            "prediction": np.arange(100.0),
            "label": np.arange(100.0),
        }
    )
    out = shuffle_in_time(df, np.random.default_rng(0))
    for t, g in out.groupby("ticker"):
        assert sorted(g["prediction"]) == sorted(df.loc[df["ticker"] == t, "prediction"])
    assert not np.array_equal(out["prediction"], df["prediction"])
    assert out[["date", "ticker", "label"]].equals(df[["date", "ticker", "label"]])


def test_relabel_tickers_moves_each_series_whole_to_another_ticker():
    import pandas as pd

    from lib.evaluation.permutation import MID_RANK, relabel_tickers

    tickers = ["A", "B", "C", "D"]
    df = pd.DataFrame(
        {
            "date": np.repeat(np.arange(30), 4),
            "ticker": tickers * 30,
            "prediction": np.arange(120.0),
            "label": np.arange(120.0),
        }
    )
    df = df[~((df["ticker"] == "D") & (df["date"] < 5))].reset_index(drop=True)  # D starts late
    out = relabel_tickers(df, np.random.default_rng(2))  # sigma = [3, 2, 0, 1]: every ticker moves
    assert out[["date", "ticker", "label"]].equals(df[["date", "ticker", "label"]])
    series = {t: g.set_index("date")["prediction"] for t, g in df.groupby("ticker")}
    moved = 0
    for t, g in out.groupby("ticker"):
        got = g.set_index("date")["prediction"]
        source = [u for u in tickers if series[u].reindex(got.index).fillna(MID_RANK).equals(got)]
        assert len(source) == 1  # one other ticker's series, the same on every date
        moved += source[0] != t
    assert moved == 4
    late = out[(out["ticker"] != "D") & (out["date"] < 5)]["prediction"]
    assert (late == MID_RANK).sum() == 5  # the ticker that got D's series has no score before D starts


def test_permutation_test_add_one_pvalue_and_determinism():
    import pandas as pd

    from lib.evaluation.permutation import permutation_test

    rng = np.random.default_rng(1)
    y = rng.normal(size=200)
    df = pd.DataFrame({"date": range(200), "ticker": "A", "prediction": y, "label": y})
    corr = lambda d: float(np.corrcoef(d["prediction"], d["label"])[0, 1])
    res = permutation_test(corr, df, 50, seed=3)
    assert res["observed"] == pytest.approx(1.0) and res["pvalue"] == pytest.approx(1 / 51)
    assert res == permutation_test(corr, df, 50, seed=3)
    noise = df.assign(prediction=rng.normal(size=200))
    assert permutation_test(corr, noise, 50, seed=3)["pvalue"] > 0.05
    undefined = permutation_test(lambda d: None, df, 5, seed=0)
    assert undefined["pvalue"] is None and undefined["dropped"] == 5 and undefined["reason"]


def test_break_even_cost_bisects_the_zero_crossing():
    from lib.evaluation.resampling import break_even_cost

    res = break_even_cost(lambda c: 0.02 - 0.001 * c, [0, 5, 10, 20, 50])  # zero at 20 bps
    assert res["break_even_bps"] == pytest.approx(20.0, abs=10 / 2**8)
    assert res["edge"][0] == pytest.approx(0.02)
    assert break_even_cost(lambda c: -0.01 - c, [0, 10])["break_even_bps"] is None
    high = break_even_cost(lambda c: 1.0, [0, 10])
    assert high["break_even_bps"] is None and "still positive" in high["reason"]


def test_a_section_nests_and_names_every_undefined_leaf_with_its_reason():
    from lib.evaluation.estimate import Section

    root = Section()
    root.put("n", 3)
    root.put("ratio", float("inf"), "zero volatility")
    inner = root.section("intervals")
    inner.interval("sharpe", {"low": None, "high": None, "reason": "too few rows"})
    inner.add("ic", Estimate(0.1))
    assert root.values == {"n": 3, "ratio": None, "intervals": {"sharpe": {"low": None, "high": None}, "ic": 0.1}}
    assert root.reasons == {
        "ratio": "zero volatility",
        "intervals.sharpe.low": "too few rows",
        "intervals.sharpe.high": "too few rows",
    }
    assert isinstance(root.values["n"], int) and Estimate.of(float("nan")) == Estimate(None, "undefined")
