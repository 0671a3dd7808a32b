import math
import os
import subprocess
import sys
from dataclasses import fields, replace

import pytest
import yaml

from lib.errors import PipelineError
from lib.params import BACKTEST_FROM, PATH_DEPENDENT, load_params, validate_params
from lib.portfolio.config import PortfolioConfig
from lib.schema import SCHEMA
from tests.helpers import ROOT, default_params, stage_commands, tool_env, write_params


def test_bundled_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p["data"]["source"] == "sample"
    assert p["walk_forward"]["purge"] >= p["features"]["horizon"]


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("model", "hidden", "abc", "model.hidden must be an integer, got 'abc'"),
        ("model", "hidden", 0, "model.hidden must be in [1, 4096], got 0"),
        ("features", "sma_windows", [10, -5], "features.sma_windows[1] must be in [2, 2520], got -5"),
        ("features", "rsi_window", -3, "features.rsi_window must be in [2, 2520], got -3"),
        ("train", "lr", "fast", "train.lr must be a number, got 'fast'"),
        ("backtest", "initial_cash", 1.0e308, "backtest.initial_cash must be in [1.0, 1000000000000.0]"),
        ("train", "amp", "maybe", "train.amp must be one of ['auto', 'on', 'off']"),
        ("backtest", "allow_short", "yes", "backtest.allow_short must be true or false"),
        ("data", "tickers", [], "data.tickers must be a list of at least 1"),
        ("data", "start", "2020-13-01", "data.start must be a date YYYY-MM-DD"),
        ("train", "epochs", True, "train.epochs must be an integer"),
    ],
)
def test_bad_value_names_the_key(section, key, value, message):
    p = default_params()
    p[section][key] = value
    with pytest.raises(PipelineError, match=None) as err:
        validate_params(p)
    assert message in str(err.value)


def test_misspelled_key_is_rejected():
    p = default_params()
    p["model"]["hiden"] = 64
    with pytest.raises(PipelineError, match=r"unknown key\(s\) \['model.hiden'\]"):
        validate_params(p)


def test_unknown_section_and_missing_key():
    p = default_params()
    p["modle"] = {}
    with pytest.raises(PipelineError, match="unknown section"):
        validate_params(p)
    p = default_params()
    del p["train"]["seed"]
    with pytest.raises(PipelineError, match=r"missing key\(s\) \['train.seed'\]"):
        validate_params(p)


def test_cross_checks():
    p = default_params()
    p["walk_forward"]["purge"] = p["features"]["horizon"] - 1
    with pytest.raises(PipelineError, match="walk_forward.purge .* must be at least features.horizon"):
        validate_params(p)
    p = default_params()
    p["data"].update(start="2020-01-01", end="2019-01-01")
    with pytest.raises(PipelineError, match="data.start .* must be before data.end"):
        validate_params(p)


def test_yaml_dates_and_ints_for_floats_are_normalised(tmp_path):
    p = default_params()
    text = yaml.safe_dump(p).replace("start: '2005-01-01'", "start: 2005-01-01")
    (tmp_path / "params.yaml").write_text(text)
    p["train"]["lr"] = 1
    loaded = load_params(tmp_path / "params.yaml")
    assert loaded["data"]["start"] == "2005-01-01"
    assert validate_params(p)["train"]["lr"] == 1.0


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("data: [unclosed")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_small_floats_as_dvc_writes_them_are_floats(tmp_path):
    """`dvc exp run -S train.lr=1e-5` writes `lr: 1e-05` back: YAML 1.2 reads a float, as DVC does."""
    text = (ROOT / "params.yaml").read_text()
    assert "lr: 1.0e-3" in text
    (tmp_path / "params.yaml").write_text(text.replace("lr: 1.0e-3", "lr: 1e-05"))
    assert load_params(tmp_path / "params.yaml")["train"]["lr"] == 1e-5


# ----------------------------------------------------------------------------- the whole schema, table-driven


def _past(spec, bound, direction):
    """The value just past `bound` (one integer, or the next float) in `direction` (-1 below, +1 above)."""
    if spec.kind in ("int", "int_list"):
        return int(bound) + direction
    return math.nextafter(float(bound), direction * math.inf)


def _out_of_range():
    """(section, key, bad value, why): for every bound, the value just past it, and an open bound itself."""
    cases = []
    for section, specs in SCHEMA.items():
        for key, spec in specs.items():
            for bound, is_open, direction, side in (
                (spec.lo, spec.lo_open, -1, "lo"),
                (spec.hi, spec.hi_open, 1, "hi"),
            ):
                if bound is None:
                    continue
                bad = [_past(spec, bound, direction)] + ([bound] if is_open else [])
                cases += [pytest.param(section, key, v, id=f"{section}.{key}-{side}={v!r}") for v in bad]
    return cases


