"""Resampling inference on a backtest: stationary block bootstrap intervals, Monte Carlo paths,
Hansen's SPA test against the baselines and the break-even cost (the permutation null's draws and
loop: `lib.evaluation.permutation`).

All inputs are per-period (daily) numbers and nothing is annualised here. Undefined results are
never inf or NaN: these functions put `None` and a "reason" in their dict. Every random draw comes
from `np.random.default_rng(seed)`, so the same inputs and seed give identical floats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

import numpy as np
from arch.bootstrap import SPA, StationaryBootstrap, optimal_block_length

from lib.evaluation.sharpe import MIN_POINTS, is_constant

QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)


# ------------------------------------------------------------------ block bootstrap (arch)


def block_length(x: np.ndarray) -> float:
    """Mean block length for the stationary bootstrap (Politis & Romano 1994): the optimal length
    of Politis & White (2004) with the correction of Patton, Politis & White (2009), via
    `arch.bootstrap.optimal_block_length`. For 2-D input (rows = dates) the largest over the
    columns, so that every column's dependence is kept. Columns that are constant, non-finite or
    too short for the estimator are skipped; with none left the fallback is n^(1/3), the rate of
    the optimal length. Always in [1, n] (1 for n <= 1)."""
    arr = np.atleast_1d(np.asarray(x, dtype=float))
    arr = arr.reshape(len(arr), -1) if arr.ndim != 2 else arr
    n = arr.shape[0]
    if n <= 1:
        return 1.0
    found: list[float] = []
    for col in arr.T:
        if not np.all(np.isfinite(col)) or is_constant(col, float(np.std(col))):
            continue
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                b = float(optimal_block_length(col)["stationary"].iloc[0])
        except (ValueError, ZeroDivisionError, FloatingPointError, IndexError):
            continue
        if math.isfinite(b):
            found.append(b)
    b = max(found) if found else n ** (1.0 / 3.0)
    return float(min(max(b, 1.0), n))


def _given_block(block: float | None, x: np.ndarray) -> float:
    if block is None:
        return block_length(x)
    if not (math.isfinite(block) and block >= 1.0):
        raise ValueError(f"block must be a finite mean block length >= 1, got {block}")
    return float(block)


def _as_arrays(data: np.ndarray | tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    if isinstance(data, tuple):
        arrays = tuple(np.asarray(a, dtype=float) for a in data)
    else:
        arrays = (np.asarray(data, dtype=float),)
    if not arrays or any(a.ndim == 0 for a in arrays):
        raise ValueError("bootstrap data must be arrays with rows = dates")
    if len({a.shape[0] for a in arrays}) != 1:
        raise ValueError(f"arrays resampled together need the same number of rows, got {[a.shape[0] for a in arrays]}")
    return arrays


def finite_or_none(v: object) -> float | None:
    """`v` as a float, or None where it is None, NaN or infinite (an undefined statistic)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def bootstrap_ci(
    data: np.ndarray | tuple[np.ndarray, ...],
    statistic: Callable[..., float | None],
    reps: int,
    seed: int,
    alpha: float = 0.05,
    block: float | None = None,
) -> dict:
    """Percentile interval of `statistic` under the stationary block bootstrap
    (`arch.bootstrap.StationaryBootstrap`, Politis & Romano 1994).

    `data` is one array or a tuple of arrays with the same number of rows; rows are dates and are
    resampled together (the same row indices for every array), so a 2-D array of strategy and
    benchmark returns, or a (predictions, labels) pair of date x ticker matrices, keeps each date
    whole. `statistic` gets the resampled arrays as positional arguments, in order. Resamples where
    it returns None or NaN are dropped and counted in "dropped". `block` defaults to
    `block_length` of all columns of all arrays. Returns {"estimate", "low", "high",
    "block_length", "reps", "dropped", "reason"}: the interval is the alpha/2 and 1 − alpha/2
    quantiles of the kept resamples; values are None (with a reason) for fewer than 3 rows or
    when the statistic is undefined."""
    if reps < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"bootstrap_ci: need reps >= 1 and 0 < alpha < 1, got reps={reps}, alpha={alpha}")
    arrays = _as_arrays(data)
    n = arrays[0].shape[0]
    out: dict = {
        "estimate": None,
        "low": None,
        "high": None,
        "block_length": None,
        "reps": int(reps),
        "dropped": 0,
        "reason": "",
    }
    if n < MIN_POINTS:
        out["reason"] = f"too few rows (n={n} < {MIN_POINTS})"
        return out
    b = _given_block(block, np.column_stack([a.reshape(n, -1) for a in arrays]))
    out["block_length"] = b
    out["estimate"] = finite_or_none(statistic(*arrays))
    bs = StationaryBootstrap(b, *arrays, seed=np.random.default_rng(seed))
    values = [finite_or_none(statistic(*pos)) for pos, _ in bs.bootstrap(reps)]
    kept = np.array([v for v in values if v is not None], dtype=float)
    out["dropped"] = int(reps - kept.size)
    if kept.size:
        low, high = np.quantile(kept, [alpha / 2, 1 - alpha / 2])
        out["low"], out["high"] = float(low), float(high)
    reasons = []
    if out["estimate"] is None:
        reasons.append("statistic undefined on the full sample")
    if not kept.size:
        reasons.append("statistic undefined in every resample")
    out["reason"] = "; ".join(reasons)
    return out


