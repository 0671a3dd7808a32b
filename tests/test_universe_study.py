"""bench/universe_study.py: the cells it runs (each a valid params.yaml) and the README row it prints."""

from __future__ import annotations

import copy

import pytest
import yaml

from bench import universe_study as study
from bench.universe_scaling import UNIVERSE
from lib.params import load_params, validate_params
from tests.helpers import ROOT


@pytest.mark.parametrize("family", ["lstm", "gbm", "ridge"])
@pytest.mark.parametrize("labels", study.LABELS)
def test_every_cell_is_a_valid_configuration_learnt_as_the_calibration_learns(family, labels):
    cell = study.overrides(family, "alpha158", labels)
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    for section, values in UNIVERSE.items():
        params[section].update(values)
    for key, value in cell.items():
        section, name = key.split(".", 1)
        assert name in params[section], key  # never a key the stages would not read
        params[section][name] = yaml.safe_load(value)
    validate_params(params)
    assert params["model"]["arch"] == family and params["evaluate"]["baseline_models"] == []
    assert params["train"]["label_norm"] == labels
    assert params["features"]["cross_section"] == ("rank" if labels == "cs_rank" else "none")
    neural_cs = labels == "cs_rank" and family == "lstm"
    assert (params["train"]["batching"], params["train"]["loss"]) == (
        ("by_date", "ic") if neural_cs else ("random", "huber")
    )


def _metrics() -> dict:
    book = {"total_return": 0.1, "sharpe": 0.8, "sharpe_pvalue": 0.2, "max_drawdown": -0.1, "n_trades": 9}
    return {
        "cross_sectional_ic": {"rank_ic_mean": 0.02, "rank_ic_tstat_nw": 2.5, "n_dates": 500},
        "power": {"rank_ic": 0.014},
        "predictions": {"ic": -0.01, "n": 1000},
        "intervals": {"predictions": {"ic": {"low": -0.03, "high": 0.012}}},
        "quantile_spread": {"mean": 0.0012, "pvalue": 0.04},
        "vs_benchmark": {"mean_annual": -0.052, "pvalue": 0.7},
        "vs_momentum": {"mean_annual": 0.031, "pvalue": 0.3},
        **{name: book for name in study.BOOKS},
        "period": {"start": "2018-01-02", "end": "2020-01-10", "sessions": 504},
    }


def test_a_row_shows_the_rank_ic_interval_from_its_newey_west_t_and_the_mde():
    cell = {"family": "gbm", "features": "basic", "labels": "cs_rank", "total_s": 61.4,
            "headline": study.headline(_metrics())}  # fmt: skip
    assert study.row(cell) == (
        "| gbm | basic | cs_rank | +0.020 (+2.50) [+0.004, +0.036] · 0.014 | −0.010 [−0.030, +0.012] "
        "| +0.12 % (0.04) | −5.2 % (0.70) | +3.1 % (0.30) | +0.80 (0.20) | 61 s |"
    )
    assert study.HEADER.count("|") == study.row(cell).count("|")


def test_the_readme_the_study_and_the_calibration_use_the_same_universe_settings():
    """The README's yaml block is what bench/universe_scaling.py runs; the calibration learns on the same
    folds, model and training settings (its data, rule and resampling are its own)."""
    from stages import calibrate

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The S&P 500 universe") :]
    block = yaml.safe_load(section[section.index("```yaml") + 7 : section.index("```", section.index("```yaml") + 7)])
    assert block["data"] == {**UNIVERSE["data"], "csv_dir": "../shared/data/universe"}
    assert {k: v for k, v in block.items() if k != "data"} == {k: v for k, v in UNIVERSE.items() if k != "data"}
    for section_name in ("walk_forward", "model", "train"):
        assert calibrate.OVERRIDES[section_name] == UNIVERSE[section_name], section_name
