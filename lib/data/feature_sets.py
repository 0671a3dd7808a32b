"""The featurize stage's table: the feature set `features.set` chooses, then the optional per-date
normalisation `features.cross_section`.

Per-date normalisation is legal under the no-look-ahead rule: the value for (date t, ticker i) is computed
from the rows of date t only (`lib.data.cross_section.normalise_by_date`), each of them built from bars up
to t, and the rows present on date t are those whose own features are defined at t; so nothing dated after t
enters it (tests/test_alpha158.py perturbs the prices after T). The calendar features (`CALENDAR`) are the
same for every ticker on a date, so a per-date normalisation would turn them into constants: they stay raw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from lib.data.alpha158 import build_alpha158
from lib.data.cross_section import normalise_by_date
from lib.data.features import CALENDAR, build_features, feature_columns

BUILDERS: dict[str, Callable[[pd.DataFrame, dict[str, Any]], pd.DataFrame]] = {
    "basic": build_features,
    "alpha158": build_alpha158,
}
SUFFIX = "_cs"  # the normalised copy of a feature kept beside its raw value
CHUNK = 16  # features normalised at a time


def make_features(prices: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """The `features` section applied: the set's table, normalised per date if asked (`none`: as built)."""
    table = BUILDERS[cfg["set"]](prices, cfg)
    return cross_sectional(table, cfg["cross_section"], keep_raw=cfg["cross_section_keep_raw"])


def cross_sectional(table: pd.DataFrame, method: str, *, keep_raw: bool) -> pd.DataFrame:
    """Every feature but the calendar ones normalised within each date (`zscore` or `rank`, as
    `normalise_by_date` defines them), over the rows the table keeps (after the warm-up). keep_raw: the
    normalised copy `<name>_cs` follows each raw feature; else it replaces the raw values, name unchanged.
    Normalised `CHUNK` features at a time (each column on its own, so the values are the same): the per-date
    statistics of 158 features at once would need several copies of the table."""
    if method == "none":
        return table
    cols = [c for c in feature_columns(table) if c not in CALENDAR]
    normed: dict[str, Any] = {}
    for start in range(0, len(cols), CHUNK):
        part = normalise_by_date(table[cols[start : start + CHUNK]], table["date"], method)
        normed |= {c: part[c].to_numpy() for c in part.columns}
    out: dict[str, Any] = {}
    for c in table.columns:
        if c not in normed:
            out[c] = table[c]
        elif keep_raw:
            out[c], out[f"{c}{SUFFIX}"] = table[c], normed[c]
        else:
            out[c] = normed[c]
    return pd.DataFrame(out)
