"""The calibration study's arithmetic (`python -m stages.calibrate`): which of the verdict's tests fired on
a run with a planted signal, the false-alarm and detection rates over seeds with Wilson intervals, the
mean recovered strength with its interval, and the analytic power of `lib.evaluation.power` beside the
observed rate. Pure functions of `metrics.json` dictionaries and the runs' predictions and equity."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from lib.errors import PipelineError
from lib.evaluation.forecast import cross_sectional_ic, quantile_spread
from lib.evaluation.power import nw_standard_error, power_at, z_sum

CONFIDENCE = 0.95  # of every interval the study reports
MIN_SEEDS = 2  # fewer runs per cell: no rate can be estimated


class CalTest(NamedTuple):
    """One test the verdict rests on: where metrics.json has its p-value (or a t-statistic, turned into a
    one-sided p) and the strength it measures."""

    name: str
    label: str
    pvalue: tuple[str, str]
    strength: tuple[str, str]
    from_tstat: bool = False
    null_at_zero: bool = True  # planted strength 0 makes its null true (a rejection is then a false alarm)


TESTS: tuple[CalTest, ...] = (
    CalTest("rank_ic", "per-date Rank IC (NW t)", ("cross_sectional_ic", "rank_ic_tstat_nw"),
            ("cross_sectional_ic", "rank_ic_mean"), from_tstat=True),
    CalTest("pooled_ic", "pooled IC", ("predictions", "ic_pvalue"), ("predictions", "ic")),
    CalTest("quantile_spread", "quantile spread", ("quantile_spread", "pvalue"), ("quantile_spread", "mean")),
    CalTest("vs_benchmark", "book vs buy-and-hold", ("vs_benchmark", "pvalue"), ("vs_benchmark", "mean_annual")),
    # not null at 0: with no signal both books earn the market before costs, so the one that trades less
    # truly beats the other after costs (a model's book trades ~40 % less than momentum's weekly churn)
    CalTest("vs_momentum", "book vs momentum", ("vs_momentum", "pvalue"), ("vs_momentum", "mean_annual"),
            null_at_zero=False),
    CalTest("long_short", "long-short book", ("long_short", "sharpe_pvalue"), ("long_short", "sharpe")),
    CalTest("permutation", "permutation null", ("significance", "permutation_pvalue"), ("strategy", "sharpe")),
)  # fmt: skip


def check_settings(seeds: int, levels: list[float], families: list[str], known: tuple[str, ...]) -> None:
    """One clear line for a study too small to estimate a rate, or naming an unknown family."""
    if seeds < MIN_SEEDS:
        raise PipelineError(f"calibrate: --seeds {seeds} is too few to estimate a rate (need >= {MIN_SEEDS})")
    if not levels or any(not 0.0 < lv < 0.5 for lv in levels):
        raise PipelineError(f"calibrate: --levels must be planted Rank ICs in (0, 0.5), got {levels}")
    unknown = sorted(set(families) - set(known))
    if unknown or not families:
        raise PipelineError(f"calibrate: --families {families}: unknown {unknown}; known: {list(known)}")


def _lookup(metrics: dict[str, Any], path: tuple[str, str]) -> float | None:
    section = metrics.get(path[0])
    value = section.get(path[1]) if isinstance(section, dict) else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def outcomes(metrics: dict[str, Any], alpha: float) -> dict[str, dict[str, Any]]:
    """Per test present in `metrics` (a metrics.json): its one-sided p-value, strength and whether it
    fired (p < alpha). A test whose section is absent (e.g. no long-short book) or that has neither a
    p-value nor a strength (a per-date IC of one asset) does not apply and is left out."""
    out = {}
    for t in TESTS:
        raw = _lookup(metrics, t.pvalue)
        if raw is None and _lookup(metrics, t.strength) is None:
            continue
        p = float(stats.norm.sf(raw)) if (t.from_tstat and raw is not None) else raw
        out[t.name] = {"pvalue": p, "strength": _lookup(metrics, t.strength), "detected": p is not None and p < alpha}
    return out


def standard_errors(preds: pd.DataFrame, active_daily: np.ndarray, params: dict[str, Any]) -> dict[str, float | None]:
    """Each test's standard error from one run's own series, in the units of its strength: the per-date
    Rank IC and quantile spread (Newey-West, 2 x horizon lags, as the tests), the active return a year."""
    horizon, cfg = params["features"]["horizon"], params["evaluate"]
    _, ic = cross_sectional_ic(preds, horizon, cfg["min_cross_section"])
    _, spread = quantile_spread(preds, cfg["quantiles"], horizon)
    active = nw_standard_error(active_daily, 0).value
    return {
        "rank_ic": nw_standard_error(ic["rank_ic"].to_numpy(float), 2 * horizon).value,
        "quantile_spread": nw_standard_error(spread["spread"].to_numpy(float), 2 * horizon).value,
        "vs_benchmark": active * cfg["periods_per_year"] if active is not None else None,
    }


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson (1927) score interval of a binomial proportion k / n: (p + z^2/2n -+ z sqrt(p(1-p)/n +
    z^2/4n^2)) / (1 + z^2/n), which stays inside [0, 1] and is honest at k = 0 or n (Brown, Cai and
    DasGupta 2001, Statist. Sci. 16(2))."""
    if n < 1:
        raise ValueError("wilson: n must be >= 1")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _mean_interval(x: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and its t interval over seeds (None when fewer than 2 values)."""
    if not x:
        return None, None, None
    m = float(np.mean(x))
    if len(x) < 2:
        return m, None, None
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(x) - 1)) * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def summarise(records: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """One row per (kind, family, test, level) over seeds: runs, detections, the rate (the false-alarm
    rate at level 0) with its Wilson interval, the mean recovered strength with its t interval, the mean
    MDE, and the analytic power at the mean recovered strength (mean over runs of
    Phi(strength / se_run - z_{1-alpha})) where a formula exists."""
    frame = pd.DataFrame(records)
    frame["order"] = frame["test"].map({t.name: i for i, t in enumerate(TESTS)})
    rows = []
    for (kind, family, _, test, level), g in frame.groupby(["kind", "family", "order", "test", "level"], sort=True):
        k, n = int(g["detected"].sum()), len(g)
        low, high = wilson(k, n)
        strength = [float(v) for v in g["strength"] if v is not None and math.isfinite(v)]
        mean, s_low, s_high = _mean_interval(strength)
        se = [float(v) for v in g["se"] if v is not None and math.isfinite(v) and v > 0]
        analytic = float(np.mean([power_at(mean, s, alpha) for s in se])) if se and mean is not None else None
        rows.append(
            {
                "kind": kind,
                "family": family,
                "test": test,
                "level": float(level),
                "runs": n,
                "detections": k,
                "rate": k / n,
                "rate_low": low,
                "rate_high": high,
                "strength": mean,
                "strength_low": s_low,
                "strength_high": s_high,
                "mde": float(np.mean(se)) * z_sum(alpha) if se else None,
                "analytic_power": analytic,
            }
        )
    return rows


def acceptance(rows: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """The issues' checks. At level 0 the false-alarm interval of every test whose null strength 0 makes
    true reaches down to alpha or below (book vs momentum is reported, not checked: its null is false
    when the books' costs differ). At the strongest level every family detects the planted signal in most
    runs, and at each level whether every run of every family detects it, by the per-date Rank IC or the
    pooled IC (whichever the kind has)."""
    null = {t.name for t in TESTS if t.null_at_zero}
    zero = [r for r in rows if r["level"] == 0.0 and r["test"] in null]
    signal = [r for r in rows if r["level"] > 0.0 and r["test"] in ("rank_ic", "pooled_ic")]
    top_level = max((r["level"] for r in rows), default=0.0)
    best: dict[tuple, float] = {}
    for r in signal:
        key = (r["kind"], r["family"], r["level"])
        best[key] = max(best.get(key, 0.0), r["rate"])
    return {
        "false_alarm_within_alpha": all(r["rate_low"] <= alpha for r in zero),
        "strongest_level": top_level,
        "strongest_detected_by_every_family": all(rate > 0.5 for key, rate in best.items() if key[2] == top_level),
        "every_run_detects": {
            f"{level:g}": all(rate == 1.0 for key, rate in best.items() if key[2] == level)
            for level in sorted({key[2] for key in best})
        },
    }


def _cell(x: float | None, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The README's table: one line per kind, family, test and level."""
    labels = {t.name: t.label for t in TESTS}
    head = (
        "| kind | family | test | planted Rank IC | runs | rate (95 % CI) | recovered strength (95 % CI) "
        "| analytic power | MDE |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        rate = f"{r['rate']:.2f} ({r['rate_low']:.2f}–{r['rate_high']:.2f})"
        strength = (
            f"{_cell(r['strength'], '.4f')} ({_cell(r['strength_low'], '.4f')}–{_cell(r['strength_high'], '.4f')})"
        )
        lines.append(
            f"| {r['kind']} | {r['family']} | {labels.get(r['test'], r['test'])} | {r['level']:g} | {r['runs']} "
            f"| {rate} | {strength} | {_cell(r['analytic_power'], '.2f')} | {_cell(r['mde'], '.4f')} |"
        )
    return "\n".join(lines)


def readme_table(rows: list[dict[str, Any]]) -> str:
    """The compact table for the README: one line per kind, test and level, one column per family, each
    cell "detections/runs (Wilson interval) · mean recovered strength"."""
    labels = {t.name: t.label for t in TESTS}
    families = list(dict.fromkeys(r["family"] for r in rows))
    lines = [
        "| kind | test | planted Rank IC | " + " | ".join(families) + " |",
        "|---|---|---|" + "---|" * len(families),
    ]
    order = {t.name: i for i, t in enumerate(TESTS)}
    keys = sorted({(r["kind"], r["test"], r["level"]) for r in rows}, key=lambda k: (k[0], order.get(k[1], 99), k[2]))
    cells = {(r["kind"], r["test"], r["level"], r["family"]): r for r in rows}
    for kind, test, level in keys:
        out = []
        for family in families:
            r = cells.get((kind, test, level, family))
            out.append(
                "–"
                if r is None
                else f"{r['detections']}/{r['runs']} ({r['rate_low']:.2f}–{r['rate_high']:.2f}) · "
                f"{_cell(r['strength'], '.3f')}"
            )
        lines.append(f"| {kind} | {labels.get(test, test)} | {level:g} | " + " | ".join(out) + " |")
    return "\n".join(lines)
