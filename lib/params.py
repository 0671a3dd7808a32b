"""The schema of `params.yaml`: every key, its type and range, checked before any work.

DVC itself rejects an unknown `-S` key; this module does the same for a key misspelled
by hand, and rejects a wrong type or an out-of-range value either way, naming the key.
The file is read as DVC reads it (ruamel.yaml, YAML 1.2), so `1e-05`, which DVC writes back
after `dvc exp run -S train.lr=1e-5`, is the float it looks like.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML, YAMLError

from lib.errors import PipelineError

PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class Spec:
    """One leaf of the schema: kind is int, float, str, bool, date, choice or a list of int/str.

    A number must lie in [lo, hi]; `lo_open` / `hi_open` exclude the bound itself, so
    `Spec("float", 0.0, 1.0, lo_open=True, hi_open=True)` is (0, 1). None: no bound on that side."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    min_len: int = 1
    lo_open: bool = False
    hi_open: bool = False

    def check(self, key: str, value: Any) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise PipelineError(f"params.yaml: {key} must not be empty (null)")
        if self.kind in ("int_list", "str_list"):
            if not isinstance(value, list) or len(value) < self.min_len:
                raise PipelineError(
                    f"params.yaml: {key} must be a list of at least {self.min_len} item(s), got {value!r}"
                )
            item = Spec(
                "int" if self.kind == "int_list" else "str",
                self.lo,
                self.hi,
                lo_open=self.lo_open,
                hi_open=self.hi_open,
            )
            out = [item.check(f"{key}[{i}]", v) for i, v in enumerate(value)]
            if len(set(out)) != len(out):
                raise PipelineError(f"params.yaml: {key} has duplicate items: {value!r}")
            return out
        return getattr(self, f"_{self.kind}")(key, value)

    def interval(self) -> str:
        """The range as written in messages: `[1, 4096]`, `(0.0, 5.0]`, `[0.0, inf]`."""
        lo = "-inf" if self.lo is None else self.lo
        hi = "inf" if self.hi is None else self.hi
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def _range(self, key: str, value: float) -> None:
        below = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        above = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if below or above:
            off = " (or null: off)" if self.nullable else ""
            raise PipelineError(f"params.yaml: {key} must be in {self.interval()}{off}, got {value!r}")

    def _int(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PipelineError(f"params.yaml: {key} must be an integer, got {value!r} ({type(value).__name__})")
        self._range(key, value)
        return value

    def _float(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineError(f"params.yaml: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise PipelineError(f"params.yaml: {key} must be a finite number, got {value!r}")
        self._range(key, float(value))
        return float(value)

    def _str(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise PipelineError(f"params.yaml: {key} must be a non-empty string, got {value!r}")
        return value.strip()

    def _bool(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise PipelineError(f"params.yaml: {key} must be true or false, got {value!r}")
        return value

    def _choice(self, key: str, value: Any) -> str:
        if value not in self.choices:
            raise PipelineError(f"params.yaml: {key} must be one of {list(self.choices)}, got {value!r}")
        return value

    def _date(self, key: str, value: Any) -> str:
        if isinstance(value, dt.date):
            return value.isoformat()[:10]
        try:
            return dt.date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise PipelineError(f"params.yaml: {key} must be a date YYYY-MM-DD, got {value!r}") from None


def _int(lo: int | None = None, hi: int | None = None, *, nullable: bool = False) -> Spec:
    return Spec("int", lo, hi, nullable=nullable)


def _float(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    nullable: bool = False,
) -> Spec:
    return Spec("float", lo, hi, nullable=nullable, lo_open=lo_open, hi_open=hi_open)


def _fraction(*, lo_open: bool = False, hi_open: bool = False, nullable: bool = False) -> Spec:
    """A fraction in [0, 1], either bound possibly excluded."""
    return _float(0.0, 1.0, lo_open=lo_open, hi_open=hi_open, nullable=nullable)


def _choice(*choices: str) -> Spec:
    return Spec("choice", choices=choices)


SCHEMA: dict[str, dict[str, Spec]] = {
    "data": {
        "source": _choice("sample", "csv", "yfinance", "fmp"),
        "tickers": Spec("str_list"),
        "csv_dir": Spec("str"),
        "start": Spec("date", nullable=True),
        "end": Spec("date", nullable=True),
        "fmp_endpoint": _choice("stable", "v3"),
        "timeout_s": _float(0.1, 600.0),
        "retries": _int(0, 10),
        "backoff_s": _float(0.0, 60.0),
    },
    "validate": {
        "policy": _choice("fail", "repair", "drop"),
        "max_gap_sessions": _int(1),
        "max_move": _float(0.0),
        "max_stale_run": _int(2),
        "ohlc_tolerance": _float(0.0, 0.1),
    },
    "features": {
        "horizon": _int(1, 252),
        "return_windows": Spec("int_list", 1, 2520),
        "sma_windows": Spec("int_list", 2, 2520),
        "ema_windows": Spec("int_list", 2, 2520),
        "rsi_window": _int(2, 2520),
        "macd_fast": _int(2, 2520),
        "macd_slow": _int(3, 2520),
        "macd_signal": _int(2, 2520),
        "bollinger_window": _int(2, 2520),
        "bollinger_k": _float(0.1, 10.0),
        "atr_window": _int(2, 2520),
        "vol_windows": Spec("int_list", 2, 2520),
        "volume_window": _int(2, 2520),
        "calendar": Spec("bool"),
    },
    "walk_forward": {
        "folds": _int(1, 100),
        "test_sessions": _int(5),
        "window": _choice("expanding", "rolling"),
        "train_sessions": _int(20),
        "purge": _int(0),
        "embargo": _int(0),
        "val_fraction": _float(0.05, 0.5),
    },
    "model": {
        "arch": _choice("lstm", "gru", "alstm", "transformer", "ridge", "gbm"),
        "hidden": _int(1, 4096),
        "layers": _int(1, 16),
        "dropout": _float(0.0, 0.9),
        "seq_len": _int(1, 1000),
        "ensemble": _int(1, 100),
        "heads": _int(1, 64),  # transformer only (from here on: each key is used by one arch)
        "ff_size": _int(1, 65536),  # transformer
        "ridge_alpha": _float(0.0, 1.0e6),  # ridge
        "gbm_max_iter": _int(1, 10000),  # gbm
        "gbm_learning_rate": _float(1.0e-4, 1.0),
        "gbm_max_leaf_nodes": _int(2, 65536),
        "gbm_min_samples_leaf": _int(1),
        "gbm_l2": _float(0.0),
    },
    "train": {
        "seed": _int(0),
        "epochs": _int(1, 10000),
        "patience": _int(1),
        "batch_size": _int(1),
        "lr": _float(1.0e-8, 1.0),
        "weight_decay": _float(0.0, 1.0),
        "lr_schedule": _choice("constant", "cosine", "onecycle", "plateau"),
        "warmup_epochs": _int(0, 10000),
        "plateau_factor": _float(0.01, 1.0),
        "plateau_patience": _int(1),
        "accumulate": _int(1, 4096),
        "final_refit": Spec("bool"),
        "grad_clip": _float(0.0),
        "loss": _choice("mse", "huber"),
        "huber_delta": _float(1.0e-6, 100.0),
        "feature_clip": _float(0.0),
        "sample_stride": _int(1, 252),
        "amp": _choice("auto", "on", "off"),
        "device": _choice("auto", "cpu", "cuda"),
        "threads": _int(0, 1024),
        "workers": _int(1, 256),
    },
    "backtest": {  # also the checks of lib.portfolio.config.PortfolioConfig (check_backtest below): one set of ranges
        "rebalance": _choice("weekly", "monthly", "daily"),
        "fill": _choice("next_open", "close"),
        "threshold": _float(0.0, 1.0),
        "allow_short": Spec("bool"),
        "commission_bps": _float(0.0, 1000.0),
        "slippage_bps": _float(0.0, 1000.0),
        "initial_cash": _float(1.0, 1.0e12),
        "engine": _choice("auto", "vectorized", "event"),
        "rule": _choice("threshold", "rank"),
        "top_k": _int(1, None, nullable=True),
        "top_fraction": _fraction(lo_open=True, nullable=True),
        "rank_weighting": _choice("equal", "signal"),
        "min_tickers": _int(1),
        "min_abs_prediction": _float(0.0, 1.0),
        "trend_window": _int(1, None, nullable=True),
        "vol_regime_window": _int(2, None, nullable=True),
        "vol_regime_quantile": _fraction(lo_open=True),
        "vol_regime_scale": _fraction(),
        "sizing": _choice("equal", "volatility", "kelly"),
        "vol_window": _int(2),
        "target_vol": _float(0.0, 5.0, lo_open=True),
        "vol_scope": _choice("position", "book"),
        "kelly_fraction": _fraction(lo_open=True),
        "kelly_cap": _float(0.0, 10.0, lo_open=True),
        "max_position": _float(0.0, 10.0, lo_open=True),
        "max_gross": _float(0.0, 10.0, lo_open=True),
        "max_net": _float(0.0, 10.0),
        "daily_limits": Spec("bool"),
        "limit_tolerance": _fraction(),
        "stop_loss": _fraction(lo_open=True, hi_open=True, nullable=True),
        "trailing_stop": _fraction(lo_open=True, hi_open=True, nullable=True),
        "drawdown_cut": _fraction(lo_open=True, hi_open=True, nullable=True),
        "drawdown_restore": _fraction(),  # and below drawdown_cut (_backtest_rules)
        "drawdown_factor": _fraction(hi_open=True),
        "min_order_value": _float(0.0),
    },
    "evaluate": {
        "periods_per_year": _int(1, 366),
        "risk_free": _float(-0.5, 0.5),
        "alpha": _float(0.001, 0.5),
        "seed": _int(0),
        "bootstrap_reps": _int(10, 1_000_000),
        "monte_carlo_paths": _int(10, 1_000_000),
        "permutations": _int(1, 100_000),
        "spa_reps": _int(10, 1_000_000),
        "min_cross_section": _int(2, 100_000),
        "quantiles": _int(2, 100),
        "rolling_window": _int(5, 2520),
        "cost_grid_bps": Spec("int_list", 0, 1000, min_len=2),
    },
}


# Keys that choose how a stage runs, never what it computes (train.workers: the folds give the same
# bits in any number of processes). A model file does not record them, and changing one neither
# invalidates a model nor its resume state.
RUN_ONLY: dict[str, tuple[str, ...]] = {"train": ("workers",)}


def result_params(params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`params` without the RUN_ONLY keys: what a result depends on."""
    return {
        section: {k: v for k, v in values.items() if k not in RUN_ONLY.get(section, ())}
        for section, values in params.items()
    }


# The backtest keys that only the event engine runs (stops, drawdown control, daily position limits).
PATH_DEPENDENT = ("stop_loss", "trailing_stop", "drawdown_cut", "daily_limits")

# Keys of a backtest config (lib.portfolio.config.PortfolioConfig) that params.yaml holds in another section.
BACKTEST_FROM: dict[str, str] = {"horizon": "features", "periods_per_year": "evaluate"}


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


def _cross_checks(p: dict[str, dict[str, Any]]) -> None:
    """Rules that tie keys together (each message names both keys)."""
    d, f, wf = p["data"], p["features"], p["walk_forward"]
    if d["start"] and d["end"] and d["start"] >= d["end"]:
        raise PipelineError(f"params.yaml: data.start ({d['start']}) must be before data.end ({d['end']})")
    if wf["purge"] < f["horizon"]:
        raise PipelineError(
            f"params.yaml: walk_forward.purge ({wf['purge']}) must be at least features.horizon "
            f"({f['horizon']}), or training labels would overlap the test window"
        )
    m = p["model"]
    if m["arch"] == "transformer" and m["hidden"] % m["heads"]:
        raise PipelineError(
            f"params.yaml: model.hidden ({m['hidden']}) must be a multiple of model.heads "
            f"({m['heads']}) for model.arch=transformer"
        )
    if f["macd_fast"] >= f["macd_slow"]:
        raise PipelineError("params.yaml: features.macd_fast must be smaller than features.macd_slow")
    _backtest_rules(p["backtest"])


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
