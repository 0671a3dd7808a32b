"""The calibration study (`python -m stages.calibrate`): its arithmetic (lib/evaluation/calibration.py),
its settings checks (one clear line each) and a small end-to-end run through the real stages."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from lib.errors import PipelineError
from lib.evaluation import calibration
from lib.params import load_params, validate_params
from stages import calibrate
from tests.helpers import ROOT, tool_env


def test_wilson_interval_by_hand():
    # k = 0 of 10 at 95 %: (0, z^2 / (n + z^2)) = (0, 0.2775); 5 of 10: 0.5 -+ 0.2632 (Brown, Cai, DasGupta)
    assert calibration.wilson(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    low, high = calibration.wilson(5, 10)
    assert (low, high) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert calibration.wilson(10, 10) == pytest.approx((1 - 0.27754, 1.0), abs=1e-5)
    with pytest.raises(ValueError):
        calibration.wilson(0, 0)


def _metrics(t: float, p: float) -> dict:
    return {
        "cross_sectional_ic": {"rank_ic_tstat_nw": t, "rank_ic_mean": 0.03},
        "predictions": {"ic_pvalue": p, "ic": 0.02, "ic_se": 0.01},
        "vs_benchmark": {"pvalue": None, "mean_annual": None},
    }


def test_outcomes_read_the_tests_metrics_json_has_and_skip_the_others():
    out = calibration.outcomes(_metrics(2.0, 0.2), 0.05)
    assert set(out) == {"rank_ic", "pooled_ic"}  # no spread, no long-short book; nothing of vs_benchmark defined
    assert out["rank_ic"]["pvalue"] == pytest.approx(0.02275, abs=1e-5)  # one-sided from the NW t
    assert out["rank_ic"]["detected"] and not out["pooled_ic"]["detected"]
    undefined_p = calibration.outcomes({"vs_benchmark": {"pvalue": None, "mean_annual": 0.0}}, 0.05)
    assert undefined_p == {"vs_benchmark": {"pvalue": None, "strength": 0.0, "detected": False}}


def _records() -> list[dict]:
    rows = []
    for level, hits in ((0.0, [False, False, True, False]), (0.05, [True, True, True, False])):
        for seed, hit in enumerate(hits):
            rows.append({"kind": "cross_section", "family": "ridge", "level": level, "seed": seed,
                         "test": "rank_ic", "pvalue": 0.01 if hit else 0.5, "strength": level + 0.01 * (seed - 1.5),
                         "detected": hit, "se": 0.02})  # fmt: skip
    return rows


def test_summary_rates_intervals_and_analytic_power():
    rows = calibration.summarise(_records(), 0.05)
    zero, strong = rows
    assert (zero["level"], zero["runs"], zero["detections"], zero["rate"]) == (0.0, 4, 1, 0.25)
    assert (zero["rate_low"], zero["rate_high"]) == pytest.approx(calibration.wilson(1, 4))
    assert strong["rate"] == 0.75 and strong["strength"] == pytest.approx(0.05)
    # t interval of the mean of 0.035, 0.045, 0.055, 0.065: sd 0.0129, t_{0.975, 3} = 3.182
    assert strong["strength_high"] - strong["strength"] == pytest.approx(3.18245 * 0.012910 / 2, rel=1e-3)
    assert strong["analytic_power"] == pytest.approx(0.8037, abs=1e-3)  # Phi(0.05 / 0.02 - 1.645)
    assert zero["analytic_power"] == pytest.approx(0.05, abs=1e-12)
    assert strong["mde"] == pytest.approx(2.48647 * 0.02, rel=1e-4)
    check = calibration.acceptance(rows, 0.05)
    assert check == {
        "false_alarm_within_alpha": True,
        "strongest_level": 0.05,
        "strongest_detected_by_every_family": True,
        "every_run_detects": {"0.05": False},  # 3 of 4
    }
    table = calibration.markdown_table(rows)
    assert table.splitlines()[0].startswith("| kind | family | test |") and "0.25 (0.05–0.70)" in table
    compact = calibration.readme_table(rows).splitlines()
    assert compact[0] == "| kind | test | planted Rank IC | ridge |"
    assert compact[2] == "| cross_section | per-date Rank IC (NW t) | 0 | 1/4 (0.05–0.70) · 0.000 |"


def test_acceptance_checks_false_alarms_only_where_strength_0_makes_the_null_true():
    records = _records()
    for r in [r for r in records if r["level"] == 0.0]:  # the book beating momentum at 0 on costs: 4/4
        records.append({**r, "test": "vs_momentum", "pvalue": 0.01, "detected": True})
    records += [{**r, "family": "gbm", "detected": r["detected"] or r["level"] > 0} for r in records[:8]]
    check = calibration.acceptance(calibration.summarise(records, 0.05), 0.05)
    assert check["false_alarm_within_alpha"] and check["every_run_detects"] == {"0.05": False}  # ridge 3/4
    records[0] |= {"detected": True, "pvalue": 0.01}  # rank IC at 0: 2/4, interval above 0.05
    assert not calibration.acceptance(calibration.summarise(records, 0.05), 0.05)["false_alarm_within_alpha"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "1"], "--seeds 1 is too few to estimate a rate (need >= 2)"),
        (["--levels", "0.9"], "--levels must be planted Rank ICs in (0, 0.5)"),
        (["--levels", "x"], "--levels must be planted Rank ICs in (0, 0.5)"),
        (["--families", "lstm,svm"], "unknown ['svm']"),
        (["--tickers", "5"], "--tickers 5 x --years 5 is too small to test a cross-section"),
        (["--kinds", "panel"], "--kinds ['panel']: unknown ['panel']"),
        (["--kinds", "time_series", "--ts-years", "3"], "--ts-years 3 is too short"),
    ],
)
def test_bad_settings_are_one_clear_line(argv, message):
    with pytest.raises(PipelineError) as err:
        calibrate.main(argv)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_setting_from_the_command_line_prints_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "stages.calibrate", "--seeds", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env=tool_env(), timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error [calibrate]: calibrate: --seeds 1 is too few to estimate a rate (need >= 2)"
    ]
    assert not list(tmp_path.iterdir())


def test_run_params_override_the_universe_settings_and_keep_the_rest():
    base = load_params(ROOT / "params.yaml")
    p = calibrate.run_params(base, "cross_section", "ridge")
    assert p["model"]["arch"] == "ridge" and p["backtest"]["rule"] == "rank" and p["backtest"]["top_fraction"] == 0.1
    assert p["walk_forward"]["test_sessions"] == 126 and p["train"]["threads"] == 1
    assert p["features"]["cross_section"] == "rank" and not p["features"]["cross_section_keep_raw"]
    assert p["features"]["set"] == base["features"]["set"] and p["evaluate"]["alpha"] == base["evaluate"]["alpha"]
    assert p["train"]["loss"] == base["train"]["loss"]  # train.loss ic is for the neural families only
    validate_params(p)  # a valid params file
    nn = calibrate.run_params(base, "cross_section", "lstm")
    assert (nn["train"]["batching"], nn["train"]["loss"], nn["train"]["label_norm"]) == ("by_date", "ic", "cs_rank")
    validate_params(nn)
    ts = calibrate.run_params(base, "time_series", "lstm")
    assert ts["backtest"]["rule"] == "threshold" and ts["train"]["loss"] == base["train"]["loss"]
    assert ts["features"] == base["features"]
    validate_params(ts)


@pytest.mark.slow
def test_small_study_writes_its_report_table_and_power_curve(tmp_path, capsys):
    calibrate.main(["--small", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "calibration.json").read_text())
    assert report["settings"]["seeds"] == 2 and report["settings"]["families"] == ["ridge"]
    summary = pd.read_csv(tmp_path / "calibration.csv")
    assert set(summary["level"]) == {0.0, 0.1}
    assert {"rank_ic", "pooled_ic", "quantile_spread", "vs_benchmark", "permutation"} <= set(summary["test"])
    assert (summary["runs"] == 2).all() and summary["rate"].between(0, 1).all()
    assert (summary["rate_low"] <= summary["rate"]).all() and (summary["rate"] <= summary["rate_high"]).all()
    strong = summary[(summary["level"] == 0.1) & (summary["test"] == "rank_ic")].iloc[0]
    assert strong["strength"] > 0.02  # ridge recovers a planted Rank IC of 0.1 ...
    assert strong["rate"] == 1.0  # ... and the per-date Rank IC test finds it on both seeds
    assert math.isfinite(strong["analytic_power"]) and strong["analytic_power"] > 0.5
    assert (tmp_path / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(report["runs"]) == len(summary) * 2
    out = capsys.readouterr().out
    assert out.startswith("| kind | test | planted Rank IC | ridge |") and "acceptance" in out
