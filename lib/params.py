"""`params.yaml` checked before any work: every key against the schema (`lib.schema`), then the
rules that tie keys together (backtest, training, cross-section checks).

DVC itself rejects an unknown `-S` key; this module does the same for a key misspelled
by hand, and rejects a wrong type or an out-of-range value either way, naming the key.
The file is read as DVC reads it (ruamel.yaml, YAML 1.2), so `1e-05`, which DVC writes back
after `dvc exp run -S train.lr=1e-5`, is the float it looks like.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ruamel.yaml import YAML, YAMLError

from lib.errors import PipelineError
from lib.schema import SCHEMA

PARAMS_FILE = "params.yaml"


# The backtest keys that only the event engine runs (stops, drawdown control, daily position limits).
PATH_DEPENDENT = ("stop_loss", "trailing_stop", "drawdown_cut", "daily_limits")

# Keys of a backtest config (lib.portfolio.config.PortfolioConfig) that params.yaml holds in another section.
BACKTEST_FROM: dict[str, str] = {"horizon": "features", "periods_per_year": "evaluate", "calendar": "data"}


def path_dependent(b: Mapping[str, Any]) -> bool:
    """A path-dependent control is on: a stop or the drawdown cut is set, or daily_limits is true."""
    return (
        b["stop_loss"] is not None
        or b["trailing_stop"] is not None
        or b["drawdown_cut"] is not None
        or bool(b["daily_limits"])
    )


def fully_invested(b: Mapping[str, Any]) -> bool:
    """Rank top-k long-only with equal sizing: the book is meant to hold min(1, max_gross)."""
    return b["rule"] == "rank" and not b["allow_short"] and b["sizing"] == "equal"


def check_rank_cap(max_position: float, max_gross: float, k: int) -> None:
    """The rank rule's k names, long-only and fully invested, need max_position >= min(1, max_gross) / k."""
    need = min(1.0, max_gross) / k
    if max_position < need - 1e-12:
        raise PipelineError(
            f"params.yaml: backtest.max_position ({max_position:g}) is below 1/k = {need:.6g}: the rank rule's "
            f"top {k} long-only, fully invested, cannot be held; raise backtest.max_position to at least "
            f"{need:.6g} or hold more names (backtest.top_k)"
        )


def _backtest_rules(b: Mapping[str, Any]) -> None:
    """The rules that tie backtest keys together (values already in range)."""
    if b["rule"] == "rank":
        if (b["top_k"] is None) == (b["top_fraction"] is None):
            raise PipelineError(
                f"params.yaml: backtest.top_k or backtest.top_fraction: the rank rule needs exactly one of them "
                f"(the other null), got top_k={b['top_k']!r}, top_fraction={b['top_fraction']!r}"
            )
        if b["top_k"] is not None and fully_invested(b):
            check_rank_cap(b["max_position"], b["max_gross"], b["top_k"])
    if b["drawdown_cut"] is not None and not b["drawdown_restore"] < b["drawdown_cut"]:
        raise PipelineError(
            f"params.yaml: backtest.drawdown_restore must be below backtest.drawdown_cut ({b['drawdown_cut']!r}), "
            f"got {b['drawdown_restore']!r}"
        )
    if b["engine"] == "vectorized" and path_dependent(b):
        raise PipelineError(
            "params.yaml: backtest.engine vectorized cannot run path-dependent controls (stop_loss, trailing_stop, "
            "drawdown_cut, daily_limits): use event or auto"
        )


def check_backtest(values: Mapping[str, Any]) -> None:
    """The backtest section's ranges and rules for a config built from code (lib.portfolio.config.PortfolioConfig):
    the same specs and messages as params.yaml. `horizon` and `periods_per_year` are checked as
    features.horizon and evaluate.periods_per_year. Values are checked, not changed."""
    for key, value in values.items():
        section = BACKTEST_FROM.get(key, "backtest")
        SCHEMA[section][key].check(f"{section}.{key}", value)
    _backtest_rules(values)


# The archs that fit with train.loss (ridge and gbm early-stop on mse or huber).
NEURAL = ("lstm", "gru", "alstm", "transformer")


