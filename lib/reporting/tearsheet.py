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


def render(m: dict[str, Any], pngs: dict[str, bytes], series: dict[str, Any], verdict: str, params: dict) -> str:
    """The HTML page. `m` is metrics.json's content, `pngs` evaluate's figures, `series` the
    per-fold rows and Monte Carlo dict from `lib.evaluation.study.significance`."""
    cfg = params["evaluate"]
    sig, iv, cost = m["significance"], m["intervals"], m["cost_sensitivity"]
    passed = (m["vs_benchmark"]["pvalue"] is not None and m["vs_benchmark"]["pvalue"] < cfg["alpha"]
              and (m["vs_benchmark"]["mean_annual"] or 0) > 0)
    p = m["period"]
    tickers = ", ".join(params["data"]["tickers"])
    parts = [(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Tear sheet</title>"
             f"<style>{CSS}</style></head><body><main>"),
             f"<h1>{_e(params['model']['arch'])} strategy: out-of-sample tear sheet</h1>",
             (f"<div class='sub'>{_e(tickers)} · {_e(p['start'])} … {_e(p['end'])} ({p['sessions']} sessions) · "
             f"after costs of {_num(cost['current_bps'], 'g')} bps per side · rebalance "
             f"{_e(params['backtest']['rebalance'])}</div>"),
             f"<div class='verdict{' pass' if passed else ''}'><b>Verdict:</b> {_e(verdict)}.</div>"]
    s = m[STRATEGY]
    be = cost["break_even_bps"]
    parts.append("<div class='cards'>" + "".join([
        _card(_num(s["sharpe"]) + _ci(iv[STRATEGY]["sharpe"]), "Sharpe [95 % bootstrap]"),
        _card(_num(sig["psr"], ".3f"), "PSR: P(true Sharpe > 0)"),
        _card(_num(sig["permutation_pvalue"], ".3f"), f"permutation p ({sig['permutations']} shuffles)"),
        _card(_num(sig["spa_vs_benchmark_pvalue"], ".3f"), "SPA p vs buy-and-hold"),
        _card(_num(sig["dsr_100_trials"], ".3f"), "DSR if best of 100 trials"),
        _card(_num(be, ".1f") + " bps" if be is not None else "n/a", "break-even cost per side"),
    ]) + "</div>")

    parts.append("<h2>Equity and drawdown</h2>" + _img(pngs["equity_drawdown.png"], "equity and drawdown"))
    parts.append("<h2>Rolling Sharpe and monthly returns</h2>" + _img(pngs["rolling_sharpe.png"], "rolling Sharpe")
                 + _img(pngs["monthly_returns.png"], "monthly returns"))

    # metrics beside the baselines, with intervals and p-values
    rows = []
    spec = [("total return", "total_return", _pct, None), ("CAGR", "cagr", _pct, "cagr"),
            ("ann. volatility", "annual_volatility", _pct, None), ("Sharpe", "sharpe", _num, "sharpe"),
            ("Sharpe p (Lo)", "sharpe_pvalue", lambda x: _num(x, ".3f"), None), ("Sortino", "sortino", _num, None),
            ("max drawdown", "max_drawdown", _pct, "max_drawdown"), ("Calmar", "calmar", _num, None),
            ("exposure", "exposure", _pct, None), ("turnover / year", "turnover", _num, None),
            ("trades", "n_trades", str, None), ("costs paid", "costs", lambda x: _num(x, ",.0f"), None)]
    for label, key, fmt, ci in spec:
        rows.append([label] + [fmt(m[b][key]) + (_ci(iv[b][ci], fmt) if ci else "") for b in BOOKS])
    parts.append("<h2>Metrics beside the baselines</h2>"
                 + _table(["", *(BOOK_LABELS[b] for b in BOOKS)], rows)
                 + f"<p class='note'>[low, high]: {100 * (1 - cfg['alpha']):.0f} % percentile intervals of the "
                   f"stationary block bootstrap ({cfg['bootstrap_reps']} resamples, block length by Politis-White).</p>")
    vb, vm = m["vs_benchmark"], m["vs_momentum"]
    parts.append(_table(["strategy minus", "active return / year", "information ratio", "t-test p", "SPA p"], [
        ["buy-and-hold", _pct(vb["mean_annual"]) + _ci(iv["vs_benchmark"]["mean_annual"], _pct),
         _num(vb["information_ratio"]), _num(vb["pvalue"], ".3f"), _num(sig["spa_vs_benchmark_pvalue"], ".3f")],
        ["momentum baseline", _pct(vm["mean_annual"]), _num(vm["information_ratio"]), _num(vm["pvalue"], ".3f"),
         _num(sig["spa_vs_momentum_pvalue"], ".3f")]])
        + f"<p class='note'>Hansen's SPA (consistent p-value, {cfg['spa_reps']} resamples): beats every baseline "
          f"p = {_num(sig['spa_beats_all_pvalue'], '.3f')}; some baseline beats the strategy p = "
          f"{_num(sig['spa_beaten_by_any_pvalue'], '.3f')}.</p>")

    # per fold
    fold_rows = [[str(f["fold"]), f"{f['start']} … {f['end']}", str(f["sessions"]), _num(f["sharpe"]),
                  _num(f["benchmark_sharpe"]), _pct(f["active_annual"]), _num(f["rank_ic"], ".3f")]
                 for f in series["folds"]]
    parts.append("<h2>Per walk-forward fold</h2>" + _table(
        ["fold", "test window", "sessions", "Sharpe", "buy-and-hold Sharpe", "active / year", "Rank IC"], fold_rows))

    # prediction quality
    q, cs, qs = m["predictions"], m["cross_sectional_ic"], m["quantile_spread"]
    ic_rows = [["pooled Rank IC (dates as the unit)", _num(q["ic"], ".3f") + _ci(iv["predictions"]["ic"],
                                                                                lambda x: _num(x, ".3f")),
                f"NW s.e. {_num(q['ic_se'], '.3f')}, p = {_num(q['ic_pvalue'], '.3f')}"],
               ["directional accuracy", _pct(q["directional_accuracy"]),
                f"naive {_pct(q['naive_accuracy'])}, p = {_num(q['directional_pvalue'], '.3f')}"]]
    if cs["rank_ic_mean"] is not None:
        ic_rows += [["per-date IC (Qlib): mean / ICIR / t", f"{_num(cs['ic_mean'], '.3f')} / {_num(cs['ic_ir'])}",
                     f"t = {_num(cs['ic_tstat'])} (Newey-West {_num(cs['ic_tstat_nw'])})"],
                    ["per-date Rank IC: mean / ICIR / t", f"{_num(cs['rank_ic_mean'], '.3f')} / {_num(cs['rank_ic_ir'])}",
                     f"t = {_num(cs['rank_ic_tstat'])} (Newey-West {_num(cs['rank_ic_tstat_nw'])})"]]
    else:
        ic_rows.append(["per-date IC (Qlib)", "n/a",
                        f"fewer than evaluate.min_cross_section = {cfg['min_cross_section']} tickers per date"])
    ic_rows.append([f"top minus bottom of {qs['quantiles']} groups, per {params['features']['horizon']} sessions",
                    _pct(qs["mean"], 2), f"NW t = {_num(qs['tstat_nw'])}, p = {_num(qs['pvalue'], '.3f')}"])
    parts.append("<h2>Prediction quality</h2>" + _table(["", "value", "inference"], ic_rows)
                 + _img(pngs["ic.png"], "IC over time and quantile spread"))

    # costs and the permutation null
    grid_rows = [[f"{c:g}", _pct(e), _num(sh)] for c, e, sh in
                 zip(series["cost"]["cost_bps"], series["cost"]["active_annual"], series["cost"]["sharpe"], strict=True)]
    be_text = (f"break-even cost {be:.1f} bps per side" if be is not None
               else f"break-even: n/a ({_e(m['null_reasons'].get('cost_sensitivity.break_even_bps', ''))})")
    parts.append("<h2>Cost sensitivity and the permutation null</h2><div class='two'><div>"
                 + _img(pngs["cost_sensitivity.png"], "cost sensitivity")
                 + _table(["cost (bps/side)", "active / year vs buy-and-hold", "strategy Sharpe"], grid_rows)
                 + f"<p class='note'>{be_text}: the cost at which the edge over buy-and-hold (both books re-costed) "
                   "vanishes.</p></div><div>" + _img(pngs["permutation.png"], "permutation null")
                 + f"<p class='note'>The same backtest and costs with each ticker's predictions shuffled in time "
                   f"({sig['permutations']} times): exposure and turnover stay comparable, timing is destroyed. "
                   f"p = share of shuffles with a Sharpe at least the real one (add-one) = "
                   f"{_num(sig['permutation_pvalue'], '.3f')}.</p></div></div>")

    # Sharpe inference
    mc = series["monte_carlo"]
    inf_rows = [["daily Sharpe, skew, raw kurtosis, n",
                 f"{_num(sig['sharpe_daily'], '.4f')}, {_num(sig['skew'])}, {_num(sig['kurtosis'])}, {sig['n']}"],
                ["PSR (Bailey & López de Prado 2012): P(true Sharpe > 0)", _num(sig["psr"], ".3f")],
                [f"minimum track record for significance at {cfg['alpha']}",
                 f"{_num(sig['min_trl_sessions'], '.0f')} sessions ({_num(sig['min_trl_years'], '.1f')} years)"
                 if sig["min_trl_sessions"] is not None
                 else f"n/a ({_e(m['null_reasons'].get('significance.min_trl_sessions', ''))})"],
                ["DSR if this were the best of 10 / 100 trials",
                 f"{_num(sig['dsr_10_trials'], '.3f')} / {_num(sig['dsr_100_trials'], '.3f')}"],
                ["Monte Carlo: P(loss over the period)", _pct(sig["prob_loss"])],
                ["Monte Carlo: final equity multiple q05 / q50 / q95",
                 (f"{_num(sig['final_multiple_q05'])} / {_num(sig['final_multiple_q50'])} / "
                 f"{_num(sig['final_multiple_q95'])}")],
                ["Monte Carlo: max drawdown q05 / q50 / q95",
                 (f"{_pct(sig['mc_max_drawdown_q05'])} / {_pct(sig['mc_max_drawdown_q50'])} / "
                 f"{_pct(sig['mc_max_drawdown_q95'])}")]]
    parts.append("<h2>Is the Sharpe ratio luck?</h2>" + _table(["", ""], inf_rows)
                 + f"<p class='note'>The DSR deflates the Sharpe ratio by the best one expected from that many "
                   f"skill-less trials; here their Sharpe spread is the permutation null's (s.d. "
                   f"{_num(sig['null_sharpe_sd'])} a year). For the DSR over the experiments you actually ran, "
                   f"run <code>python -m stages.trials</code> (it counts every <code>dvc exp</code> run, failed and "
                   f"queued ones too). Monte Carlo: {mc['paths']} stationary-bootstrap paths of "
                   f"{mc['days']} sessions.</p>")
    parts.append("</main></body></html>\n")
    return "\n".join(parts)
