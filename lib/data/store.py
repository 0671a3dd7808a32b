"""The raw-bar store of the network sources (yfinance, FMP): every bar fetched so far, kept outside DVC's outputs
so that `dvc repro` never deletes it, and grown by `python -m stages.refresh` with the new bars only.

One Parquet file per source, `<store>/<source>.parquet` (the long table `COLUMNS`, sorted by ticker then date),
written atomically; its schema metadata records the `data.start` it was filled from. The download stage lists the
store folder as a dependency, so `dvc repro` reruns it exactly when a refresh changed the store, and reads the
store when it covers the config (same source, every ticker, history from `data.start`); without one, as on a
fresh clone, it fetches from the source as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from lib.data.providers import long_table
from lib.io import read_table, write_table
from lib.tables import COLUMNS

log = logging.getLogger(__name__)

NETWORK_SOURCES = ("yfinance", "fmp")  # the sources a store holds; csv and sample read their folder every run
_START = b"data.start"  # schema metadata key: the data.start the store was filled from ("" = all history)


def store_file(folder: str | Path, source: str) -> Path:
    """The store of `source` in `folder` (`data/store/yfinance.parquet`)."""
    return Path(folder) / f"{source}.parquet"


def read_store(path: str | Path) -> tuple[pd.DataFrame, str | None] | None:
    """The stored bars and the `data.start` they were filled from (None: all history); None if there is no store."""
    path = Path(path)
    if not path.exists():
        return None
    bars = read_table(path, COLUMNS)[COLUMNS]
    meta = pq.read_schema(path).metadata or {}
    return bars, (meta.get(_START, b"").decode() or None)


def write_store(bars: pd.DataFrame, path: str | Path, start: str | None) -> None:
    """Write the whole store atomically (a temporary file renamed onto it), sorted by ticker then date."""
    out = bars[COLUMNS].sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
    out["date"] = out["date"].astype("datetime64[ns]")  # one unit, whichever vendor (yfinance's)
    write_table(out, path, metadata={_START: (start or "").encode()})


def covers_start(store_start: str | None, start: str | None) -> bool:
    """A store filled from `store_start` holds the history that `data.start` = `start` asks for."""
    return store_start is None or (start is not None and start >= store_start)


def from_store(cfg: dict[str, Any], folder: str | Path) -> pd.DataFrame | None:
    """The download from the store (the `data` params `cfg`): its bars of `cfg['tickers']`, in that order, cut to
    [start, end], as `lib.data.providers.download` returns them; None when there is no store for the source, or it
    lacks a ticker or the early history (one log line says so: the stage then fetches from the source)."""
    if cfg["source"] not in NETWORK_SOURCES:
        return None
    path = store_file(folder, cfg["source"])
    found = read_store(path)
    if found is None:
        return None
    bars, store_start = found
    missing = [t for t in cfg["tickers"] if t not in set(bars["ticker"])]
    if missing or not covers_start(store_start, cfg["start"]):
        why = f"lacks ticker(s) {missing}" if missing else f"starts at data.start={store_start}, after {cfg['start']}"
        log.warning("%s %s: fetching from %s instead (python -m stages.refresh fills it)", path, why, cfg["source"])
        return None
    by_ticker = dict(tuple(bars.groupby("ticker", sort=False)))
    return long_table({t: by_ticker[t].drop(columns="ticker").reset_index(drop=True) for t in cfg["tickers"]}, cfg)
