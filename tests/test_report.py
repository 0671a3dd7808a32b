"""evaluate's significance machinery and tear sheet on synthetic studies (no training): it can
fail (pure noise) and it can pass (an injected signal); the HTML is self-contained and deterministic."""

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from lib.evaluation.sharpe import deflated_sharpe_ratio
from lib.io import read_table
from lib.tables import COLUMNS, PREDICTIONS, STRATEGY
from stages import evaluate
from tests.helpers import run_stages, synthetic_study

BOOK_COLUMNS = ["date", "strategy", "benchmark", "momentum", "strategy_weight", "benchmark_weight", "momentum_weight"]


def _inputs(folder: Path):
    return (
        read_table(folder / "reports/backtest/equity.csv", BOOK_COLUMNS),
        read_table(folder / "data/predictions.parquet", PREDICTIONS),
        read_table(folder / "data/clean/prices.parquet", COLUMNS),
    )


def _sections(folder: Path, signal: float, seed: int, **evaluate_params):
    """evaluate.significance on a synthetic study, as it returns it (Sections keep their reasons)."""
    params = synthetic_study(folder, signal, seed)
    params["evaluate"].update(evaluate_params)
    return evaluate.significance(*_inputs(folder), params)


def _significance(folder: Path, signal: float, seed: int, permutations: int = 30, **evaluate_params):
    study = _sections(folder, signal, seed, permutations=permutations, **evaluate_params)
    return {k: v.values for k, v in study.sections.items()}, study.series


@pytest.mark.parametrize("seed", [3, 4])
def test_pure_noise_is_not_significant(tmp_path, seed):
    sig, series = _significance(tmp_path, 0.0, seed)
    s = sig["significance"]
    assert s["permutation_pvalue"] > 0.1
    # the best of many skill-less trials: the DSR with 100 trials is low
    m = series.moments
    var = float(np.var(np.asarray(series.permutation["null"]) / np.sqrt(252), ddof=1))
    assert deflated_sharpe_ratio(m.sr, m.n, m.skew, m.kurtosis, 100, var).value < 0.5
    assert s["dsr_100_trials"] < 0.5 and s["spa_vs_benchmark_pvalue"] > 0.05


def test_injected_signal_is_significant_everywhere(tmp_path):
    # a cost grid wide enough to bracket where this edge vanishes (at small_params' [0, 10, 50] it
    # is still positive at 50 bps, and break_even_bps is None)
    sig, series = _significance(tmp_path, 1.0, 5, cost_grid_bps=[0, 10, 50, 200])
    s = sig["significance"]
    assert s["permutation_pvalue"] == pytest.approx(1 / 31)  # no shuffle beats the real timing
    assert s["psr"] > 0.99 and s["dsr_100_trials"] > 0.95
    assert s["spa_vs_benchmark_pvalue"] < 0.05
    assert sig["intervals"]["predictions"]["ic"]["low"] > 0.2  # the bootstrap over dates excludes 0
    assert sig["intervals"][STRATEGY]["sharpe"]["low"] > 0
    assert sig["quantile_spread"]["pvalue"] < 0.01
    cost = sig["cost_sensitivity"]
    edges = [cost[f"edge_at_{c}bps"] for c in (0, 10, 50, 200)]
    assert edges[0] > edges[1] > edges[2] > 0 > edges[3]  # an edge at 0 bps, falling with cost, gone by 200
    # the edge falls almost linearly in cost (here about 74 bps, well above today's 10): the zero of
    # the chord from 50 to 200 bps, to 1.5 bps (bisection leaves 150/2**8 = 0.6, the curvature less)
    chord_zero = 50 + 150 * edges[2] / (edges[2] - edges[3])
    assert cost["break_even_bps"] is not None, "an edge that vanishes inside the grid has a break-even cost"
    assert cost["current_bps"] == 10.0 and 50 < cost["break_even_bps"] < 200
    assert cost["break_even_bps"] == pytest.approx(chord_zero, abs=1.5)
    assert all(f["rank_ic"] > 0.2 for f in series.folds)


def test_a_signal_that_loses_even_without_costs_has_no_break_even_and_says_why(tmp_path):
    """The inverted signal trades against the future: no edge over buy-and-hold at 0 bps, so no
    cost at which it vanishes; the value is None with its reason, never a number."""
    cost = _sections(tmp_path, -1.0, 5, permutations=2).sections["cost_sensitivity"]
    assert cost.values["edge_at_0bps"] < 0
    assert cost.values["break_even_bps"] is None
    assert cost.reasons["break_even_bps"] == "no edge even at 0 bps"


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.refs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "action", "data", "poster", "srcset") and v:
                self.refs.append(v)


