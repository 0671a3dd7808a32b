"""Significance of a backtest beyond its point metrics: Sharpe-ratio inference (PSR, MinTRL,
DSR against a permutation null), Hansen's SPA against the baselines, Monte Carlo of outcomes,
block-bootstrap intervals, the IC the field's way, per-fold stability, cost sensitivity.

Deterministic: every draw comes from `evaluate.seed`."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.evaluation.estimate import Section
from lib.evaluation.forecast import (
    cross_sectional_ic,
    fold_table,
    ic_matrices,
    prediction_quality,
    quantile_spread,
    rank_ic_of_dates,
    rolling_ic,
)
from lib.evaluation.performance import cagr_of, max_drawdown_of, mean_annual_of, returns_of, sharpe_of
from lib.evaluation.permutation import permutation_sharpes
from lib.evaluation.resampling import (
    block_length,
    bootstrap_ci,
    break_even_cost,
    monte_carlo,
    spa_vs_baselines,
)
from lib.evaluation.sharpe import (
    Moments,
    deflated_sharpe_ratio,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)
from lib.portfolio.backtest import portfolio_config, run_backtest
from lib.portfolio.batch import BatchedBacktest, batch_unsupported
from lib.tables import BASELINES, BOOKS, STRATEGY

# The deflated Sharpe ratio (Bailey and Lopez de Prado 2014, eq. 2) asks "what if this run were the best of
# N trials?"; a single run cannot know N, so it reports N = 10 and 100 with the permutation null's Sharpe
# variance as the trials' spread (python -m stages.trials uses the real count). Reported, never tuned on.
DSR_TRIALS = (10, 100)


@dataclass(frozen=True)
class StudySeries:
    """What the plots and the tear sheet draw: the permutation null, per-date IC and spread series,
    the rolling IC, per-fold rows, the cost curve, the Sharpe moments, the Monte Carlo quantiles and
    the IC's bootstrap interval."""

    permutation: dict
    ic_series: pd.DataFrame
    spread: pd.DataFrame
    rolling_ic: pd.DataFrame
    folds: list[dict]
    cost: pd.DataFrame
    moments: Moments
    monte_carlo: dict
    ic_interval: dict


@dataclass(frozen=True)
class Significance:
    """significance()'s result: `sections` for metrics.json, in its order, and the `series`."""

    sections: dict[str, Section]
    series: StudySeries


FOLD_REASON = "undefined: fewer than 3 returns or points, or zero variance"


class _Study:
    """One run's inputs and the backtest it can rerun (shuffled predictions, other costs)."""

    def __init__(self, equity: pd.DataFrame, preds: pd.DataFrame, prices: pd.DataFrame, params: dict) -> None:
        self.cfg, self.bt, self.horizon = params["evaluate"], params["backtest"], params["features"]["horizon"]
        self.ppy, self.rf = self.cfg["periods_per_year"], self.cfg["risk_free"]
        self.equity, self.preds, self.prices = equity, preds, prices
        self.r = {b: returns_of(equity[b].to_numpy()) for b in BOOKS}
        self._costed: dict[float, dict[str, np.ndarray]] = {}
        engine_ok = not batch_unsupported(portfolio_config(self.bt, self.horizon, self.ppy))
        engine_ok = engine_ok and bool(np.isfinite(preds["prediction"].to_numpy(float)).all())
        # every rerun below (shuffles, costs) through one batched set-up when the vectorized engine applies
        self.batch = BatchedBacktest(prices, preds, self.bt, self.horizon, self.ppy) if engine_ok else None

    def _rerun(self, costs: dict) -> pd.DataFrame:
        """The backtest's equity again at other costs (its delisting lines were logged once, by the backtest stage)."""
        quiet = logging.getLogger("lib.portfolio.delisting")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            return run_backtest(self.prices, self.preds, costs, self.horizon, self.ppy).equity
        finally:
            quiet.setLevel(level)

    def permutation_null(self) -> dict:
        """The same backtest and costs, predictions shuffled in time within each ticker (batched)."""
        n, seed = self.cfg["permutations"], self.cfg["seed"]
        return permutation_sharpes(
            self.prices, self.preds, self.bt, self.horizon, self.ppy, self.rf, n, seed, self.batch
        )

    def at_cost(self, cost: float) -> dict[str, np.ndarray]:
        """Equity of the strategy and of buy-and-hold with `cost` bps per side (commission only), once per cost."""
        if cost not in self._costed:
            if self.batch is not None:
                run = self.batch.at_costs([cost])
                self._costed[cost] = {b: run[b][0] for b in (STRATEGY, "benchmark")}
            else:
                e = self._rerun({**self.bt, "commission_bps": cost, "slippage_bps": 0.0})
                self._costed[cost] = {b: e[b].to_numpy() for b in (STRATEGY, "benchmark")}
        return self._costed[cost]