def _train_rules(p: dict[str, dict[str, Any]]) -> None:
    """train.loss ic needs whole-date batches and a neural arch; a per-date normalised label is no log return."""
    t, arch, b = p["train"], p["model"]["arch"], p["backtest"]
    if t["loss"] == "ic" and t["batching"] != "by_date":
        raise PipelineError(
            f"params.yaml: train.loss ic (a per-date correlation) needs train.batching by_date, got {t['batching']!r}"
        )
    if t["loss"] == "ic" and arch not in NEURAL:
        raise PipelineError(f"params.yaml: train.loss ic trains {list(NEURAL)} only, but model.arch is {arch!r}")
    for key, reads_returns in (("rule", "threshold"), ("sizing", "kelly")):
        if t["label_norm"] != "none" and b[key] == reads_returns:
            raise PipelineError(
                f"params.yaml: backtest.{key} {reads_returns} reads predictions as log returns, but train.label_norm "
                f"{t['label_norm']} predicts per-date scores; use another backtest.{key} or train.label_norm none"
            )


MEMBERSHIP_DIR = "data/universe"  # data.membership's folder: a dep of predict in dvc.yaml (a null path cannot be one)


def _cross_checks(p: dict[str, dict[str, Any]]) -> None:
    """Rules that tie keys together (each message names both keys)."""
    d, f, wf = p["data"], p["features"], p["walk_forward"]
    if d["start"] and d["end"] and d["start"] >= d["end"]:
        raise PipelineError(f"params.yaml: data.start ({d['start']}) must be before data.end ({d['end']})")
    m = d["membership"]
    if m is not None and (str(PurePosixPath(posixpath.normpath(m)).parent) != MEMBERSHIP_DIR or not m.endswith(".csv")):
        raise PipelineError(
            f"params.yaml: data.membership must be a .csv file in {MEMBERSHIP_DIR}/ (the folder dvc.yaml tracks), "
            f"e.g. {MEMBERSHIP_DIR}/index.csv, or null; got {m!r}"
        )
    if wf["purge"] < f["horizon"]:
        raise PipelineError(
            f"params.yaml: walk_forward.purge ({wf['purge']}) must be at least features.horizon "
            f"({f['horizon']}), or training labels would overlap the test window"
        )
    m = p["model"]
    transformer = "model.arch" if m["arch"] == "transformer" else "evaluate.baseline_models"
    if "transformer" in (m["arch"], *p["evaluate"]["baseline_models"]) and m["hidden"] % m["heads"]:
        raise PipelineError(
            f"params.yaml: model.hidden ({m['hidden']}) must be a multiple of model.heads "
            f"({m['heads']}) for the transformer of {transformer}"
        )
    if f["macd_fast"] >= f["macd_slow"]:
        raise PipelineError("params.yaml: features.macd_fast must be smaller than features.macd_slow")
    _backtest_rules(p["backtest"])
    _train_rules(p)


def validate_params(raw: Any) -> dict[str, dict[str, Any]]:
    """Check a parsed params mapping against SCHEMA; return it with normalised values."""
    if not isinstance(raw, dict):
        raise PipelineError("params.yaml: the file must hold a mapping of sections")
    unknown = sorted(set(raw) - set(SCHEMA))
    if unknown:
        raise PipelineError(f"params.yaml: unknown section(s) {unknown}; known: {sorted(SCHEMA)}")
    out: dict[str, dict[str, Any]] = {}
    for section, specs in SCHEMA.items():
        values = raw.get(section)
        if not isinstance(values, dict):
            raise PipelineError(f"params.yaml: section '{section}' is missing or not a mapping")
        extra = sorted(set(values) - set(specs))
        if extra:
            raise PipelineError(
                f"params.yaml: unknown key(s) {[f'{section}.{k}' for k in extra]}; "
                f"known keys in '{section}': {sorted(specs)}"
            )
        missing = sorted(set(specs) - set(values))
        if missing:
            raise PipelineError(f"params.yaml: missing key(s) {[f'{section}.{k}' for k in missing]}")
        out[section] = {k: spec.check(f"{section}.{k}", values[k]) for k, spec in specs.items()}
    _cross_checks(out)
    return out


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """Read and validate the whole params file (so a bad key fails at the first stage run)."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: not found (run from the repository root)")
    try:
        raw = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML: {exc}") from None
    return validate_params(raw)
