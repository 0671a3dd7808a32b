"""The tear sheet: one self-contained HTML file (inline CSS, PNGs as data URIs, no script, no link,
no network reference), rendered in memory from evaluate's metrics and figures."""

from __future__ import annotations

from typing import Any

from lib.evaluation.study import StudySeries
from lib.reporting import markup as h
from lib.reporting.live import live_record_section
from lib.reporting.versus import baselines_section, power_table
from lib.tables import BOOK_LABELS, BOOKS, STRATEGY


def _passed(m: dict[str, Any], alpha: float) -> bool:
    """Whether the strategy beat buy-and-hold after costs: a positive edge, significant at `alpha`."""
    vb = m["vs_benchmark"]
    return vb["pvalue"] is not None and vb["pvalue"] < alpha and (vb["mean_annual"] or 0) > 0


def _header(m: dict[str, Any], verdict: str, params: dict) -> str:
    """The document's opening, the title, the study line and the verdict."""
    p, cost = m["period"], m["cost_sensitivity"]
    tickers = ", ".join(params["data"]["tickers"])
    passed = _passed(m, params["evaluate"]["alpha"])
    return "\n".join(
        [
            (
                f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Tear sheet</title>"
                f"<style>{h.CSS}</style></head><body><main>"
            ),
            f"<h1>{h.e(params['model']['arch'])} strategy: out-of-sample tear sheet</h1>",
            (
                f"<div class='sub'>{h.e(tickers)} · {h.e(p['start'])} … {h.e(p['end'])} ({p['sessions']} sessions) · "
                f"after costs of {h.num(cost['current_bps'], 'g')} bps per side · rebalance "
                f"{h.e(params['backtest']['rebalance'])}</div>"
            ),
            f"<div class='verdict{' pass' if passed else ''}'><b>Verdict:</b> {h.e(verdict)}.</div>",
        ]
    )


def _cards(m: dict[str, Any]) -> str:
    """The headline numbers, one card each."""
    sig, s, be = m["significance"], m[STRATEGY], m["cost_sensitivity"]["break_even_bps"]
    return (
        "<div class='cards'>"
        + "".join(
            [
                h.card(h.num(s["sharpe"]) + h.ci(m["intervals"][STRATEGY]["sharpe"]), "Sharpe [95 % bootstrap]"),
                h.card(h.p3(sig["psr"]), "PSR: P(true Sharpe > 0)"),
                h.card(h.p3(sig["permutation_pvalue"]), f"permutation p ({sig['permutations']} shuffles)"),
                h.card(h.p3(sig["spa_vs_benchmark_pvalue"]), "SPA p vs buy-and-hold"),
                h.card(h.p3(sig["dsr_100_trials"]), "DSR if best of 100 trials"),
                h.card(h.num(be, ".1f") + " bps" if be is not None else "n/a", "break-even cost per side"),
            ]
        )
        + "</div>"
    )


def _performance_plots(pngs: dict[str, bytes]) -> str:
    """Equity and drawdown, then rolling Sharpe and the monthly returns."""
    return "\n".join(
        [
            "<h2>Equity and drawdown</h2>" + h.img(pngs["equity_drawdown.png"], "equity and drawdown"),
            "<h2>Rolling Sharpe and monthly returns</h2>"
            + h.img(pngs["rolling_sharpe.png"], "rolling Sharpe")
            + h.img(pngs["monthly_returns.png"], "monthly returns"),
        ]
    )


# the book table's rows: label, metrics key, format, intervals key (None: no interval)
_BOOK_ROWS = [
    ("total return", "total_return", h.pct, None),
    ("CAGR", "cagr", h.pct, "cagr"),
    ("ann. volatility", "annual_volatility", h.pct, None),
    ("Sharpe", "sharpe", h.num, "sharpe"),
    ("Sharpe p (Lo)", "sharpe_pvalue", h.p3, None),
    ("Sortino", "sortino", h.num, None),
    ("max drawdown", "max_drawdown", h.pct, "max_drawdown"),
    ("Calmar", "calmar", h.num, None),
    ("exposure", "exposure", h.pct, None),
    ("turnover / year", "turnover", h.num, None),
    ("trades", "n_trades", str, None),
    ("costs paid", "costs", lambda x: h.num(x, ",.0f"), None),
]


def _book_table(m: dict[str, Any], cfg: dict) -> str:
    """The strategy's metrics beside the baselines', with bootstrap intervals."""
    iv = m["intervals"]
    rows = [
        [label] + [fmt(m[b][key]) + (h.ci(iv[b][ci], fmt) if ci else "") for b in BOOKS]
        for label, key, fmt, ci in _BOOK_ROWS
    ]
    return (
        "<h2>Metrics beside the baselines</h2>"
        + h.table(["", *(BOOK_LABELS[b] for b in BOOKS)], rows)
        + f"<p class='note'>[low, high]: {100 * (1 - cfg['alpha']):.0f} % percentile intervals of the "
        f"stationary block bootstrap ({cfg['bootstrap_reps']} resamples, block length by Politis-White).</p>"
    )


