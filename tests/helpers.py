"""Test helpers: default params, a small fast config, synthetic bars, the stages as DVC runs them."""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from lib.params import load_params

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PIPELINE_QUIET", "1")


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: this interpreter's folder first on PATH (dvc.yaml runs
    `python -m stages...`), quiet logs, no analytics, a git identity."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), "PIPELINE_QUIET": "1", "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t", **extra}


def default_params() -> dict:
    return copy.deepcopy(load_params(ROOT / "params.yaml"))


def small_params() -> dict:
    """A config that runs the whole pipeline in seconds: two tickers, two short folds, a tiny LSTM."""
    p = default_params()
    p["data"].update(tickers=["SPY", "TLT"], start="2016-01-01", end="2019-12-31")
    p["features"].update(sma_windows=[10, 50], vol_windows=[5, 21], return_windows=[1, 5, 21])
    p["walk_forward"].update(folds=2, test_sessions=100, window="expanding")
    p["model"].update(hidden=8, layers=1, dropout=0.0, seq_len=10)
    p["train"].update(epochs=3, patience=2, batch_size=128)
    return p


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def gbm_bars(n: int = 300, tickers: tuple[str, ...] = ("AAA",), seed: int = 0, start: str = "2020-01-01") -> pd.DataFrame:
    """Synthetic daily bars in the long layout, with valid OHLC bounds and positive volume."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range(start, periods=n)
    parts = []
    for t in tickers:
        close = 100 * np.exp(np.cumsum(rng.normal(0.0003, 0.01, n)))
        open_ = close * np.exp(rng.normal(0, 0.003, n))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
        parts.append(pd.DataFrame({"date": dates, "ticker": t, "open": open_, "high": high, "low": low, "close": close,
                                   "adj_close": close * 0.9, "volume": rng.integers(1e5, 1e6, n).astype(float)}))
    return pd.concat(parts, ignore_index=True)


def stage_commands() -> dict[str, tuple[str, list[str]]]:
    """The stages' module and arguments, read from dvc.yaml, so tests run exactly what DVC runs."""
    import shlex

    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in spec.items():
        argv = shlex.split(stage["cmd"])
        assert argv[:2] == ["python", "-m"], stage["cmd"]
        out[name] = (argv[2], argv[3:])
    return out


def run_stages(*names: str) -> None:
    """Run stages in-process in the current directory (exceptions propagate to the test)."""
    import importlib

    commands = stage_commands()
    for name in names:
        module, argv = commands[name]
        importlib.import_module(module).main(argv)
