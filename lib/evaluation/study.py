"""Significance of a backtest beyond its point metrics: Sharpe-ratio inference (PSR, MinTRL,
DSR against a permutation null), Hansen's SPA against the baselines, Monte Carlo of outcomes,
block-bootstrap intervals, the IC the field's way, per-fold stability, cost sensitivity.

Deterministic: every draw comes from `evaluate.seed`."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from lib.evaluation.forecast import (
    cross_sectional_ic,
    fold_table,
    ic_matrices,
    pooled_rank_ic,
    prediction_quality,
    quantile_spread,
    rolling_ic,
)
from lib.evaluation.performance import Stats, cagr_of, max_drawdown_of, mean_annual_of, returns_of, sharpe_of
from lib.evaluation.resampling import (
    block_length,
    bootstrap_ci,
    break_even_cost,
    monte_carlo,
    permutation_test,
    spa_vs_baselines,
)
from lib.evaluation.sharpe import (
    deflated_sharpe_ratio,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)
from lib.portfolio.backtest import BacktestResult, run_backtest
from lib.tables import BASELINES, BOOKS, STRATEGY

# The deflated Sharpe ratio (Bailey and Lopez de Prado 2014, eq. 2) asks "what if this run were the best of
# N trials?"; a single run cannot know N, so it reports N = 10 and 100 with the permutation null's Sharpe
# variance as the trials' spread (python -m stages.trials uses the real count). Reported, never tuned on.
DSR_TRIALS = (10, 100)


def interval(ci: dict) -> dict:
    out = {"low": ci["low"], "high": ci["high"]}
    if ci["low"] is None:
        out["reason"] = ci["reason"] or "undefined"
    return out


def nested_reasons(name: str, section: dict) -> dict[str, str]:
    """Reasons for the None leaves of a nested section (intervals, folds)."""
    out = {}
    for key, value in section.items():
        if isinstance(value, dict) and "reason" in value:
            out |= {f"{name}.{key}.{k}": value["reason"] for k in ("low", "high")}
        elif isinstance(value, dict):
            out |= nested_reasons(f"{name}.{key}", value)
        elif value is None:
            out[f"{name}.{key}"] = "undefined: fewer than 3 returns or points, or zero variance"
    return out


def strip_reasons(section: object) -> object:
    if isinstance(section, dict):
        return {k: strip_reasons(v) for k, v in section.items() if k != "reason"}
    return section


def _put_estimate(s: Stats, name: str, est: object) -> None:
    s.put(name, est.value, est.reason)


def significance(equity: pd.DataFrame, preds: pd.DataFrame, prices: pd.DataFrame, params: dict) -> tuple[dict, dict]:
    """Everything beyond the point metrics: (sections for metrics.json, series for plots and the report).

    Deterministic: every draw comes from `evaluate.seed`."""
    cfg, bt, horizon = params["evaluate"], params["backtest"], params["features"]["horizon"]
    ppy, rf, seed, reps = cfg["periods_per_year"], cfg["risk_free"], cfg["seed"], cfg["bootstrap_reps"]
    r = {b: returns_of(equity[b].to_numpy()) for b in BOOKS}
    sections: dict[str, Stats | dict] = {}
    series: dict = {}

    # Sharpe-ratio inference (per-period inputs; nothing annualised inside lib.evaluation.sharpe)
    mom = sharpe_moments(r[STRATEGY], rf / ppy)
    sig = Stats()
    sig.put("sharpe_daily", mom.sr, "zero volatility or fewer than 3 returns")
    sig.put("n", mom.n)
    sig.put("skew", mom.skew)
    sig.put("kurtosis", mom.kurtosis)
    _put_estimate(sig, "psr", probabilistic_sharpe_ratio(mom.sr, mom.n, mom.skew, mom.kurtosis))
    trl = min_track_record_length(mom.sr, mom.skew, mom.kurtosis, 0.0, cfg["alpha"])
    _put_estimate(sig, "min_trl_sessions", trl)
    sig.put("min_trl_years", trl.value / ppy if trl.value is not None else None, trl.reason)

    def rerun(pr: pd.DataFrame, costs: dict) -> BacktestResult:
        """The backtest again (its delisting lines were logged once, by the backtest stage)."""
        quiet = logging.getLogger("lib.portfolio.delisting")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return run_backtest(prices, pr, costs, horizon, ppy)
        finally:
            quiet.setLevel(level)

    # permutation null: the same backtest and costs, predictions shuffled in time within each ticker
    def strategy_sharpe(pr: pd.DataFrame) -> float | None:
        return sharpe_of(returns_of(rerun(pr, bt).equity[STRATEGY].to_numpy()), ppy, rf)

    perm = permutation_test(strategy_sharpe, preds, cfg["permutations"], seed)
    sig.put("permutation_pvalue", perm["pvalue"], perm["reason"])
    sig.put("permutations", perm["n"])
    null_daily = np.asarray(perm["null"]) / math.sqrt(ppy)
    var_null = float(np.var(null_daily, ddof=1)) if null_daily.size >= 2 else None
    sig.put(
        "null_sharpe_sd",
        math.sqrt(var_null) * math.sqrt(ppy) if var_null is not None else None,
        "fewer than 2 defined shuffles",
    )
    for k in DSR_TRIALS:
        if var_null is None:
            sig.put(f"dsr_{k}_trials", None, "no variance of skill-less Sharpe ratios (permutation null)")
        else:
            _put_estimate(
                sig, f"dsr_{k}_trials", deflated_sharpe_ratio(mom.sr, mom.n, mom.skew, mom.kurtosis, k, var_null)
            )
    series["permutation"] = perm

    # Hansen's SPA of the strategy against the baselines
    spa = spa_vs_baselines(r[STRATEGY], {b: r[b] for b in BASELINES}, cfg["spa_reps"], seed)
    for b in BASELINES:
        t = spa["vs_each"][b]
        sig.put(f"spa_vs_{b}_pvalue", t["consistent"], t["reason"] or "undefined")
    sig.put("spa_beats_all_pvalue", spa["beats_all"]["consistent"], "undefined")
    sig.put(
        "spa_beaten_by_any_pvalue", spa["beaten_by_any"]["consistent"], spa["beaten_by_any"]["reason"] or "undefined"
    )

    # Monte Carlo of outcomes: resampled paths of the strategy's length
    mc = monte_carlo(r[STRATEGY], cfg["monte_carlo_paths"], seed)
    sig.put("prob_loss", mc["prob_loss"], mc["reason"])
    for key, label in (("final_multiple", "final_multiple"), ("max_drawdown", "mc_max_drawdown")):
        for q in ("q05", "q50", "q95"):
            sig.put(f"{label}_{q}", mc[key][q] if mc[key] else None, mc["reason"])
    sections["significance"] = sig

    # block-bootstrap percentile intervals (rows = dates; block length by Politis-White)
    intervals: dict = {}
    stats_of = {
        "sharpe": lambda x: sharpe_of(x, ppy, rf),
        "cagr": lambda x: cagr_of(x, ppy),
        "max_drawdown": max_drawdown_of,
    }
    for b in BOOKS:
        blk = block_length(r[b])
        intervals[b] = {k: interval(bootstrap_ci(r[b], f, reps, seed, cfg["alpha"], blk)) for k, f in stats_of.items()}
    diff = r[STRATEGY] - r["benchmark"]
    intervals["vs_benchmark"] = {
        "mean_annual": interval(bootstrap_ci(diff, lambda d: mean_annual_of(d, ppy), reps, seed, cfg["alpha"]))
    }
    _dates, pm, ym = ic_matrices(preds)
    ic_ci = bootstrap_ci((pm, ym), pooled_rank_ic, reps, seed, cfg["alpha"])
    intervals["predictions"] = {"ic": interval(ic_ci)}
    sections["intervals"] = intervals

    # IC the field's way, the quantile spread, per-fold stability
    cs, ic_series = cross_sectional_ic(preds, horizon, cfg["min_cross_section"])
    sections["cross_sectional_ic"] = cs
    qs, spread = quantile_spread(preds, cfg["quantiles"], horizon)
    sections["quantile_spread"] = qs
    series.update(ic_series=ic_series, spread=spread, rolling_ic=rolling_ic(preds, cfg["rolling_window"]))
    folds = fold_table(equity, preds, ppy, rf, "benchmark")
    sections["folds"] = {f"fold_{f['fold']:02d}": {k: v for k, v in f.items() if k != "fold"} for f in folds}
    series["folds"] = folds

    # cost sensitivity: both books re-costed; break-even where the edge over buy-and-hold vanishes
    runs: dict[float, pd.DataFrame] = {}

    def at(cost: float) -> pd.DataFrame:
        if cost not in runs:
            runs[cost] = rerun(preds, {**bt, "commission_bps": cost, "slippage_bps": 0.0}).equity
        return runs[cost]

    def edge(cost: float) -> float | None:
        e = at(cost)
        return mean_annual_of(returns_of(e[STRATEGY].to_numpy()) - returns_of(e["benchmark"].to_numpy()), ppy)

    be = break_even_cost(edge, [float(c) for c in cfg["cost_grid_bps"]])
    cost = Stats()
    cost.put("break_even_bps", be["break_even_bps"], be["reason"])
    cost.put("current_bps", float(bt["commission_bps"] + bt["slippage_bps"]))
    for c, e in zip(be["grid_bps"], be["edge"], strict=True):
        cost.put(f"edge_at_{c:g}bps", e, "undefined")
    sections["cost_sensitivity"] = cost
    series["cost"] = pd.DataFrame(
        {
            "cost_bps": be["grid_bps"],
            "active_annual": be["edge"],
            "sharpe": [sharpe_of(returns_of(at(c)[STRATEGY].to_numpy()), ppy, rf) for c in be["grid_bps"]],
        }
    )
    series["moments"] = mom
    series["monte_carlo"] = mc
    series["ic_interval"] = ic_ci
    return sections, series


def values_of(section: Stats | dict) -> dict:
    return section.values if isinstance(section, Stats) else section


def member_ics(preds: pd.DataFrame, horizon: int) -> Stats:
    """IC of each ensemble member (`member_i` columns) beside the ensemble's, so a user sees
    whether averaging helped; empty without members."""
    s = Stats()
    for col in sorted(c for c in preds.columns if c.startswith("member_")):
        q = prediction_quality(preds.assign(prediction=preds[col]), horizon)
        s.put(f"{col}_ic", q.values["ic"], q.reasons.get("ic", ""))
    if s.values:
        s.put("ensemble_ic", prediction_quality(preds, horizon).values["ic"], "undefined")
    return s