def _choice_keys():
    return [
        pytest.param(section, key, id=f"{section}.{key}")
        for section, specs in SCHEMA.items()
        for key, spec in specs.items()
        if spec.kind == "choice"
    ]


def _with(p, section, key, value):
    spec = SCHEMA[section][key]
    if spec.kind.endswith("_list"):  # the bad value as the last item of the list
        value = [*p[section][key][:-1], value]
    p[section][key] = value
    return p


def test_the_table_covers_every_bound_and_choice():
    bounded = {(s, k) for s, specs in SCHEMA.items() for k, v in specs.items() if v.lo is not None or v.hi is not None}
    assert {(c.values[0], c.values[1]) for c in _out_of_range()} == bounded
    assert len(_choice_keys()) == sum(v.kind == "choice" for specs in SCHEMA.values() for v in specs.values())


@pytest.mark.parametrize(("section", "key", "value"), _out_of_range())
def test_every_bound_rejects_the_value_just_past_it(section, key, value):
    p = _with(default_params(), section, key, value)
    with pytest.raises(PipelineError) as err:
        validate_params(p)
    msg = str(err.value)
    assert msg.startswith(f"params.yaml: {section}.{key}") and "must be in " in msg, msg
    assert SCHEMA[section][key].interval() in msg


@pytest.mark.parametrize(("section", "key"), _choice_keys())
def test_every_choice_rejects_an_unknown_choice(section, key):
    p = default_params()
    p[section][key] = "no-such-choice"
    with pytest.raises(PipelineError) as err:
        validate_params(p)
    assert str(err.value).startswith(
        f"params.yaml: {section}.{key} must be one of {list(SCHEMA[section][key].choices)}"
    )


@pytest.mark.parametrize(
    ("section", "key"),
    [
        pytest.param(s, k, id=f"{s}.{k}")
        for s, specs in SCHEMA.items()
        for k, v in specs.items()
        if v.lo is not None or v.hi is not None
    ],
)
def test_closed_bounds_and_values_just_inside_open_ones_are_accepted(section, key):
    spec = SCHEMA[section][key]
    for bound, is_open, inward in ((spec.lo, spec.lo_open, 1), (spec.hi, spec.hi_open, -1)):
        if bound is None:
            continue
        value = _past(spec, bound, inward) if is_open else bound
        item = replace(spec, kind="int") if spec.kind == "int_list" else spec  # a list's items carry its bounds
        assert item.check(f"{section}.{key}", value) == value


# ----------------------------------------------------------------------------- backtest: caught before any work


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target_vol": 0}, "params.yaml: backtest.target_vol must be in (0.0, 5.0], got 0"),
        ({"stop_loss": 0}, "params.yaml: backtest.stop_loss must be in (0.0, 1.0) (or null: off), got 0"),
        ({"kelly_fraction": 0}, "params.yaml: backtest.kelly_fraction must be in (0.0, 1.0], got 0"),
        ({"drawdown_factor": 1}, "params.yaml: backtest.drawdown_factor must be in [0.0, 1.0), got 1"),
        (
            {"rule": "rank", "top_k": None, "top_fraction": None},
            "params.yaml: backtest.top_k or backtest.top_fraction: the rank rule needs exactly one of them",
        ),
    ],
)
def test_the_backtest_values_that_used_to_fail_after_training(changes, message):
    p = default_params()
    p["backtest"].update(changes)
    with pytest.raises(PipelineError) as err:
        validate_params(p)
    assert message in str(err.value)


def _backtest(**changes):
    p = default_params()
    p["backtest"].update(changes)
    return p


@pytest.mark.parametrize(
    ("p", "message"),
    [
        pytest.param(
            _backtest(rule="rank", top_k=None, top_fraction=None),
            r"backtest\.top_k or backtest\.top_fraction: "
            r"the rank rule needs exactly one",
            id="rank-neither",
        ),
        pytest.param(
            _backtest(rule="rank", top_k=2, top_fraction=0.5),
            r"backtest\.top_k or backtest\.top_fraction: "
            r"the rank rule needs exactly one",
            id="rank-both",
        ),
        pytest.param(
            _backtest(drawdown_cut=0.1, drawdown_restore=0.2),
            r"backtest\.drawdown_restore must be below backtest\.drawdown_cut \(0\.1\), got 0\.2",
            id="restore-above",
        ),
        pytest.param(
            _backtest(drawdown_cut=0.1, drawdown_restore=0.1),
            r"backtest\.drawdown_restore must be below",
            id="restore-equal",
        ),
        *[
            pytest.param(
                _backtest(engine="vectorized", **{key: True if key == "daily_limits" else 0.1}),
                r"backtest\.engine vectorized cannot run path-dependent controls",
                id=f"vectorized-{key}",
            )
            for key in PATH_DEPENDENT
        ],
        pytest.param(
            _backtest(rule="rank", top_k=4, max_position=0.2, max_gross=1.0),
            r"backtest\.max_position \(0\.2\) is below 1/k = 0\.25",
            id="rank-cap",
        ),
        pytest.param(
            _backtest(rule="rank", top_k=4, max_position=0.1, max_gross=0.5),
            r"backtest\.max_position \(0\.1\) is below 1/k = 0\.125",
            id="rank-cap-gross",
        ),
    ],
)
def test_backtest_cross_rules(p, message):
    with pytest.raises(PipelineError, match=message):
        validate_params(p)


