"""The model's book against its baselines (other model families' books, buy-and-hold, momentum), as
pure functions of daily returns and prediction tables:

- `paired_active`: the active return a year of the model's book over each other book, with a
  stationary block-bootstrap percentile interval that resamples dates (both books of a date together);
- `ic_difference`: the mean per-date Rank IC of the model minus another prediction set's, paired
  by date, with the same interval over dates;
- `spa_against`: Hansen's SPA of the model against all baselines (`resampling.spa_vs_baselines`);
- `model_confidence_set`: Hansen, Lunde & Nason's (2011) Model Confidence Set over all books
  (`arch.bootstrap.MCS`, losses = negative daily returns): the books that cannot be told apart
  from the best at level alpha, each with its MCS p-value.

Undefined values are `Estimate(None, reason)`. Every draw comes from `default_rng(seed)`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
from arch.bootstrap import MCS

from lib.evaluation.estimate import UNDEFINED, Estimate, Section
from lib.evaluation.forecast import ic_matrices, per_date_ic, rank_ic_of_dates
from lib.evaluation.performance import mean_annual_of
from lib.evaluation.resampling import block_length, bootstrap_ci, spa_vs_baselines
from lib.evaluation.sharpe import MIN_POINTS, is_constant
from lib.tables import LONG_SHORT, STRATEGY


class Paired(NamedTuple):
    """A paired difference (model minus the other) and its percentile interval at the run's alpha."""

    estimate: Estimate
    low: Estimate
    high: Estimate
    block_length: float | None = None


def _paired(diff: np.ndarray, statistic, reps: int, seed: int, alpha: float, block: float | None) -> Paired:
    ci = bootstrap_ci(diff, statistic, reps, seed, alpha, block)
    reason = ci["reason"] or "undefined"
    return Paired(
        Estimate.of(ci["estimate"], reason),
        Estimate.of(ci["low"], reason),
        Estimate.of(ci["high"], reason),
        ci["block_length"],
    )


def paired_active(
    model: np.ndarray,
    others: Mapping[str, np.ndarray],
    ppy: int,
    reps: int,
    seed: int,
    alpha: float,
    block: float | None = None,
) -> dict[str, Paired]:
    """Per other book: the active return a year, mean(r_model - r_other) x ppy, of daily simple
    returns on the same dates, and its 1 - alpha percentile interval under the stationary block
    bootstrap of the daily differences (Politis & Romano 1994; blocks of dates, so each date keeps
    both books and the serial dependence within a block; mean block length `block`, default
    Politis & White's for the difference). Raises ValueError on misaligned input."""
    m = np.asarray(model, float).ravel()
    out = {}
    for name, other in others.items():
        o = np.asarray(other, float).ravel()
        if o.shape != m.shape:
            raise ValueError(f"paired_active: {name} has {o.size} returns, the model {m.size}")
        out[str(name)] = _paired(m - o, lambda d: mean_annual_of(d, ppy), reps, seed, alpha, block)
    return out


def ic_difference(
    model: pd.DataFrame,
    other: pd.DataFrame,
    min_cross_section: int,
    reps: int,
    seed: int,
    alpha: float,
    column: str = "rank_ic",
    block: float | None = None,
) -> Paired:
    """Mean over dates of the model's per-date IC (`forecast.per_date_ic`, `column` rank_ic or ic)
    minus the other prediction set's, on the dates where both are defined (paired by date), with its
    1 - alpha percentile interval under the stationary block bootstrap of the per-date differences
    (blocks of dates: consecutive labels overlap). Undefined with fewer than 3 common dates."""
    a = per_date_ic(model, min_cross_section)[["date", column]]
    b = per_date_ic(other, min_cross_section)[["date", column]]
    both = a.merge(b, on="date", suffixes=("_model", "_other"))
    diff = (both[f"{column}_model"] - both[f"{column}_other"]).to_numpy(float)
    if len(diff) < MIN_POINTS:
        return _pooled_ic_difference(model, other, reps, seed, alpha)
    return _paired(diff, lambda d: float(np.mean(d)), reps, seed, alpha, block)


