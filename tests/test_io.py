"""Tables on disk: Parquet round trips bit-exactly, with its column types checked on read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.errors import PipelineError
from lib.io import read_table, write_table
from lib.tables import LABEL_END

AWKWARD = np.array(
    [
        0.1,
        -0.0,
        np.nan,
        np.inf,
        -np.inf,
        5e-324,
        1.7976931348623157e308,
        1 / 3,
        2.0**-1074 * 3,
        123456789.12345678,
        -1e-300,
        0.30000000000000004,
    ]
)


def awkward_frame() -> pd.DataFrame:
    n = len(AWKWARD)
    return pd.DataFrame(
        {
            "date": pd.bdate_range("2020-01-01", periods=n),
            "ticker": ["NA", "TRUE", "", "é", *"ABCDEFGH"],
            "close": AWKWARD,
            "volume": np.arange(n, dtype=np.int64) * 10**12,
            LABEL_END: pd.NaT,
        }
    )


def test_parquet_round_trip_is_bit_exact(tmp_path):
    df = awkward_frame()
    write_table(df, tmp_path / "t.parquet")
    back = read_table(tmp_path / "t.parquet", ["date", "ticker", "close"])
    assert list(back.columns) == list(df.columns)
    assert back["close"].to_numpy().view(np.uint64).tolist() == AWKWARD.view(np.uint64).tolist()  # -0.0, NaN bits too
    assert back["ticker"].tolist() == df["ticker"].tolist() and back["volume"].tolist() == df["volume"].tolist()
    assert (back["date"] == df["date"]).all() and back[LABEL_END].isna().all()
    assert pd.api.types.is_datetime64_any_dtype(back[LABEL_END])


def test_same_table_same_bytes_wherever_written(tmp_path):
    df = awkward_frame()
    write_table(df, tmp_path / "a.parquet")
    write_table(df.copy(), tmp_path / "sub" / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "sub" / "b.parquet").read_bytes()
    assert b"pandas" not in (tmp_path / "a.parquet").read_bytes()  # no library-version metadata in the bytes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        ("close", ["1.0", "oops", "2"], "column 'close' has type large_string, expected a number"),
        ("ticker", [1, 2, 3], "column 'ticker' has type int64, expected a string"),
        ("date", ["2020-01-01"] * 3, "column 'date' has type large_string, expected a date"),
    ],
)
def test_schema_checked_on_read(tmp_path, column, values, expected):
    df = pd.DataFrame({"date": pd.bdate_range("2020-01-01", periods=3), "ticker": list("ABC"), "close": [1.0, 2, 3]})
    write_table(df.assign(**{column: values}), tmp_path / "t.parquet")
    with pytest.raises(PipelineError, match=f"^{tmp_path / 't.parquet'}: {expected}$"):
        read_table(tmp_path / "t.parquet", [])


def test_missing_column_and_corrupt_file_are_one_clear_line(tmp_path):
    path = tmp_path / "t.parquet"
    write_table(awkward_frame(), path)
    with pytest.raises(PipelineError, match=r"t.parquet: missing column\(s\) \['label'\]"):
        read_table(path, ["date", "label"])
    data = path.read_bytes()
    for broken in (data[: len(data) // 2], b"date,ticker\n2020-01-01,A\n", b""):
        path.write_bytes(broken)
        with pytest.raises(PipelineError, match=r"t.parquet: not a readable Parquet file \(.+\); rerun the stage") as e:
            read_table(path, [])
        assert "\n" not in str(e.value)


def test_csv_date_that_does_not_parse_names_the_row(tmp_path):
    (tmp_path / "t.csv").write_text("date,ticker,close\n2020-01-01,A,1\n2020-13-45,A,2\n")
    with pytest.raises(PipelineError, match=r"t.csv, row 2: date '2020-13-45' does not parse as a date"):
        read_table(tmp_path / "t.csv", ["date"])
