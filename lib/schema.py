"""The schema of `params.yaml`: every key, its type and range (`Spec`), the model families, and the
run-only keys (how a stage runs, never what it computes). `lib.params` checks a file against it."""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from typing import Any

from lib.errors import PipelineError


@dataclass(frozen=True)
class Spec:
    """One leaf of the schema: kind is int, float, str, bool, date, choice, calendar or a list of int/str (a str_list
    with `choices`: each item one of them).

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
                least = f" of at least {self.min_len} item(s)" if self.min_len else ""
                raise PipelineError(f"params.yaml: {key} must be a list{least}, got {value!r}")
            item = Spec(
                "int" if self.kind == "int_list" else "choice" if self.choices else "str",
                self.lo,
                self.hi,
                choices=self.choices,
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

    def _calendar(self, key: str, value: Any) -> str:
        """A calendar name that exchange_calendars knows (imported only here, when a params file is checked)."""
        name = self._str(key, value)
        if name not in calendar_names():
            raise PipelineError(
                f"params.yaml: {key} must be a calendar exchange_calendars knows (XNYS for the NYSE; "
                f"exchange_calendars.get_calendar_names() lists them), got {value!r}"
            )
        return name

    def _date(self, key: str, value: Any) -> str:
        if isinstance(value, dt.date):
            return value.isoformat()[:10]
        try:
            return dt.date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise PipelineError(f"params.yaml: {key} must be a date YYYY-MM-DD, got {value!r}") from None


@functools.cache
def calendar_names() -> frozenset[str]:
    """The calendar names (and aliases) exchange_calendars knows: XNYS, NYSE, XLON, ..."""
    import exchange_calendars  # about 0.4 s: once per process

    return frozenset(exchange_calendars.get_calendar_names(include_aliases=True))


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


ARCHS = ("lstm", "gru", "alstm", "transformer", "ridge", "gbm")  # model.arch, the families of lib/ml/models.py

SCHEMA: dict[str, dict[str, Spec]] = {
    "data": {
        "source": _choice("sample", "csv", "yfinance", "fmp"),
        "tickers": Spec("str_list"),
        "csv_dir": Spec("str"),
        "membership": Spec("str", nullable=True),  # a CSV ticker,start,end under MEMBERSHIP_DIR (null: all, always)
        "start": Spec("date", nullable=True),
        "end": Spec("date", nullable=True),
        "fmp_endpoint": _choice("stable", "v3"),
        "timeout_s": _float(0.1, 600.0),
        "retries": _int(0, 10),
        "backoff_s": _float(0.0, 60.0),
        "calendar": Spec("calendar"),  # the exchange's sessions (lib.data.calendar): gaps, rebalance days, executes
        "refresh_overlap": _int(1, 252),  # stages.refresh: the last stored bars that must match the vendor's
        "refresh_tolerance": _float(0.0, 0.1),  # ... to this relative difference, else the ticker is refetched
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
        "set": _choice("basic", "alpha158"),
        "alpha158_windows": Spec("int_list", 2, 2520),
        "cross_section": _choice("none", "zscore", "rank"),
        "cross_section_keep_raw": Spec("bool"),
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
        "arch": _choice(*ARCHS),
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
        "loss": _choice("mse", "huber", "ic"),  # ic: neural archs with batching by_date (_train_rules)
        "huber_delta": _float(1.0e-6, 100.0),
        "label_norm": _choice("none", "cs_zscore", "cs_rank"),
        "batching": _choice("random", "by_date"),  # the neural archs; ridge and gbm fit all rows at once
        "feature_clip": _float(0.0),
        "sample_stride": _int(1, 252),
        "amp": _choice("auto", "on", "off"),
        "device": _choice("auto", "cpu", "cuda"),
        "threads": _int(0, 1024),
        "workers": _int(1, 256),
        # the retraining policy (lib/live/retrain.py): the weekly refresh moves train.cutoff only when it says so
        "retrain": _choice("always", "every_n_weeks", "on_drift"),
        "every_n_weeks": _int(1, 520),
        "cutoff": Spec("date", nullable=True),  # train on feature rows dated <= this (null: all); cut by featurize
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
        # model families trained, predicted and backtested beside the model ([]: none; model.arch itself is skipped)
        "baseline_models": Spec("str_list", choices=ARCHS, min_len=0),
    },
    "live": {  # the forward track record's drift checks (lib/live/drift.py), read by the weekly stages.track
        "psi_threshold": _float(0.0, lo_open=True),
        "ic_drop_threshold": _float(0.0, 2.0),
        "ic_min_predictions": _int(3),
    },
}


# Keys that choose how a stage runs, never what it computes (train.workers: the folds give the same
# bits in any number of processes). A model file does not record them, and changing one neither
# invalidates a model nor its resume state.
# train.retrain and every_n_weeks are read by the weekly command (stages/track.py, lib/live/weekly.py, outside
# DVC's stages): they decide when train.cutoff moves, never a bit of a stage's output.
RUN_ONLY: dict[str, tuple[str, ...]] = {
    "train": ("workers", "retrain", "every_n_weeks"),
}


def result_params(params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`params` without the RUN_ONLY keys: what a result depends on."""
    return {
        section: {k: v for k, v in values.items() if k not in RUN_ONLY.get(section, ())}
        for section, values in params.items()
    }