def _significance(m: dict[str, Any], cfg: dict) -> str:
    """The strategy minus each baseline: active return, information ratio, t-test and SPA p-values."""
    sig, vb, vm = m["significance"], m["vs_benchmark"], m["vs_momentum"]
    return h.table(
        ["strategy minus", "active return / year", "information ratio", "t-test p", "SPA p"],
        [
            [
                "buy-and-hold",
                h.pct(vb["mean_annual"]) + h.ci(m["intervals"]["vs_benchmark"]["mean_annual"], h.pct),
                h.num(vb["information_ratio"]),
                h.p3(vb["pvalue"]),
                h.p3(sig["spa_vs_benchmark_pvalue"]),
            ],
            [
                "momentum baseline",
                h.pct(vm["mean_annual"]),
                h.num(vm["information_ratio"]),
                h.p3(vm["pvalue"]),
                h.p3(sig["spa_vs_momentum_pvalue"]),
            ],
        ],
    ) + (
        f"<p class='note'>Hansen's SPA (consistent p-value, {cfg['spa_reps']} resamples): beats every baseline "
        f"p = {h.p3(sig['spa_beats_all_pvalue'])}; some baseline beats the strategy p = "
        f"{h.p3(sig['spa_beaten_by_any_pvalue'])}.</p>"
    )


def _folds(series: StudySeries) -> str:
    """One row per walk-forward fold."""
    rows = [
        [
            str(f["fold"]),
            f"{f['start']} … {f['end']}",
            str(f["sessions"]),
            h.num(f["sharpe"]),
            h.num(f["benchmark_sharpe"]),
            h.pct(f["active_annual"]),
            h.p3(f["rank_ic"]),
        ]
        for f in series.folds
    ]
    return "<h2>Per walk-forward fold</h2>" + h.table(
        ["fold", "test window", "sessions", "Sharpe", "buy-and-hold Sharpe", "active / year", "Rank IC"], rows
    )


def _ic_rows(m: dict[str, Any], params: dict) -> list[list[str]]:
    """Pooled IC, directional accuracy, per-date IC (or why not) and the quantile spread."""
    q, cs, qs = m["predictions"], m["cross_sectional_ic"], m["quantile_spread"]
    rows = [
        [
            "pooled Rank IC (dates as the unit)",
            h.p3(q["ic"]) + h.ci(m["intervals"]["predictions"]["ic"], h.p3),
            f"NW s.e. {h.p3(q['ic_se'])}, p = {h.p3(q['ic_pvalue'])}",
        ],
        [
            "directional accuracy",
            h.pct(q["directional_accuracy"]),
            f"naive {h.pct(q['naive_accuracy'])}, p = {h.p3(q['directional_pvalue'])}",
        ],
    ]
    if cs["rank_ic_mean"] is not None:
        rows += [
            [
                "per-date IC (Qlib): mean / ICIR / t",
                f"{h.p3(cs['ic_mean'])} / {h.num(cs['ic_ir'])}",
                f"t = {h.num(cs['ic_tstat'])} (Newey-West {h.num(cs['ic_tstat_nw'])})",
            ],
            [
                "per-date Rank IC: mean / ICIR / t",
                f"{h.p3(cs['rank_ic_mean'])} / {h.num(cs['rank_ic_ir'])}",
                f"t = {h.num(cs['rank_ic_tstat'])} (Newey-West {h.num(cs['rank_ic_tstat_nw'])})",
            ],
        ]
    else:
        rows.append(
            [
                "per-date IC (Qlib)",
                "n/a",
                (f"fewer than evaluate.min_cross_section = {params['evaluate']['min_cross_section']} tickers per date"),
            ]
        )
    rows.append(
        [
            f"top minus bottom of {qs['quantiles']} groups, per {params['features']['horizon']} sessions",
            h.pct(qs["mean"], 2),
            f"NW t = {h.num(qs['tstat_nw'])}, p = {h.p3(qs['pvalue'])}",
        ]
    )
    return rows


def _prediction_quality(m: dict[str, Any], pngs: dict[str, bytes], params: dict) -> str:
    return (
        "<h2>Prediction quality</h2>"
        + h.table(["", "value", "inference"], _ic_rows(m, params))
        + h.img(pngs["ic.png"], "IC over time and quantile spread")
    )