def _quantiles(x: np.ndarray) -> dict[str, float]:
    return {f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(x, QUANTILES), strict=True)}


def monte_carlo(returns: np.ndarray, paths: int, seed: int, block: float | None = None) -> dict:
    """Distribution of outcomes over `paths` stationary-bootstrap resamples of a daily simple
    return series, each as long as the original (blocks of mean length `block`, default
    `block_length(returns)`, wrapping around the end).

    The (paths x days) index matrix comes from arch's compiled sampler
    (`StationaryBootstrap.update_indices`, one call per path); everything after is vectorised.
    Returns {"paths", "days", "block_length", "final_multiple": quantiles of prod(1 + r),
    "max_drawdown": quantiles of min(equity / running peak − 1) with the start at 1 counted as a
    peak (<= 0, as in lib.evaluation.performance), "prob_loss": share of paths ending below 1, "reason"}; the
    quantile keys are q05, q25, q50, q75, q95. Raises ValueError on non-finite returns."""
    r = np.asarray(returns, dtype=float).ravel()
    if paths < 1:
        raise ValueError(f"monte_carlo: paths must be >= 1, got {paths}")
    if not np.all(np.isfinite(r)):
        raise ValueError("monte_carlo: returns must be finite")
    n = int(r.size)
    out: dict = {
        "paths": int(paths),
        "days": n,
        "block_length": None,
        "final_multiple": None,
        "max_drawdown": None,
        "prob_loss": None,
        "reason": "",
    }
    if n < MIN_POINTS:
        out["reason"] = f"too few returns (n={n} < {MIN_POINTS})"
        return out
    b = _given_block(block, r)
    bs = StationaryBootstrap(b, r, seed=np.random.default_rng(seed))
    idx = np.stack([bs.update_indices() for _ in range(paths)])
    equity = np.cumprod(1.0 + r[idx], axis=1)
    peak = np.maximum(np.maximum.accumulate(equity, axis=1), 1.0)
    mdd = (equity / peak - 1.0).min(axis=1)
    final = equity[:, -1]
    out.update(
        block_length=b,
        final_multiple=_quantiles(final),
        max_drawdown=_quantiles(mdd),
        prob_loss=float(np.mean(final < 1.0)),
    )
    return out


# ------------------------------------------------------------------ Hansen's SPA (arch)


