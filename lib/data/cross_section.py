"""Per-date (cross-sectional) normalisation of features and labels, as Qlib's `CSZScoreNorm` and
`CSRankNorm` do it.

Legal under the no-look-ahead rule: the value for (date t, ticker i) is computed from the rows of
date t only (every ticker's value on that same date), never from another date, so changing any
row dated after t changes nothing dated <= t (tests/test_cross_section.py perturbs it).
"""

from __future__ import annotations

import math

import numpy as np
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
    return _rank_by_date(values, keys)


def _rank_by_date(values: pd.DataFrame, dates: np.ndarray) -> pd.DataFrame:
    """The rank branch of `normalise_by_date`, one column at a time on a (date x slot) grid, every date
    at once: the same numbers as pandas' grouped rank (ties averaged), several times faster."""
    codes, slot, shape = _date_grid(dates)
    grid = np.full(shape, np.nan)
    out = np.empty(values.shape)
    for j, col in enumerate(values.columns):
        grid[codes, slot] = values[col].to_numpy(float)
        count = np.sum(~np.isnan(grid), axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):  # a date without a value: NaN, as pandas
            out[:, j] = ((_average_ranks(grid) - 0.5) / count - 0.5)[codes, slot] * RANK_SCALE
    return pd.DataFrame(out, index=values.index, columns=values.columns)


def _date_grid(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Each row's date index and its slot among that date's rows; the grid's shape (dates, widest date)."""
    codes = pd.factorize(dates, sort=False)[0]
    counts = np.bincount(codes)
    slot = np.empty(len(codes), np.int64)
    slot[np.argsort(codes, kind="stable")] = np.arange(len(codes)) - np.repeat(np.cumsum(counts) - counts, counts)
    return codes, slot, (len(counts), int(counts.max(initial=0)))


def _average_ranks(grid: np.ndarray) -> np.ndarray:
    """Per row, each value's 1-based rank among the row's values, tied values at the mean of their ranks
    ((first + last) / 2 of the tied block, exact in binary); NaN stays NaN and ranks after every value."""
    order = np.argsort(grid, axis=1, kind="stable")
    s = np.take_along_axis(grid, order, axis=1)
    width = grid.shape[1]
    pos = np.broadcast_to(np.arange(width), grid.shape)
    starts = np.ones(grid.shape, bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = np.ones(grid.shape, bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, width - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(grid.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=1)
    return np.where(np.isnan(grid), np.nan, ranks)