def _costs(m: dict[str, Any], pngs: dict[str, bytes], series: StudySeries) -> str:
    """The cost grid and break-even beside the permutation null."""
    sig, be, grid = m["significance"], m["cost_sensitivity"]["break_even_bps"], series.cost
    rows = [
        [f"{c:g}", h.pct(e), h.num(sh)]
        for c, e, sh in zip(grid["cost_bps"], grid["active_annual"], grid["sharpe"], strict=True)
    ]
    be_text = (
        f"break-even cost {be:.1f} bps per side"
        if be is not None
        else f"break-even: n/a ({h.e(m['null_reasons'].get('cost_sensitivity.break_even_bps', ''))})"
    )
    return (
        "<h2>Cost sensitivity and the permutation null</h2><div class='two'><div>"
        + h.img(pngs["cost_sensitivity.png"], "cost sensitivity")
        + h.table(["cost (bps/side)", "active / year vs buy-and-hold", "strategy Sharpe"], rows)
        + f"<p class='note'>{be_text}: the cost at which the edge over buy-and-hold (both books re-costed) "
        "vanishes.</p></div><div>"
        + h.img(pngs["permutation.png"], "permutation null")
        + f"<p class='note'>The same backtest and costs with each ticker's predictions shuffled in time "
        f"({sig['permutations']} times): exposure and turnover stay comparable, timing is destroyed. "
        f"p = share of shuffles with a Sharpe at least the real one (add-one) = "
        f"{h.p3(sig['permutation_pvalue'])}.</p></div></div>"
    )


def _sharpe_rows(m: dict[str, Any], alpha: float) -> list[list[str]]:
    """PSR, minimum track record, DSR and the Monte Carlo quantiles."""
    sig = m["significance"]
    min_trl = (
        f"{h.num(sig['min_trl_sessions'], '.0f')} sessions ({h.num(sig['min_trl_years'], '.1f')} years)"
        if sig["min_trl_sessions"] is not None
        else f"n/a ({h.e(m['null_reasons'].get('significance.min_trl_sessions', ''))})"
    )
    return [
        [
            "daily Sharpe, skew, raw kurtosis, n",
            f"{h.num(sig['sharpe_daily'], '.4f')}, {h.num(sig['skew'])}, {h.num(sig['kurtosis'])}, {sig['n']}",
        ],
        ["PSR (Bailey & López de Prado 2012): P(true Sharpe > 0)", h.p3(sig["psr"])],
        [f"minimum track record for significance at {alpha}", min_trl],
        [
            "DSR if this were the best of 10 / 100 trials",
            f"{h.p3(sig['dsr_10_trials'])} / {h.p3(sig['dsr_100_trials'])}",
        ],
        ["Monte Carlo: P(loss over the period)", h.pct(sig["prob_loss"])],
        [
            "Monte Carlo: final equity multiple q05 / q50 / q95",
            (
                f"{h.num(sig['final_multiple_q05'])} / {h.num(sig['final_multiple_q50'])} / "
                f"{h.num(sig['final_multiple_q95'])}"
            ),
        ],
        [
            "Monte Carlo: max drawdown q05 / q50 / q95",
            (
                f"{h.pct(sig['mc_max_drawdown_q05'])} / {h.pct(sig['mc_max_drawdown_q50'])} / "
                f"{h.pct(sig['mc_max_drawdown_q95'])}"
            ),
        ],
    ]


def _sharpe_inference(m: dict[str, Any], series: StudySeries, alpha: float) -> str:
    """Is the Sharpe ratio luck? The table, then how to read the DSR and the Monte Carlo."""
    sig, mc = m["significance"], series.monte_carlo
    return (
        "<h2>Is the Sharpe ratio luck?</h2>"
        + h.table(["", ""], _sharpe_rows(m, alpha))
        + f"<p class='note'>The DSR deflates the Sharpe ratio by the best one expected from that many "
        f"skill-less trials; here their Sharpe spread is the permutation null's (s.d. "
        f"{h.num(sig['null_sharpe_sd'])} a year). For the DSR over the experiments you actually ran, "
        f"run <code>python -m stages.trials</code> (it counts every <code>dvc exp</code> run, failed and "
        f"queued ones too). Monte Carlo: {mc['paths']} stationary-bootstrap paths of "
        f"{mc['days']} sessions.</p>"
    )


def render(
    m: dict[str, Any], pngs: dict[str, bytes], series: StudySeries, verdict: str, params: dict, drift: dict
) -> str:
    """The HTML page. `m` is metrics.json's content, `pngs` evaluate's figures, `series` the
    per-fold rows and Monte Carlo dict from `lib.evaluation.study.significance`."""
    cfg = params["evaluate"]
    return "\n".join(
        [
            _header(m, verdict, params),
            _cards(m),
            _performance_plots(pngs),
            _book_table(m, cfg),
            power_table(m),
            baselines_section(m, cfg),
            live_record_section(m["live"], drift),
            _significance(m, cfg),
            _folds(series),
            _prediction_quality(m, pngs, params),
            _costs(m, pngs, series),
            _sharpe_inference(m, series, cfg["alpha"]),
            "</main></body></html>\n",
        ]
    )
