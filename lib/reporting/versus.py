"""The tear sheet's comparison section: the model's book against every other book (the baseline model
families, buy-and-hold, momentum) with paired intervals, SPA against them all, the Model Confidence Set,
and the long-short book, all read from metrics.json's sections."""

from __future__ import annotations

from typing import Any

from lib.evaluation.books import book_label
from lib.reporting import markup as h
from lib.tables import LONG_SHORT, STRATEGY


def _interval(vs: dict[str, Any], key: str, fmt) -> str:
    low, high = vs.get(f"{key}_low"), vs.get(f"{key}_high")
    return "" if low is None else f" <small>[{fmt(low)}, {fmt(high)}]</small>"


def _pairs(c: dict[str, Any]) -> list[list[str]]:
    def ic(x: float | None) -> str:
        return h.num(x, "+.3f")

    rows = []
    for key, vs in c.items():
        if not key.startswith("vs_"):
            continue
        book = key[3:]
        rows.append(
            [
                h.e(book_label(book)),
                h.pct(vs["active_annual"]) + _interval(vs, "active", h.pct),
                ic(vs["rank_ic_diff"]) + _interval(vs, "rank_ic_diff", ic) if "rank_ic_diff" in vs else "–",
                h.p3(c["spa"].get(f"vs_{book}_pvalue")),
            ]
        )
    return rows


def _confidence_set(c: dict[str, Any], m: dict[str, Any]) -> list[list[str]]:
    mcs = c["mcs"]
    books = [k[: -len("_in_set")] for k in mcs if k.endswith("_in_set")]
    return [
        [
            h.e(book_label(b)),
            {1: "in", 0: "out"}.get(mcs[f"{b}_in_set"], "n/a"),
            h.p3(mcs[f"{b}_pvalue"]),
            h.pct(m[b]["cagr"]) if b in m else "n/a",
            h.num(m[b]["sharpe"]) if b in m else "n/a",
        ]
        for b in books
    ]


def _long_short(m: dict[str, Any]) -> str:
    if LONG_SHORT not in m:
        return "<p class='note'>No long-short book: it needs backtest.rule = rank (top minus bottom by prediction).</p>"
    ls = m[LONG_SHORT]
    return (
        f"<p class='note'>The long-short book (long the top, short the bottom names by prediction, dollar-neutral, "
        f"same costs and engine): CAGR {h.pct(ls['cagr'])}, Sharpe {h.num(ls['sharpe'])} "
        f"(p {h.p3(ls['sharpe_pvalue'])}, Lo's standard error). It has no permutation null: shuffling each "
        "ticker's scores in time makes long-short books that lose on costs alone, so beating them says nothing. A "
        "cross-sectional edge shows here first: it does not carry the market's move.</p>"
    )


def power_table(m: dict[str, Any]) -> str:
    """The minimum detectable effect of each test at 80 % power (metrics.json `power`)."""
    pw = m.get("power")
    if not pw:
        return ""
    rows = [
        ["per-date Rank IC", h.p3(pw["rank_ic"])],
        ["pooled IC", h.p3(pw["pooled_ic"])],
        ["quantile spread (per label horizon)", h.pct(pw["quantile_spread"], 2)],
        ["active return a year over buy-and-hold", h.pct(pw["active_annual"])],
    ]
    if "long_short_sharpe" in pw:
        rows.append(["long-short Sharpe ratio", h.num(pw["long_short_sharpe"])])
        rows.append(["long-short mean return a year", h.pct(pw["long_short_mean_annual"])])
    return (
        "<h2>What this run could have detected</h2>"
        + h.table(["test", f"smallest edge found with {100 * pw['power']:.0f} % probability"], rows)
        + "<p class='note'>From this run's own dates, tickers, label overlap, volatility and costs (never its "
        "estimated edge): (z<sub>1-α</sub> + z<sub>power</sub>) × the test's standard error "
        "(lib/evaluation/power.py; checked against python -m stages.calibrate).</p>"
    )


def baselines_section(m: dict[str, Any], cfg: dict) -> str:
    """Does the model add anything over cheap baselines, in this run, on the same dates and costs?"""
    c = m.get("comparison")
    if not c:
        return ""
    alpha = cfg["alpha"]
    return (
        "<h2>The model against its baselines</h2>"
        + h.table(
            ["model minus", "active return a year", "Rank IC difference (per date)", "SPA p (model beats it)"],
            _pairs(c),
        )
        + f"<p class='note'>[low, high]: {100 * (1 - alpha):.0f} % intervals of the stationary block bootstrap "
        f"over dates (both books of a date together). SPA that the model beats every baseline: p "
        f"{h.p3(c['spa']['beats_all_pvalue'])}.</p>"
        + "<h3>Model Confidence Set</h3>"
        + h.table(["book", f"in the set at {alpha}", "MCS p-value", "CAGR", "Sharpe"], _confidence_set(c, m))
        + "<p class='note'>Hansen, Lunde and Nason (2011): the books that cannot be told apart from the best "
        f"(highest mean daily return) at level {alpha}; {h.e(book_label(STRATEGY))} out means some book beats it.</p>"
        + _long_short(m)
    )
