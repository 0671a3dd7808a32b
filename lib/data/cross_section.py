"""Per-date (cross-sectional) normalisation of features and labels, as Qlib's `CSZScoreNorm` and
`CSRankNorm` do it.

Legal under the no-look-ahead rule: the value for (date t, ticker i) is computed from the rows of
date t only (every ticker's value on that same date), never from another date, so changing any
row dated after t changes nothing dated <= t (tests/test_cross_section.py perturbs it).
"""

from __future__ import annotations

import math

import pandas as pd

METHODS = ("zscore", "rank")
RANK_SCALE = math.sqrt(12.0)  # a uniform variable on (0, 1) has variance 1/12


def normalise_by_date(values: pd.DataFrame, dates: pd.Series, method: str) -> pd.DataFrame:
    """Each column normalised within each date; NaN stays NaN and is left out of the date's statistics.

    zscore: (x - mean_t) / sd_t with the date's mean and population sd (sd 0: 0).
    rank: the percentile rank (ties averaged) centred and scaled, (rank_t - 1/2) / n_t - 1/2, times
    sqrt(12), so it has mean 0 and variance 1 - 1/n_t^2 on a date of n_t distinct values (Qlib's CSRankNorm
    multiplies by 3.46). A date with one value gives 0."""
    if method not in METHODS:
        raise ValueError(f"unknown per-date normalisation {method!r}; expected one of {list(METHODS)}")
    keys = pd.Series(dates).to_numpy()
    groups = values.groupby(keys, sort=False)
    if method == "zscore":
        sd = groups.transform("std", ddof=0)
        out = (values - groups.transform("mean")) / sd.where(sd > 0)
        return out.where(~(sd == 0), 0.0).where(values.notna())
    ranks = groups.rank(method="average")
    return ((ranks - 0.5) / groups.transform("count") - 0.5) * RANK_SCALE
