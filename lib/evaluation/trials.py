"""Every experiment counts: the trials behind a "best" Sharpe ratio, for the deflated Sharpe ratio.

Two sources, and the larger count wins (experiments can be deleted, runs can be repeated):

* `dvc exp show --json --all-commits`: every baseline commit with metrics, every experiment on it
  whatever its state (success, failed, queued, running: a failed or queued run was still tried),
  and the workspace when its params match none of those (an unsaved run).
* The ledger: one JSON line appended by evaluate for every run it finishes (`dvc repro`,
  `dvc exp run`, queued or `--temp` runs alike), with the params hash, the time, the per-period
  Sharpe ratio and the moments the DSR needs. It lives in the main repository's `.trials/`
  (git-ignored, never rewritten by `dvc exp`); a run in DVC's temp copy
  (`<repo>/.dvc/tmp/exps/<tmp>/`) writes to the repository above it. `PIPELINE_LEDGER` overrides
  the path. Distinct params hashes count as distinct trials.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from lib.evaluation.sharpe import Moments, deflated_sharpe_ratio, expected_max_sharpe, probabilistic_sharpe_ratio

log = logging.getLogger("trials")
LEDGER_ENV = "PIPELINE_LEDGER"
LEDGER = Path(".trials") / "ledger.jsonl"
METRICS = "reports/metrics.json"
STATES = ("success", "failed", "queued", "running")


def main_repository(cwd: str | os.PathLike | None = None) -> Path:
    """The repository a run belongs to: for DVC's temp copies (`<repo>/.dvc/tmp/exps/<tmp>/...`)
    the folder above `.dvc`, otherwise the current folder."""
    path = Path(cwd or os.getcwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


def ledger_path(cwd: str | os.PathLike | None = None) -> Path:
    env = os.environ.get(LEDGER_ENV)
    return Path(env) if env else main_repository(cwd) / LEDGER


def params_hash(params: dict[str, Any]) -> str:
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ledger_entry(params: dict[str, Any], moments: Moments, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "params_hash": params_hash(params),
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sharpe_daily": moments.sr,
        "n": moments.n,
        "skew": moments.skew,
        "kurtosis": moments.kurtosis,
        "sharpe_annual": metrics["strategy"]["sharpe"],
        "periods_per_year": params["evaluate"]["periods_per_year"],
    }


def append_ledger(entry: dict[str, Any], path: Path | None = None) -> None:
    """Append one line; a read-only or missing location is a warning, never a failed stage."""
    path = path or ledger_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except (OSError, ValueError) as exc:
        log.warning("could not append to the trials ledger %s: %s", path, exc)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The ledger's entries (malformed lines skipped, e.g. a line cut short by a crash)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "params_hash" in entry:
            out.append(entry)
    return out


def _metrics(data: dict | None) -> dict | None:
    if not data:
        return None
    m = (data.get("metrics") or {}).get(METRICS) or {}
    return m.get("data")


def _params(data: dict | None) -> dict | None:
    return (((data or {}).get("params") or {}).get("params.yaml") or {}).get("data")


def _trial(name: str, rev: str, kind: str, state: str, data: dict | None) -> dict[str, Any]:
    m = _metrics(data)
    sig = (m or {}).get("significance") or {}
    ppy = ((_params(data) or {}).get("evaluate") or {}).get("periods_per_year", 252)
    sr = sig.get("sharpe_daily")
    if sr is None and m and (m.get("strategy") or {}).get("sharpe") is not None:
        sr = m["strategy"]["sharpe"] / math.sqrt(ppy)
    return {
        "name": name,
        "rev": rev[:7],
        "kind": kind,
        "state": state,
        "sharpe_daily": sr,
        "n": sig.get("n") or ((m or {}).get("period") or {}).get("sessions"),
        "skew": sig.get("skew", 0.0),
        "kurtosis": sig.get("kurtosis", 3.0),
        "periods_per_year": ppy,
    }


def parse_exp_show(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flatten `dvc exp show --json`: one trial per baseline commit with metrics, per experiment
    (any state; a failed or queued run counts) and the workspace if its params match none of them."""
    trials: list[dict[str, Any]] = []
    workspace, seen = None, []
    for entry in entries:
        if entry.get("rev") == "workspace":
            workspace = entry
            continue
        data = entry.get("data") or {}
        seen.append(_params(data))
        if _metrics(data):
            trials.append(_trial(entry.get("name") or entry["rev"][:7], entry["rev"], "baseline", "success", data))
        for exp in entry.get("experiments") or []:
            state = ((exp.get("executor") or {}).get("state")) or "success"
            for rev in exp.get("revs") or []:
                seen.append(_params(rev.get("data")))
                st = "failed" if rev.get("error") and state == "success" else state
                trials.append(
                    _trial(
                        rev.get("name") or exp.get("name") or rev["rev"][:7],
                        rev["rev"],
                        "experiment",
                        st,
                        rev.get("data"),
                    )
                )
    if workspace is not None:  # a trial only when its params match no baseline or experiment
        data = workspace.get("data") or {}
        if _metrics(data) and _params(data) not in seen:
            trials.append(_trial("workspace", "workspace", "workspace", "success", data))
    return trials