def _pooled_ic_difference(model: pd.DataFrame, other: pd.DataFrame, reps: int, seed: int, alpha: float) -> Paired:
    """Too few tickers for a per-date IC: the pooled Rank IC (`forecast.rank_ic`) of the model minus the
    other's, both on the model's labels, with the block bootstrap over dates of the date x ticker matrices."""
    _, pm, y = ic_matrices(model)
    _, po, _ = ic_matrices(other)
    if po.shape != pm.shape:
        why = Estimate(None, "the two prediction sets are not on the same rows")
        return Paired(why, why, why)

    ic_model, ic_other = rank_ic_of_dates(pm, y), rank_ic_of_dates(po, y)

    def diff(dates: np.ndarray) -> float | None:
        ia, ib = ic_model(dates), ic_other(dates)
        return None if ia is None or ib is None else ia - ib

    block = block_length(np.column_stack([pm, po, y]))  # resampled by date index, as of the matrices themselves
    ci = bootstrap_ci(np.arange(len(pm)), diff, reps, seed, alpha, block)
    reason = ci["reason"] or "undefined"
    return Paired(Estimate.of(ci["estimate"], reason), Estimate.of(ci["low"], reason), Estimate.of(ci["high"], reason))


def spa_against(model: np.ndarray, baselines: Mapping[str, np.ndarray], reps: int, seed: int) -> dict[str, Estimate]:
    """Hansen's SPA (consistent p-values) of the model's daily returns against the baselines
    (`resampling.spa_vs_baselines`): "vs_<name>" (H0: the model does not beat that baseline),
    "beats_all" (the largest of those: the model beats every baseline) and "beaten_by_any"
    (H0: no baseline beats the model, after the search over all of them)."""
    spa = spa_vs_baselines(model, baselines, reps, seed)
    out = {f"vs_{k}": Estimate.of(v["consistent"], v["reason"]) for k, v in spa["vs_each"].items()}
    out["beats_all"] = Estimate.of(spa["beats_all"]["consistent"], "undefined for some baseline")
    out["beaten_by_any"] = Estimate.of(spa["beaten_by_any"]["consistent"], spa["beaten_by_any"]["reason"])
    return out


class ConfidenceSet(NamedTuple):
    """The Model Confidence Set at level `alpha`: per book, whether it is in the set and its MCS
    p-value (a book is in the set when its p-value is > alpha, as arch decides); `reason` notes books decided
    without the bootstrap, or why the set is undefined."""

    included: dict[str, bool]
    pvalues: dict[str, Estimate]
    alpha: float
    block_length: int | None
    reason: str = ""


def model_confidence_set(
    books: Mapping[str, np.ndarray], alpha: float, reps: int, seed: int, block: float | None = None
) -> ConfidenceSet:
    """Hansen, Lunde & Nason (2011), "The Model Confidence Set", Econometrica 79(2), via
    `arch.bootstrap.MCS` (method R, stationary bootstrap, mean block length `block` rounded, default
    `resampling.block_length` of the losses; seeded with `default_rng(seed)`), with losses = -daily
    returns: the set of books with the highest expected return, at confidence 1 - alpha.

    Decided without the bootstrap, which cannot studentise a zero-variance difference: books with
    the same daily returns are one book (all in or all out, one p-value); a book that another beats
    by the same amount every day is out with p-value 0; a single book left is the set (p-value 1).
    None with a reason for fewer than 3 days. Raises ValueError on non-finite or misaligned input."""
    names = [str(k) for k in books]
    r = np.column_stack([np.asarray(v, float).ravel() for v in books.values()]) if names else np.empty((0, 0))
    if not names or not np.all(np.isfinite(r)):
        raise ValueError("model_confidence_set: need at least one book of finite returns")
    if r.shape[0] < MIN_POINTS:
        why = Estimate(None, f"too few days (n={r.shape[0]} < {MIN_POINTS})")
        return ConfidenceSet({}, {n: why for n in names}, alpha, None, why.reason)
    same, beaten = _degenerate(r, names)
    live = [j for j in range(len(names)) if same[j] == j and j not in beaten]
    p = np.zeros(len(names))
    notes = [f"{names[j]} beaten by {names[i]} by a constant every day" for j, i in beaten.items()]
    notes += [f"{names[j]} has {names[same[j]]}'s returns" for j in range(len(names)) if same[j] != j]
    b = None
    if len(live) == 1:
        p[live[0]] = 1.0
    else:
        losses = -r[:, live]
        b = max(1, round(block if block is not None else block_length(losses)))
        mcs = MCS(losses, size=alpha, reps=reps, block_size=b, method="R", seed=np.random.default_rng(seed))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            mcs.compute()
        for idx, pv in mcs.pvalues["Pvalue"].items():
            p[live[int(idx)]] = float(pv)
    p = np.array([p[same[j]] if j not in beaten else 0.0 for j in range(len(names))])
    return ConfidenceSet(
        {n: bool(p[j] > alpha) for j, n in enumerate(names)},
        {n: Estimate.of(float(p[j])) for j, n in enumerate(names)},
        alpha,
        b,
        "; ".join(notes),
    )


