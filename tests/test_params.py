import pytest
import yaml

from lib.errors import PipelineError
from lib.params import load_params, validate_params
from tests.helpers import ROOT, default_params


def test_bundled_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p["data"]["source"] == "sample"
    assert p["walk_forward"]["purge"] >= p["features"]["horizon"]


@pytest.mark.parametrize(("section", "key", "value", "message"), [
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
])
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
