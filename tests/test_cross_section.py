"""Per-date normalisation (lib/data/cross_section.py): values, NaN handling, and no look-ahead."""

import numpy as np
import pandas as pd
import pytest

from lib.data.cross_section import normalise_by_date


def _frame(seed: int = 0, dates: int = 6, tickers: int = 7) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    d = pd.Series(np.repeat(pd.bdate_range("2024-01-01", periods=dates), tickers))
    return pd.DataFrame({"a": rng.normal(size=len(d)), "b": rng.normal(size=len(d))}), d


def test_zscore_has_zero_mean_unit_population_sd_per_date():
    x, d = _frame()
    z = normalise_by_date(x, d, "zscore")
    assert np.allclose(z.groupby(d.to_numpy()).mean(), 0.0, atol=1e-12)
    assert np.allclose(z.groupby(d.to_numpy()).std(ddof=0), 1.0)


def test_rank_is_centred_percentile_rank_scaled_by_sqrt_12():
    x = pd.DataFrame({"a": [3.0, 1.0, 2.0, 2.0]})
    d = pd.Series(["t"] * 4)
    r = normalise_by_date(x, d, "rank")["a"].to_numpy()
    expected = (np.array([4.0, 1.0, 2.5, 2.5]) - 0.5) / 4 - 0.5
    assert np.allclose(r, expected * np.sqrt(12))


def test_nan_stays_nan_and_constant_date_gives_zero():
    x = pd.DataFrame({"a": [1.0, np.nan, 3.0, 5.0, 5.0]})
    d = pd.Series(["t", "t", "t", "u", "u"])
    for method in ("zscore", "rank"):
        out = normalise_by_date(x, d, method)["a"]
        assert np.isnan(out[1])
        assert out[3] == 0.0 and out[4] == 0.0
    assert np.allclose(normalise_by_date(x, d, "zscore")["a"][[0, 2]], [-1.0, 1.0])


@pytest.mark.parametrize("method", ["zscore", "rank"])
def test_changing_later_dates_changes_nothing_earlier(method):
    x, d = _frame(seed=1)
    cut = d.unique()[3]
    moved = x.copy()
    moved.loc[d > cut, "a"] = np.random.default_rng(9).normal(size=int((d > cut).sum())) * 100
    before, after = normalise_by_date(x, d, method), normalise_by_date(moved, d, method)
    assert before[d <= cut].equals(after[d <= cut])
    assert not np.allclose(before.loc[d > cut, "a"], after.loc[d > cut, "a"])


def test_unknown_method_names_it():
    x, d = _frame()
    with pytest.raises(ValueError, match="'minmax'"):
        normalise_by_date(x, d, "minmax")


def test_rank_equals_pandas_grouped_rank_bit_for_bit_on_ties_nan_inf_and_shuffled_rows():
    """The grid implementation against its reference: pandas' grouped average rank in the same formula."""
    rng = np.random.default_rng(3)
    day = np.repeat(np.arange(40), 30)[rng.random(1200) > 0.3]
    day = np.append(day, [40, 41, 41])  # a date with one row; one whose values are all NaN
    x = np.round(rng.normal(size=(len(day), 3)), 1)  # many ties
    x[rng.random(x.shape) < 0.15] = np.nan
    x[rng.random(len(day)) < 0.05, 2] = np.inf
    x[-2:, :] = np.nan
    order = rng.permutation(len(day))
    values = pd.DataFrame(x[order], columns=["a", "b", "c"], index=order + 7)
    dates = pd.Series(pd.Timestamp("2021-01-04") + pd.to_timedelta(day[order], "D"))
    groups = values.groupby(dates.to_numpy(), sort=False)
    want = ((groups.rank(method="average") - 0.5) / groups.transform("count") - 0.5) * np.sqrt(12.0)
    got = normalise_by_date(values, dates, "rank")
    assert got.index.equals(values.index) and list(got.columns) == ["a", "b", "c"]
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())  # NaN where NaN, every other bit equal
    assert (got[dates.to_numpy() == pd.Timestamp("2021-02-13")].fillna(0) == 0).all().all()  # one row: 0
