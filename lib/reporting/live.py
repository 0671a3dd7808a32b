"""The tear sheet's live-record section: the forward track record of `track/ledger.csv` marked to market
(metrics.json's `live`), clearly apart from the backtest, and this week's drift checks."""

from __future__ import annotations

from typing import Any

from lib.reporting import markup as h


def _record(live: dict[str, Any]) -> str:
    rows = [
        ["period", f"{h.e(live['start'] or 'n/a')} … {h.e(live['end'] or 'n/a')}"],
        ["weekly entries filled (pending)", f"{live['entries_filled']} ({live['entries_pending']})"],
        ["total return", h.pct(live["total_return"])],
        ["Sharpe (PSR)", f"{h.num(live['sharpe'])} ({h.p3(live['psr'])})"],
        ["live Rank IC vs the backtest's", f"{h.p3(live['live_ic'])} vs {h.p3(live['backtest_ic'])}"],
        ["mean daily return inside the backtest's interval", {1: "yes", 0: "no"}.get(live["consistent"], "n/a")],
    ]
    iv = live.get("backtest_interval") or {}
    if iv.get("low") is not None:
        rows.append(["backtest interval of that mean", f"[{h.pct(iv['low'], 3)}, {h.pct(iv['high'], 3)}]"])
    return h.table(["", ""], rows)


def _drift(drift: dict[str, Any]) -> str:
    shifted = drift.get("shifted_features") or []
    week = drift.get("week", {})
    psi = [
        [h.e(name), h.p3(v["psi"]), h.p3(v["ks"]), h.p3(v["ks_pvalue"]), "alarm" if v["alarm"] else ""]
        for name, v in sorted(drift.get("features", {}).items(), key=lambda kv: -(kv[1]["psi"] or 0.0))[:10]
    ]
    head = (
        f"<p class='note'>This week ({h.e(week.get('start', ''))} … {h.e(week.get('end', ''))}, {week.get('rows', 0)} "
        f"rows) against the {drift.get('training_rows', 0)} training rows: "
        + (
            f"<b>{len(shifted)} feature(s) drifted</b> (PSI above {drift['psi_threshold']:g} and KS rejects)"
            if shifted
            else "no feature drifted"
        )
        + f"; live IC drop {h.p3(drift.get('ic_drop'))} (threshold {drift.get('ic_drop_threshold', 'n/a')}).</p>"
    )
    return head + (h.table(["feature (10 largest PSI)", "PSI", "KS", "KS p", ""], psi) if psi else "")


def live_record_section(live: dict[str, Any], drift: dict[str, Any]) -> str:
    """The live record and the drift checks; the live period is the only untuned one and enters no backtest
    statistic."""
    return (
        "<h2>Live record (the only untuned period)</h2>"
        + f"<p class='note'>{h.e(live['label'])}. Each weekly decision is appended to track/ledger.csv (hash-chained) "
        "before its outcome and marked to market by the backtest's engine and costs.</p>"
        + _record(live)
        + "<h3>Drift checks</h3>"
        + _drift(drift)
    )