def spa_test(
    benchmark: np.ndarray,
    models: np.ndarray | Mapping[str, np.ndarray],
    reps: int,
    seed: int,
    block: float | None = None,
) -> dict:
    """Hansen's (2005) Superior Predictive Ability test on daily RETURNS, via `arch.bootstrap.SPA`
    with losses = −returns and the stationary bootstrap.

    H0: no model has a higher mean daily return than the benchmark (E[r_model − r_bench] <= 0
    for every model); a small p-value says at least one model beats the benchmark after
    accounting for the search over all of them. Returns {"lower", "consistent", "upper"} (Hansen's
    three p-values; "consistent" is the one to report), "models", "n", "block_length", "reps",
    "reason".

    Studentisation: Hansen's statistic is max(0, max_k sqrt(n)·d̄_k / ω̂_k), with ω̂_k² the
    stationary-bootstrap long-run variance of the differential d_k (his eq. for ω̂, after Politis
    & Romano 1994). arch 8.0.0's `SPA.compute` ignores its `studentize` flag (it compares raw
    means), so each d_k is divided by its ω̂_k here and arch gets a zero benchmark and models −d/ω̂;
    with one model this changes nothing. The floor at 0 is applied too: when no model's mean beats
    the benchmark's, the statistic is 0 and all p-values are 1 (arch, without the floor, can give ~0.5).

    Degenerate cases are decided without the bootstrap: a model whose return differs from the
    benchmark's by the same amount every day beats it for certain if that amount is > 0 (all
    p-values 0) and can never beat it otherwise (it is left out; all 1 if none is left). None with a
    reason for fewer than 3 days. Raises ValueError on non-finite or misaligned input."""
    names, cols = _model_columns(models)
    bench = np.asarray(benchmark, dtype=float).ravel()
    mat = np.column_stack(cols)
    if mat.shape[0] != bench.size:
        raise ValueError(f"spa_test: models have {mat.shape[0]} rows, benchmark {bench.size}")
    if not (np.all(np.isfinite(bench)) and np.all(np.isfinite(mat))):
        raise ValueError("spa_test: returns must be finite")
    n = int(bench.size)
    out: dict = {
        "lower": None,
        "consistent": None,
        "upper": None,
        "models": names,
        "n": n,
        "block_length": None,
        "reps": int(reps),
        "reason": "",
    }
    if n < MIN_POINTS:
        out["reason"] = f"too few days (n={n} < {MIN_POINTS})"
        return out
    diff = mat - bench[:, None]  # = loss_bench - loss_model: positive when the model earns more
    const = np.array([is_constant(d, float(np.std(d))) for d in diff.T])
    means = diff.mean(axis=0)
    if np.any(const & (means > 0)):
        winners = [nm for nm, c, m in zip(names, const, means, strict=True) if c and m > 0]
        out.update(
            lower=0.0,
            consistent=0.0,
            upper=0.0,
            reason=f"{', '.join(winners)} beat the benchmark by a constant every day",
        )
        return out
    live = ~const
    if not live.any():
        out.update(
            lower=1.0,
            consistent=1.0,
            upper=1.0,
            reason="every model differs from the benchmark by a constant <= 0 every day",
        )
        return out
    if not live.all():
        out["reason"] = "left out (constant difference <= 0): " + ", ".join(
            nm for nm, c in zip(names, const, strict=True) if c
        )
    b = _given_block(block, diff[:, live])
    out["block_length"] = b
    if means[live].max() <= 0:
        out.update(
            lower=1.0,
            consistent=1.0,
            upper=1.0,
            reason=(out["reason"] + "; " if out["reason"] else "")
            + "no model has a higher mean return than the benchmark (SPA statistic = 0)",
        )
        return out
    d = diff[:, live] / np.sqrt(_spa_kernel_variance(diff[:, live], b))
    spa = SPA(np.zeros(n), -d, block_size=b, reps=reps, bootstrap="stationary", seed=np.random.default_rng(seed))
    spa.compute()
    p = spa.pvalues
    out.update(lower=float(p["lower"]), consistent=float(p["consistent"]), upper=float(p["upper"]))
    return out


def _spa_kernel_variance(d: np.ndarray, block: float) -> np.ndarray:
    """Per column, ω̂² = γ̂0 + 2·Σ_{i=1}^{n−1} κ(n, i)·γ̂_i with κ(n, i) = (1 − i/n)(1 − q)^i +
    (i/n)(1 − q)^(n−i), q = 1/block: the variance of sqrt(n)·mean under the stationary bootstrap
    (Politis & Romano 1994, used by Hansen 2005 to studentise the SPA statistic)."""
    n = d.shape[0]
    dev = d - d.mean(axis=0)
    spec = np.fft.rfft(dev, 2 * n, axis=0)
    acov = np.fft.irfft(spec * np.conj(spec), 2 * n, axis=0)[:n] / n  # γ̂_i, i = 0..n-1
    i = np.arange(1, n)
    q = 1.0 / block
    kappa = (1 - i / n) * (1 - q) ** i + (i / n) * (1 - q) ** (n - i)
    return acov[0] + 2 * (kappa[:, None] * acov[1:]).sum(axis=0)