ARGS = [
    "--backtest",
    "reports/backtest",
    "--predictions",
    "data/predictions.parquet",
    "--baselines",
    "data/baseline_predictions.parquet",
    "--features",
    "data/features.parquet",
    "--ledger",
    "track/ledger.csv",
    "--prices",
    "data/clean/prices.parquet",
    "--metrics",
    "reports/metrics.json",
    "--plots",
    "reports/plots",
    "--report",
    "reports/report.html",
]


@pytest.mark.slow
def test_report_is_self_contained_complete_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIPELINE_LEDGER", str(tmp_path / "ledger.jsonl"))
    synthetic_study(tmp_path, 0.3, 7)
    evaluate.main(ARGS)
    html = Path("reports/report.html").read_text()
    parser = _Refs()
    parser.feed(html)
    assert not {"script", "link", "iframe", "object", "embed"} & set(parser.tags)
    assert parser.refs and all(r.startswith("data:image/png;base64,") for r in parser.refs)
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", html, re.IGNORECASE)
    for text in (
        "Verdict:",
        "Equity and drawdown",
        "Rolling Sharpe",
        "monthly returns",
        "Per walk-forward fold",
        "Rank IC",
        "Cost sensitivity",
        "permutation null",
        "PSR",
        "DSR",
        "minimum track record",
        "SPA p",
    ):
        assert text in html, text
    assert html.index("Verdict:") < html.index("<h2>")  # the verdict comes first
    m = json.loads(Path("reports/metrics.json").read_text())
    assert list(m)[:2] == ["vs_benchmark", "vs_momentum"] and list(m)[-2:] == ["period", "null_reasons"]
    for key in ("psr", "permutation_pvalue", "spa_vs_benchmark_pvalue", "dsr_100_trials", "prob_loss"):
        assert key in m["significance"], key
    assert set(m["folds"]) == {"fold_00", "fold_01"}

    def nones(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from nones(v, f"{prefix}{k}.")
            elif v is None:
                yield f"{prefix}{k}"

    missing = [k for k in nones({k: v for k, v in m.items() if k != "null_reasons"}) if k not in m["null_reasons"]]
    assert not missing  # every undefined value says why
    ledger = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 1 and json.loads(ledger[0])["n"] == m["significance"]["n"]
    # same params, same bytes: bootstrap, permutation and SPA draw from evaluate.seed
    before = {
        p: p.read_bytes()
        for p in [*Path("reports/plots").iterdir(), Path("reports/metrics.json"), Path("reports/report.html")]
    }
    evaluate.main(ARGS)
    assert all(p.read_bytes() == b for p, b in before.items())
    assert len((tmp_path / "ledger.jsonl").read_text().splitlines()) == 2  # every finished run is appended


def test_cross_sectional_ic_with_enough_tickers(tmp_path):
    from lib.evaluation.forecast import cross_sectional_ic

    synthetic_study(tmp_path, 1.0, 2, tickers=("A", "B", "C", "D", "E", "F"), n=300, test=150)
    _, preds, _ = _inputs(tmp_path)
    s, per_date = cross_sectional_ic(preds, 5, 5)
    assert s.values["n_dates"] == len(per_date) > 100
    assert s.values["rank_ic_mean"] > 0.3 and s.values["rank_ic_tstat"] > s.values["rank_ic_tstat_nw"] > 3
    assert s.values["rank_ic_ir"] == pytest.approx(per_date["rank_ic"].mean() / per_date["rank_ic"].std(ddof=1))
    few, _ = cross_sectional_ic(preds, 5, 7)
    assert few.values["rank_ic_mean"] is None and "7 tickers" in few.reasons["rank_ic_mean"]


@pytest.mark.slow
def test_evaluate_stage_in_a_pipeline_copy(tmp_path, monkeypatch):
    """The stage as dvc.yaml runs it, on a copy of a synthetic study (all outputs, nothing else)."""
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir()
    monkeypatch.chdir(tmp_path)
    synthetic_study(tmp_path, 0.0, 1)
    run_stages("evaluate")
    assert Path("reports/report.html").exists() and Path("reports/metrics.json").exists()
    for name in (
        "rolling_sharpe.csv",
        "cost_sensitivity.csv",
        "rolling_ic.csv",
        "permutation.csv",
        "permutation.png",
        "ic.png",
        "monthly_returns.png",
        "equity_drawdown.png",
    ):
        assert (Path("reports/plots") / name).exists(), name
    assert Path(".trials/ledger.jsonl").exists()  # not in a DVC temp copy: the ledger is the run folder's
