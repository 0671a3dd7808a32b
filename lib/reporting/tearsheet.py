"""The tear sheet: one self-contained HTML file (inline CSS, PNGs as data URIs, no script, no link,
no network reference), rendered in memory from evaluate's metrics and figures."""

from __future__ import annotations

import base64
import html
from typing import Any

from lib.tables import BOOK_LABELS, BOOKS, STRATEGY

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2433}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d7dbe2;padding-bottom:4px}
.sub{color:#5b6578;font-size:13px;margin-bottom:14px}
.verdict{font-size:18px;background:#fff;border-left:6px solid #c0392b;padding:12px 16px;margin:12px 0 18px}
.verdict.pass{border-left-color:#1e8449}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #e1e4ea;border-radius:6px;
padding:8px 12px;min-width:150px;flex:1}.card b{display:block;font-size:20px}.card span{font-size:12px;color:#5b6578}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0 10px}
th,td{border:1px solid #e1e4ea;padding:4px 9px;text-align:right}th{background:#eef1f5}td:first-child,th:first-child{text-align:left}
img{max-width:100%;background:#fff;border:1px solid #e1e4ea;margin:6px 0}
.two{display:grid;grid-template-columns:1fr 1fr;gap:12px}.note{font-size:12px;color:#5b6578;max-width:1000px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(x: float | None, d: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{d}f} %"


def _num(x: float | None, f: str = ".2f") -> str:
    return "n/a" if x is None else format(x, f)


def _ci(iv: dict | None, fmt=_num) -> str:
    if not iv or iv.get("low") is None:
        return ""
    return f" <small>[{fmt(iv['low'])}, {fmt(iv['high'])}]</small>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{value}</b><span>{label}</span></div>'


def _p3(x: float | None) -> str:
    return _num(x, ".3f")


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
                f"<style>{CSS}</style></head><body><main>"
            ),
            f"<h1>{_e(params['model']['arch'])} strategy: out-of-sample tear sheet</h1>",
            (
                f"<div class='sub'>{_e(tickers)} · {_e(p['start'])} … {_e(p['end'])} ({p['sessions']} sessions) · "
                f"after costs of {_num(cost['current_bps'], 'g')} bps per side · rebalance "
                f"{_e(params['backtest']['rebalance'])}</div>"
            ),
            f"<div class='verdict{' pass' if passed else ''}'><b>Verdict:</b> {_e(verdict)}.</div>",
        ]
    )


def _cards(m: dict[str, Any]) -> str:
    """The headline numbers, one card each."""
    sig, s, be = m["significance"], m[STRATEGY], m["cost_sensitivity"]["break_even_bps"]
    return (
        "<div class='cards'>"
        + "".join(
            [
                _card(_num(s["sharpe"]) + _ci(m["intervals"][STRATEGY]["sharpe"]), "Sharpe [95 % bootstrap]"),
                _card(_p3(sig["psr"]), "PSR: P(true Sharpe > 0)"),
                _card(_p3(sig["permutation_pvalue"]), f"permutation p ({sig['permutations']} shuffles)"),
                _card(_p3(sig["spa_vs_benchmark_pvalue"]), "SPA p vs buy-and-hold"),
                _card(_p3(sig["dsr_100_trials"]), "DSR if best of 100 trials"),
                _card(_num(be, ".1f") + " bps" if be is not None else "n/a", "break-even cost per side"),
            ]
        )
        + "</div>"
    )


def _performance_plots(pngs: dict[str, bytes]) -> str:
    """Equity and drawdown, then rolling Sharpe and the monthly returns."""
    return "\n".join(
        [
            "<h2>Equity and drawdown</h2>" + _img(pngs["equity_drawdown.png"], "equity and drawdown"),
            "<h2>Rolling Sharpe and monthly returns</h2>"
            + _img(pngs["rolling_sharpe.png"], "rolling Sharpe")
            + _img(pngs["monthly_returns.png"], "monthly returns"),
        ]
    )


# the book table's rows: label, metrics key, format, intervals key (None: no interval)
_BOOK_ROWS = [
    ("total return", "total_return", _pct, None),
    ("CAGR", "cagr", _pct, "cagr"),
    ("ann. volatility", "annual_volatility", _pct, None),
    ("Sharpe", "sharpe", _num, "sharpe"),
    ("Sharpe p (Lo)", "sharpe_pvalue", _p3, None),
    ("Sortino", "sortino", _num, None),
    ("max drawdown", "max_drawdown", _pct, "max_drawdown"),
    ("Calmar", "calmar", _num, None),
    ("exposure", "exposure", _pct, None),
    ("turnover / year", "turnover", _num, None),
    ("trades", "n_trades", str, None),
    ("costs paid", "costs", lambda x: _num(x, ",.0f"), None),
]


def _book_table(m: dict[str, Any], cfg: dict) -> str:
    """The strategy's metrics beside the baselines', with bootstrap intervals."""
    iv = m["intervals"]
    rows = [
        [label] + [fmt(m[b][key]) + (_ci(iv[b][ci], fmt) if ci else "") for b in BOOKS]
        for label, key, fmt, ci in _BOOK_ROWS
    ]
    return (
        "<h2>Metrics beside the baselines</h2>"
        + _table(["", *(BOOK_LABELS[b] for b in BOOKS)], rows)
        + f"<p class='note'>[low, high]: {100 * (1 - cfg['alpha']):.0f} % percentile intervals of the "
        f"stationary block bootstrap ({cfg['bootstrap_reps']} resamples, block length by Politis-White).</p>"
    )


def _significance(m: dict[str, Any], cfg: dict) -> str:
    """The strategy minus each baseline: active return, information ratio, t-test and SPA p-values."""
    sig, vb, vm = m["significance"], m["vs_benchmark"], m["vs_momentum"]
    return _table(
        ["strategy minus", "active return / year", "information ratio", "t-test p", "SPA p"],
        [
            [
                "buy-and-hold",
                _pct(vb["mean_annual"]) + _ci(m["intervals"]["vs_benchmark"]["mean_annual"], _pct),
                _num(vb["information_ratio"]),
                _p3(vb["pvalue"]),
                _p3(sig["spa_vs_benchmark_pvalue"]),
            ],
            [
                "momentum baseline",
                _pct(vm["mean_annual"]),
                _num(vm["information_ratio"]),
                _p3(vm["pvalue"]),
                _p3(sig["spa_vs_momentum_pvalue"]),
            ],
        ],
    ) + (
        f"<p class='note'>Hansen's SPA (consistent p-value, {cfg['spa_reps']} resamples): beats every baseline "
        f"p = {_p3(sig['spa_beats_all_pvalue'])}; some baseline beats the strategy p = "
        f"{_p3(sig['spa_beaten_by_any_pvalue'])}.</p>"
    )


def _folds(series: dict[str, Any]) -> str:
    """One row per walk-forward fold."""
    rows = [
        [
            str(f["fold"]),
            f"{f['start']} … {f['end']}",
            str(f["sessions"]),
            _num(f["sharpe"]),
            _num(f["benchmark_sharpe"]),
            _pct(f["active_annual"]),
            _p3(f["rank_ic"]),
        ]
        for f in series["folds"]
    ]
    return "<h2>Per walk-forward fold</h2>" + _table(
        ["fold", "test window", "sessions", "Sharpe", "buy-and-hold Sharpe", "active / year", "Rank IC"], rows
    )


def _ic_rows(m: dict[str, Any], params: dict) -> list[list[str]]:
    """Pooled IC, directional accuracy, per-date IC (or why not) and the quantile spread."""
    q, cs, qs = m["predictions"], m["cross_sectional_ic"], m["quantile_spread"]
    rows = [
        [
            "pooled Rank IC (dates as the unit)",
            _p3(q["ic"]) + _ci(m["intervals"]["predictions"]["ic"], _p3),
            f"NW s.e. {_p3(q['ic_se'])}, p = {_p3(q['ic_pvalue'])}",
        ],
        [
            "directional accuracy",
            _pct(q["directional_accuracy"]),
            f"naive {_pct(q['naive_accuracy'])}, p = {_p3(q['directional_pvalue'])}",
        ],
    ]
    if cs["rank_ic_mean"] is not None:
        rows += [
            [
                "per-date IC (Qlib): mean / ICIR / t",
                f"{_p3(cs['ic_mean'])} / {_num(cs['ic_ir'])}",
                f"t = {_num(cs['ic_tstat'])} (Newey-West {_num(cs['ic_tstat_nw'])})",
            ],
            [
                "per-date Rank IC: mean / ICIR / t",
                f"{_p3(cs['rank_ic_mean'])} / {_num(cs['rank_ic_ir'])}",
                f"t = {_num(cs['rank_ic_tstat'])} (Newey-West {_num(cs['rank_ic_tstat_nw'])})",
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
            _pct(qs["mean"], 2),
            f"NW t = {_num(qs['tstat_nw'])}, p = {_p3(qs['pvalue'])}",
        ]
    )
    return rows


def _prediction_quality(m: dict[str, Any], pngs: dict[str, bytes], params: dict) -> str:
    return (
        "<h2>Prediction quality</h2>"
        + _table(["", "value", "inference"], _ic_rows(m, params))
        + _img(pngs["ic.png"], "IC over time and quantile spread")
    )


def _costs(m: dict[str, Any], pngs: dict[str, bytes], series: dict[str, Any]) -> str:
    """The cost grid and break-even beside the permutation null."""
    sig, be, grid = m["significance"], m["cost_sensitivity"]["break_even_bps"], series["cost"]
    rows = [
        [f"{c:g}", _pct(e), _num(sh)]
        for c, e, sh in zip(grid["cost_bps"], grid["active_annual"], grid["sharpe"], strict=True)
    ]
    be_text = (
        f"break-even cost {be:.1f} bps per side"
        if be is not None
        else f"break-even: n/a ({_e(m['null_reasons'].get('cost_sensitivity.break_even_bps', ''))})"
    )
    return (
        "<h2>Cost sensitivity and the permutation null</h2><div class='two'><div>"
        + _img(pngs["cost_sensitivity.png"], "cost sensitivity")
        + _table(["cost (bps/side)", "active / year vs buy-and-hold", "strategy Sharpe"], rows)
        + f"<p class='note'>{be_text}: the cost at which the edge over buy-and-hold (both books re-costed) "
        "vanishes.</p></div><div>"
        + _img(pngs["permutation.png"], "permutation null")
        + f"<p class='note'>The same backtest and costs with each ticker's predictions shuffled in time "
        f"({sig['permutations']} times): exposure and turnover stay comparable, timing is destroyed. "
        f"p = share of shuffles with a Sharpe at least the real one (add-one) = "
        f"{_p3(sig['permutation_pvalue'])}.</p></div></div>"
    )


def _sharpe_rows(m: dict[str, Any], alpha: float) -> list[list[str]]:
    """PSR, minimum track record, DSR and the Monte Carlo quantiles."""
    sig = m["significance"]
    min_trl = (
        f"{_num(sig['min_trl_sessions'], '.0f')} sessions ({_num(sig['min_trl_years'], '.1f')} years)"
        if sig["min_trl_sessions"] is not None
        else f"n/a ({_e(m['null_reasons'].get('significance.min_trl_sessions', ''))})"
    )
    return [
        [
            "daily Sharpe, skew, raw kurtosis, n",
            f"{_num(sig['sharpe_daily'], '.4f')}, {_num(sig['skew'])}, {_num(sig['kurtosis'])}, {sig['n']}",
        ],
        ["PSR (Bailey & López de Prado 2012): P(true Sharpe > 0)", _p3(sig["psr"])],
        [f"minimum track record for significance at {alpha}", min_trl],
        ["DSR if this were the best of 10 / 100 trials", f"{_p3(sig['dsr_10_trials'])} / {_p3(sig['dsr_100_trials'])}"],
        ["Monte Carlo: P(loss over the period)", _pct(sig["prob_loss"])],
        [
            "Monte Carlo: final equity multiple q05 / q50 / q95",
            (
                f"{_num(sig['final_multiple_q05'])} / {_num(sig['final_multiple_q50'])} / "
                f"{_num(sig['final_multiple_q95'])}"
            ),
        ],
        [
            "Monte Carlo: max drawdown q05 / q50 / q95",
            (
                f"{_pct(sig['mc_max_drawdown_q05'])} / {_pct(sig['mc_max_drawdown_q50'])} / "
                f"{_pct(sig['mc_max_drawdown_q95'])}"
            ),
        ],
    ]


def _sharpe_inference(m: dict[str, Any], series: dict[str, Any], alpha: float) -> str:
    """Is the Sharpe ratio luck? The table, then how to read the DSR and the Monte Carlo."""
    sig, mc = m["significance"], series["monte_carlo"]
    return (
        "<h2>Is the Sharpe ratio luck?</h2>"
        + _table(["", ""], _sharpe_rows(m, alpha))
        + f"<p class='note'>The DSR deflates the Sharpe ratio by the best one expected from that many "
        f"skill-less trials; here their Sharpe spread is the permutation null's (s.d. "
        f"{_num(sig['null_sharpe_sd'])} a year). For the DSR over the experiments you actually ran, "
        f"run <code>python -m stages.trials</code> (it counts every <code>dvc exp</code> run, failed and "
        f"queued ones too). Monte Carlo: {mc['paths']} stationary-bootstrap paths of "
        f"{mc['days']} sessions.</p>"
    )


def render(m: dict[str, Any], pngs: dict[str, bytes], series: dict[str, Any], verdict: str, params: dict) -> str:
    """The HTML page. `m` is metrics.json's content, `pngs` evaluate's figures, `series` the
    per-fold rows and Monte Carlo dict from `lib.evaluation.study.significance`."""
    cfg = params["evaluate"]
    return "\n".join(
        [
            _header(m, verdict, params),
            _cards(m),
            _performance_plots(pngs),
            _book_table(m, cfg),
            _significance(m, cfg),
            _folds(series),
            _prediction_quality(m, pngs, params),
            _costs(m, pngs, series),
            _sharpe_inference(m, series, cfg["alpha"]),
            "</main></body></html>\n",
        ]
    )