def _degenerate(r: np.ndarray, names: list[str]) -> tuple[list[int], dict[int, int]]:
    """same[j]: the first book with book j's daily returns (j itself if none); beaten: book -> a book
    that beats it by a positive constant every day."""
    same, beaten = list(range(len(names))), {}
    for j in range(len(names)):
        for i in range(j):
            d = r[:, j] - r[:, i]
            if not is_constant(d, float(np.std(d))):
                continue
            mean = float(np.mean(d))
            scale = max(float(np.max(np.abs(r[:, [i, j]]))), math.ulp(1.0))
            if abs(mean) <= 1e-12 * scale and same[j] == j:
                same[j] = same[i]
            elif mean > 0:
                beaten.setdefault(i, j)
            elif mean < 0:
                beaten.setdefault(j, i)
    return same, beaten


def comparison_section(
    returns: Mapping[str, np.ndarray],
    preds: pd.DataFrame,
    baseline_preds: Mapping[str, pd.DataFrame],
    cfg: Mapping,
    ppy: int,
) -> Section:
    """metrics.json's `comparison`: the model's book (`returns[STRATEGY]`) against every other book
    except its own long-short one (paired active return a year with its interval; for the baseline
    model families in `baseline_preds` also the per-date Rank IC difference), SPA of the model against
    all of them, and the Model Confidence Set over every book in `returns` (daily returns on the same dates)."""
    reps, seed, alpha = cfg["bootstrap_reps"], cfg["seed"], cfg["alpha"]
    model = returns[STRATEGY]
    others = {k: v for k, v in returns.items() if k not in (STRATEGY, LONG_SHORT)}
    out = Section()
    for name, paired in paired_active(model, others, ppy, reps, seed, alpha).items():
        vs = out.section(f"vs_{name}")
        vs.add("active_annual", paired.estimate)
        vs.add("active_low", paired.low)
        vs.add("active_high", paired.high)
        if name in baseline_preds:
            ic = ic_difference(preds, baseline_preds[name], cfg["min_cross_section"], reps, seed, alpha)
            vs.add("rank_ic_diff", ic.estimate)
            vs.add("rank_ic_diff_low", ic.low)
            vs.add("rank_ic_diff_high", ic.high)
    spa = out.section("spa")
    for key, p in spa_against(model, others, cfg["spa_reps"], seed).items():
        spa.add(f"{key}_pvalue", p)
    mcs = model_confidence_set(returns, alpha, reps, seed)
    in_set = out.section("mcs")
    for name in returns:
        member = mcs.included.get(name)
        in_set.put(f"{name}_in_set", None if member is None else int(member), mcs.reason or UNDEFINED)
        in_set.add(f"{name}_pvalue", mcs.pvalues[name])
    return out