def summarize(exp_trials: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> dict[str, Any]:
    """The number of trials (the larger of the two sources), the variance of their per-period Sharpe
    ratios, the best trial and its PSR and DSR (Bailey & López de Prado 2014)."""
    latest: dict[str, dict] = {}
    for e in ledger:
        latest[e["params_hash"]] = e
    ledger_trials = [
        {"name": f"ledger:{h}", "rev": "", "kind": "ledger", "state": "success", **e} for h, e in latest.items()
    ]
    counts = {s: sum(t["state"] == s for t in exp_trials if t["kind"] == "experiment") for s in STATES}
    counts |= {
        "baselines": sum(t["kind"] == "baseline" for t in exp_trials),
        "workspace": sum(t["kind"] == "workspace" for t in exp_trials),
        "experiments_total": len(exp_trials),
        "ledger_runs": len(ledger),
        "ledger_distinct_params": len(latest),
    }
    n_trials = max(len(exp_trials), len(latest))
    scored_exp = [t for t in exp_trials if t["sharpe_daily"] is not None and t["n"]]
    scored_ledger = [t for t in ledger_trials if t.get("sharpe_daily") is not None and t.get("n")]
    source, scored = (
        ("ledger", scored_ledger) if len(scored_ledger) >= len(scored_exp) else ("dvc exp show", scored_exp)
    )
    out: dict[str, Any] = {
        "n_trials": n_trials,
        "counts": counts,
        "sharpe_source": source,
        "trials_sharpe_variance_daily": None,
        "expected_max_sharpe_daily": None,
        "best": None,
        "reason": "",
    }
    if not scored:
        out["reason"] = "no finished run with a Sharpe ratio (run the pipeline first)"
        return out
    srs = np.array([t["sharpe_daily"] for t in scored], float)
    var = float(np.var(srs, ddof=1)) if len(srs) >= 2 else 0.0
    out["trials_sharpe_variance_daily"] = var
    sr0 = expected_max_sharpe(n_trials, var)
    out["expected_max_sharpe_daily"] = sr0.value
    best = max(scored_exp + scored_ledger, key=lambda t: t["sharpe_daily"])
    ppy = best.get("periods_per_year") or 252
    psr = probabilistic_sharpe_ratio(best["sharpe_daily"], int(best["n"]), best["skew"], best["kurtosis"])
    dsr = deflated_sharpe_ratio(best["sharpe_daily"], int(best["n"]), best["skew"], best["kurtosis"], n_trials, var)
    out["best"] = {
        "name": best["name"],
        "rev": best["rev"],
        "sharpe_annual": best["sharpe_daily"] * math.sqrt(ppy),
        "sharpe_daily": best["sharpe_daily"],
        "n": int(best["n"]),
        "skew": best["skew"],
        "kurtosis": best["kurtosis"],
        "psr": psr.value,
        "psr_reason": psr.reason,
        "dsr": dsr.value,
        "dsr_reason": dsr.reason,
        "expected_max_sharpe_annual": sr0.value * math.sqrt(ppy) if sr0.value is not None else None,
    }
    if len(srs) < 2:
        out["reason"] = "one scored trial: no variance of Sharpe ratios, the DSR equals the PSR"
    out["table"] = sorted(
        (
            {k: t.get(k) for k in ("name", "rev", "kind", "state")}
            | {
                "sharpe_annual": None
                if t["sharpe_daily"] is None
                else t["sharpe_daily"] * math.sqrt(t.get("periods_per_year") or 252)
            }
            for t in exp_trials
        ),
        key=lambda t: -(t["sharpe_annual"] if t["sharpe_annual"] is not None else -math.inf),
    )
    return out


def _fmt(x: float | None, f: str = ".2f") -> str:
    return "n/a" if x is None else format(x, f)


def table(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        (
            f"trials: {summary['n_trials']} (dvc exp: {c['experiments_total']} = {c['baselines']} baseline(s), "
            f"{c['success']} run, {c['failed']} failed, {c['queued']} queued, {c['running']} running, "
            f"{c['workspace']} workspace; ledger: {c['ledger_distinct_params']} distinct params "
            f"in {c['ledger_runs']} runs)"
        )
    ]
    b = summary["best"]
    if b is None:
        lines.append(summary["reason"])
        return "\n".join(lines)
    lines.append(f"{'experiment':<24}{'state':<10}{'Sharpe':>8}")
    for t in summary.get("table", [])[:10]:
        lines.append(f"{t['name'][:23]:<24}{t['state']:<10}{_fmt(t['sharpe_annual']):>8}")
    lines.append(
        f"best: {b['name']} Sharpe {_fmt(b['sharpe_annual'])} over {b['n']} sessions; "
        f"PSR {_fmt(b['psr'], '.3f')}; expected best of {summary['n_trials']} skill-less trials "
        f"{_fmt(b['expected_max_sharpe_annual'])}; DSR {_fmt(b['dsr'], '.3f')}"
    )
    return "\n".join(lines)
