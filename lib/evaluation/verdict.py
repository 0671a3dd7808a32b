"""The verdict, its metrics file and the short table that evaluate prints: read from `metrics.json`'s sections."""

from __future__ import annotations

from typing import Any

# A warning, not a result: daily ICs of skilled equity forecasts rarely pass 0.05 (Grinold and Kahn,
# Active Portfolio Management, ch. 6), so an IC above 0.1 is reported as a likely leak until proven otherwise.
LEAK_IC = 0.1

# reports/verdict.json, the first metrics file in dvc.yaml, so the first columns of `dvc exp show`:
# its key -> where metrics.json has the value (section, key); "arch" is model.arch. Short, flat names
# (no collision with metrics.json's flattened `section.key` names) keep it within a 200-column terminal.
VERDICT_KEYS: dict[str, tuple[str, str]] = {
    "active_annual": ("vs_benchmark", "mean_annual"),
    "active_pvalue": ("vs_benchmark", "pvalue"),
    "sharpe": ("strategy", "sharpe"),
    "ic": ("predictions", "ic"),
    "ic_pvalue": ("predictions", "ic_pvalue"),
    "dsr_10_trials": ("significance", "dsr_10_trials"),
    "mde_active": ("power", "active_annual"),  # the smallest active return a year found with 80 % probability
}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def verdict(m: dict[str, Any], alpha: float) -> str:
    """One sentence: does the strategy beat buy-and-hold after costs, at significance `alpha`?"""
    active = m["vs_benchmark"]
    p, mean = active["pvalue"], active["mean_annual"]
    if p is None:
        text = "undefined: the strategy's returns equal buy-and-hold's (it never left the market)"
    elif p < alpha and mean is not None and mean > 0:
        text = f"the strategy beats buy-and-hold after costs by {_pct(mean)} a year (p = {p:.3f} < {alpha})"
    else:
        text = (
            f"no evidence that the model adds anything over buy-and-hold after costs ({_pct(mean)} a year, p = {p:.2f})"
        )
    text += _power(m)
    ic = m["predictions"]["ic"]
    if ic is not None and ic > LEAK_IC:
        text += f"; IC {ic:.3f} is implausibly high: look for look-ahead before trusting it"
    return text


def _power(m: dict[str, Any]) -> str:
    """What the verdict could have seen: the minimum detectable effects at 80 % power (metrics.json `power`)."""
    pw = m.get("power")
    if not pw:
        return ""
    found = []
    if pw["active_annual"] is not None:
        found.append(f"an active return of {_pct(pw['active_annual'])} a year")
    if pw["rank_ic"] is not None:
        found.append(f"a per-date Rank IC of {pw['rank_ic']:.3f}")
    elif pw["pooled_ic"] is not None:
        found.append(f"a pooled IC of {pw['pooled_ic']:.3f}")
    if not found:
        return ""
    return f"; these tests would have found {' or '.join(found)} or more with {100 * pw['power']:.0f} % probability"


def verdict_metrics(m: dict[str, Any], arch: str) -> dict[str, Any]:
    """reports/verdict.json: the architecture, then the verdict's numbers, copied from metrics.json's
    sections (`m`, where every value and every null's reason stays)."""
    return {"arch": arch, **{key: m[section][name] for key, (section, name) in VERDICT_KEYS.items()}}


def summary_table(m: dict[str, Any], books: dict[str, str], alpha: float) -> str:
    """Aligned text: each book's return, Sharpe (p) and max drawdown, the IC, the verdict."""
    rows = [f"{'book':<26}{'total':>9}{'CAGR':>9}  {'Sharpe (p)':<14}{'max DD':>9}{'trades':>8}"]
    for key, label in books.items():
        s = m[key]
        sharpe = f"{_num(s['sharpe'])} ({_num(s['sharpe_pvalue'])})"
        rows.append(
            f"{label:<26}{_pct(s['total_return']):>9}{_pct(s['cagr']):>9}  {sharpe:<14}"
            f"{_pct(s['max_drawdown']):>9}{s['n_trades']:>8}"
        )
    q = m["predictions"]
    rows.append(
        f"IC {_num(q['ic'], '.3f')} (p {_num(q['ic_pvalue'])}), directional accuracy "
        f"{_pct(q['directional_accuracy'])} vs {_pct(q['naive_accuracy'])} naive "
        f"(p {_num(q['directional_pvalue'])})"
    )
    rows += comparison_lines(m, books)
    rows.append(f"verdict: {verdict(m, alpha)}")
    return "\n".join(rows)


def comparison_lines(m: dict[str, Any], books: dict[str, str]) -> list[str]:
    """The model's book against each other book (active return a year with its interval, the Rank IC
    difference where both have one), SPA against them all, and the Model Confidence Set."""
    c = m.get("comparison")
    if not c:
        return []
    rows = []
    for key, vs in c.items():
        if not key.startswith("vs_"):
            continue
        active = f"{_pct(vs['active_annual'])} a year [{_pct(vs['active_low'])}, {_pct(vs['active_high'])}]"
        line = f"vs {books.get(key[3:], key[3:])}: {active}"
        if "rank_ic_diff" in vs:
            lo, hi = _num(vs["rank_ic_diff_low"], "+.3f"), _num(vs["rank_ic_diff_high"], "+.3f")
            line += f", Rank IC {_num(vs['rank_ic_diff'], '+.3f')} [{lo}, {hi}]"
        rows.append(line)
    rows.append(f"SPA, the model beats every baseline: p {_num(c['spa']['beats_all_pvalue'])}")
    in_set = [books.get(k[: -len("_in_set")], k) for k, v in c["mcs"].items() if k.endswith("_in_set") and v]
    rows.append(f"Model Confidence Set (books not told apart from the best): {', '.join(in_set) or 'n/a'}")
    return rows