def _sharpe_inference(st: _Study, sig: Section) -> tuple[Moments, dict]:
    """PSR, MinTRL, the permutation null and the DSR against it (per-period inputs throughout)."""
    cfg = st.cfg
    mom = sharpe_moments(st.r[STRATEGY], st.rf / st.ppy)
    sig.put("sharpe_daily", mom.sr, "zero volatility or fewer than 3 returns")
    sig.put("n", mom.n)
    sig.put("skew", mom.skew)
    sig.put("kurtosis", mom.kurtosis)
    sig.add("psr", probabilistic_sharpe_ratio(mom.sr, mom.n, mom.skew, mom.kurtosis))
    trl = min_track_record_length(mom.sr, mom.skew, mom.kurtosis, 0.0, cfg["alpha"])
    sig.add("min_trl_sessions", trl)
    sig.put("min_trl_years", trl.value / st.ppy if trl.value is not None else None, trl.reason)
    # permutation null: the same backtest and costs, predictions shuffled in time within each ticker
    perm = st.permutation_null()
    sig.put("permutation_pvalue", perm["pvalue"], perm["reason"])
    sig.put("permutations", perm["n"])
    null_daily = np.asarray(perm["null"]) / math.sqrt(st.ppy)
    var_null = float(np.var(null_daily, ddof=1)) if null_daily.size >= 2 else None
    sig.put(
        "null_sharpe_sd",
        math.sqrt(var_null) * math.sqrt(st.ppy) if var_null is not None else None,
        "fewer than 2 defined shuffles",
    )
    for k in DSR_TRIALS:
        if var_null is None:
            sig.put(f"dsr_{k}_trials", None, "no variance of skill-less Sharpe ratios (permutation null)")
        else:
            sig.add(f"dsr_{k}_trials", deflated_sharpe_ratio(mom.sr, mom.n, mom.skew, mom.kurtosis, k, var_null))
    return mom, perm


def _spa_and_outcomes(st: _Study, sig: Section) -> dict:
    """Hansen's SPA of the strategy against the baselines, and the Monte Carlo of outcomes."""
    cfg = st.cfg
    spa = spa_vs_baselines(st.r[STRATEGY], {b: st.r[b] for b in BASELINES}, cfg["spa_reps"], cfg["seed"])
    for b in BASELINES:
        t = spa["vs_each"][b]
        sig.put(f"spa_vs_{b}_pvalue", t["consistent"], t["reason"])
    sig.put("spa_beats_all_pvalue", spa["beats_all"]["consistent"])
    sig.put("spa_beaten_by_any_pvalue", spa["beaten_by_any"]["consistent"], spa["beaten_by_any"]["reason"])
    mc = monte_carlo(st.r[STRATEGY], cfg["monte_carlo_paths"], cfg["seed"])
    sig.put("prob_loss", mc["prob_loss"], mc["reason"])
    for key, label in (("final_multiple", "final_multiple"), ("max_drawdown", "mc_max_drawdown")):
        for q in ("q05", "q50", "q95"):
            sig.put(f"{label}_{q}", mc[key][q] if mc[key] else None, mc["reason"])
    return mc