@pytest.mark.parametrize(
    "changes",
    [
        {"rule": "rank", "top_k": 4, "max_position": 0.25},  # exactly 1/k
        {"rule": "rank", "top_k": 4, "max_position": 0.2, "allow_short": True},  # not fully invested
        {"rule": "rank", "top_k": 4, "max_position": 0.2, "sizing": "volatility"},
        {"rule": "rank", "top_fraction": 0.5},  # the cap needs the number of tickers: checked by the backtest
        {"rule": "threshold", "top_k": 3},
        {"drawdown_cut": 0.2, "drawdown_restore": 0.1999},
        {"drawdown_cut": None, "drawdown_restore": 0.9},
        {"engine": "auto", "stop_loss": 0.05, "daily_limits": True},
        {"engine": "event", "trailing_stop": 0.1},
        {"engine": "vectorized"},
    ],
)
def test_backtest_cross_rules_accept_what_the_engine_can_run(changes):
    p = _backtest(**changes)
    assert validate_params(p)["backtest"] == p["backtest"]


def test_other_cross_rules():
    p = default_params()
    p["model"].update(arch="transformer", hidden=30, heads=4)
    with pytest.raises(PipelineError, match=r"model\.hidden \(30\) must be a multiple of model\.heads \(4\)"):
        validate_params(p)
    p = default_params()
    p["features"].update(macd_fast=26, macd_slow=26)
    with pytest.raises(PipelineError, match=r"features\.macd_fast must be smaller than features\.macd_slow"):
        validate_params(p)


def _portfolio_cases():
    """(field, bad value) for each PortfolioConfig field with a bound or choices, from the same SCHEMA."""
    cases = []
    for f in fields(PortfolioConfig):
        section = BACKTEST_FROM.get(f.name, "backtest")
        spec = SCHEMA[section][f.name]
        if spec.kind == "choice":
            cases.append(pytest.param(section, f.name, "no-such-choice", id=f.name))
        for bound, is_open, direction in ((spec.lo, spec.lo_open, -1), (spec.hi, spec.hi_open, 1)):
            if bound is not None:
                value = bound if is_open else _past(spec, bound, direction)
                cases.append(pytest.param(section, f.name, value, id=f"{f.name}={value!r}"))
    return cases


@pytest.mark.parametrize(("section", "key", "value"), _portfolio_cases())
def test_portfolio_config_fails_with_the_params_message(section, key, value):
    """One schema: PortfolioConfig built in code fails exactly as params.yaml does."""
    p = default_params()
    p[section][key] = value
    with pytest.raises(PipelineError) as from_params:
        validate_params(p)
    with pytest.raises(PipelineError) as from_code:
        PortfolioConfig(**{key: value})
    assert str(from_code.value) == str(from_params.value)


def test_portfolio_config_cross_rules_match_params():
    for changes in (
        {"rule": "rank"},
        {"drawdown_cut": 0.1, "drawdown_restore": 0.2},
        {"engine": "vectorized", "stop_loss": 0.1},
        {"rule": "rank", "top_k": 4, "max_position": 0.2},
    ):
        with pytest.raises(PipelineError) as from_params:
            validate_params(_backtest(**{"top_k": None, "top_fraction": None, **changes}))
        with pytest.raises(PipelineError) as from_code:
            PortfolioConfig(**changes)
        assert str(from_code.value) == str(from_params.value), changes


@pytest.mark.slow
def test_download_refuses_a_bad_backtest_value_and_writes_nothing(workdir):
    p = default_params()
    p["backtest"]["target_vol"] = 0
    write_params(workdir, p)
    before = sorted(workdir.rglob("*"))
    module, argv = stage_commands()["download"]
    r = subprocess.run(
        [sys.executable, "-m", module, *argv],
        check=False,
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**tool_env(), "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "backtest.target_vol" in lines[0], lines
    assert lines[0].startswith("error [download]: params.yaml: backtest.target_vol must be in (0.0, 5.0]")
    assert sorted(workdir.rglob("*")) == before
    assert not (workdir / "data" / "raw").exists()
    assert os.path.getsize(workdir / "params.yaml") > 0