def _model_columns(models: np.ndarray | Mapping[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    if isinstance(models, Mapping):
        if not models:
            raise ValueError("spa_test: no models")
        return [str(k) for k in models], [np.asarray(v, dtype=float).ravel() for v in models.values()]
    arr = np.asarray(models, dtype=float)
    arr = arr.reshape(len(arr), -1)
    return [str(i) for i in range(arr.shape[1])], list(arr.T)


def spa_vs_baselines(
    strategy: np.ndarray, baselines: Mapping[str, np.ndarray], reps: int, seed: int, block: float | None = None
) -> dict:
    """Does the strategy beat the baselines on mean daily return, and is it beaten by any of them?

    SPA has one benchmark and many candidate models and asks whether any model beats the
    benchmark. Two framings follow (each test draws from `default_rng(seed)`):

    - "vs_each"[name]: SPA with the baseline as benchmark and the strategy as the only model.
      H0: mean(strategy − baseline) <= 0; a small p-value says the strategy beats that baseline.
    - "beats_all": the largest of those p-values, per type. "The strategy beats every baseline" is
      an intersection of alternatives, so by the intersection-union principle (Berger 1982) the
      max p-value is a valid level test for it, with no multiplicity correction.
    - "beaten_by_any": SPA with the strategy as benchmark and all baselines as models. H0: no
      baseline has a higher mean daily return than the strategy; a small p-value says some
      baseline beats it even after accounting for the number of baselines tried.

    `block` defaults to `block_length` of the strategy − baseline differences (all columns), one
    length for every test. Each entry is a `spa_test` dict."""
    s = np.asarray(strategy, dtype=float).ravel()
    if not baselines:
        raise ValueError("spa_vs_baselines: no baselines")
    base = {str(k): np.asarray(v, dtype=float).ravel() for k, v in baselines.items()}
    if block is None and all(v.size == s.size for v in base.values()) and np.all(np.isfinite(s)):
        block = block_length(np.column_stack([s - v for v in base.values()]))
    vs_each = {k: spa_test(v, {"strategy": s}, reps, seed, block) for k, v in base.items()}
    beats_all: dict = {}
    for kind in ("lower", "consistent", "upper"):
        ps = [r[kind] for r in vs_each.values()]
        beats_all[kind] = None if any(p is None for p in ps) else float(max(ps))
    return {
        "vs_each": vs_each,
        "beats_all": beats_all,
        "beaten_by_any": spa_test(s, base, reps, seed, block),
        "block_length": block,
        "reps": int(reps),
    }


# ------------------------------------------------------------------ break-even cost


def break_even_cost(edge: Callable[[float], float | None], grid: list[float], iterations: int = 8) -> dict:
    """The edge (e.g. the annualised active return over buy-and-hold) at each cost of `grid` (bps per
    side), and the cost where it first falls to zero: bracketed on the grid, then bisected
    `iterations` times (the edge falls with cost, as a strategy that trades more than its benchmark
    pays more). None with a reason when the edge is <= 0 at the lowest cost or still > 0 at the
    highest. Returns {"grid_bps", "edge", "break_even_bps", "reason"}."""
    costs = sorted(float(c) for c in grid)
    edges = [finite_or_none(edge(c)) for c in costs]
    out: dict = {"grid_bps": costs, "edge": edges, "break_even_bps": None, "reason": ""}
    if not costs or edges[0] is None:
        out["reason"] = "edge undefined at the lowest cost"
        return out
    if edges[0] <= 0:
        out["reason"] = f"no edge even at {costs[0]:g} bps"
        return out
    for lo, hi, e_hi in zip(costs, costs[1:], edges[1:], strict=False):
        if e_hi is None:
            out["reason"] = f"edge undefined at {hi:g} bps"
            return out
        if e_hi <= 0:
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                e_mid = finite_or_none(edge(mid))
                if e_mid is None:
                    break
                lo, hi = (mid, hi) if e_mid > 0 else (lo, mid)
            out["break_even_bps"] = 0.5 * (lo + hi)
            return out
    out["reason"] = f"edge still positive at {costs[-1]:g} bps"
    return out