def _intervals(st: _Study) -> tuple[Section, dict]:
    """Block-bootstrap percentile intervals (rows = dates; block length by Politis-White)."""
    cfg, ppy, rf = st.cfg, st.ppy, st.rf
    seed, reps, alpha = cfg["seed"], cfg["bootstrap_reps"], cfg["alpha"]
    out = Section()
    stats_of = {
        "sharpe": lambda x: sharpe_of(x, ppy, rf),
        "cagr": lambda x: cagr_of(x, ppy),
        "max_drawdown": max_drawdown_of,
    }
    for b in BOOKS:
        book, blk = out.section(b), block_length(st.r[b])
        for k, f in stats_of.items():
            book.interval(k, bootstrap_ci(st.r[b], f, reps, seed, alpha, blk))
    diff = st.r[STRATEGY] - st.r["benchmark"]
    out.section("vs_benchmark").interval(
        "mean_annual", bootstrap_ci(diff, lambda d: mean_annual_of(d, ppy), reps, seed, alpha)
    )
    _dates, pm, ym = ic_matrices(st.preds)  # resampled by date index: the same draws as of (pm, ym) themselves
    block = block_length(np.column_stack([pm, ym]))
    ic_ci = bootstrap_ci(np.arange(len(pm)), rank_ic_of_dates(pm, ym), reps, seed, alpha, block)
    out.section("predictions").interval("ic", ic_ci)
    return out, ic_ci


def _folds(folds: list[dict]) -> Section:
    out = Section()
    for f in folds:
        fold = out.section(f"fold_{f['fold']:02d}")
        for k, v in f.items():
            if k == "fold":
                continue
            fold.add(k, v) if isinstance(v, str) else fold.put(k, v, FOLD_REASON)
    return out


def _cost_sensitivity(st: _Study) -> tuple[Section, pd.DataFrame]:
    """Every book re-costed on `evaluate.cost_grid_bps`; break-even where the edge over buy-and-hold vanishes."""
    ppy, bt = st.ppy, st.bt

    def edge(cost: float) -> float | None:
        e = st.at_cost(cost)
        return mean_annual_of(returns_of(e[STRATEGY]) - returns_of(e["benchmark"]), ppy)

    be = break_even_cost(edge, [float(c) for c in st.cfg["cost_grid_bps"]])
    cost = Section()
    cost.put("break_even_bps", be["break_even_bps"], be["reason"])
    cost.put("current_bps", float(bt["commission_bps"] + bt["slippage_bps"]))
    for c, e in zip(be["grid_bps"], be["edge"], strict=True):
        cost.put(f"edge_at_{c:g}bps", e)
    curve = pd.DataFrame(
        {
            "cost_bps": be["grid_bps"],
            "active_annual": be["edge"],
            "sharpe": [sharpe_of(returns_of(st.at_cost(c)[STRATEGY]), ppy, st.rf) for c in be["grid_bps"]],
        }
    )
    return cost, curve


def significance(equity: pd.DataFrame, preds: pd.DataFrame, prices: pd.DataFrame, params: dict) -> Significance:
    """Everything beyond the point metrics: Sharpe inference with the permutation null, SPA, Monte
    Carlo, bootstrap intervals, the IC the field's way, the quantile spread, per-fold stability and
    cost sensitivity. Deterministic: every draw comes from `evaluate.seed`."""
    st = _Study(equity, preds, prices, params)
    cfg, horizon = st.cfg, st.horizon
    sig = Section()
    mom, perm = _sharpe_inference(st, sig)
    mc = _spa_and_outcomes(st, sig)
    intervals, ic_ci = _intervals(st)
    cs, ic_series = cross_sectional_ic(preds, horizon, cfg["min_cross_section"])
    qs, spread = quantile_spread(preds, cfg["quantiles"], horizon)
    folds = fold_table(equity, preds, st.ppy, st.rf, "benchmark")
    cost, curve = _cost_sensitivity(st)
    sections = {
        "significance": sig,
        "intervals": intervals,
        "cross_sectional_ic": cs,
        "quantile_spread": qs,
        "folds": _folds(folds),
        "cost_sensitivity": cost,
    }
    series = StudySeries(
        permutation=perm,
        ic_series=ic_series,
        spread=spread,
        rolling_ic=rolling_ic(preds, cfg["rolling_window"]),
        folds=folds,
        cost=curve,
        moments=mom,
        monte_carlo=mc,
        ic_interval=ic_ci,
    )
    return Significance(sections, series)


def member_ics(preds: pd.DataFrame, horizon: int) -> Section:
    """IC of each ensemble member (`member_i` columns) beside the ensemble's, so a user sees
    whether averaging helped; empty without members."""
    s = Section()
    for col in sorted(c for c in preds.columns if c.startswith("member_")):
        q = prediction_quality(preds.assign(prediction=preds[col]), horizon)
        s.add(f"{col}_ic", q["ic"])
    if s.values:
        s.add("ensemble_ic", prediction_quality(preds, horizon)["ic"])
    return s
