"""Atomic file output (temp file in the same folder, then rename) and table input.

Tables go by suffix: `*.parquet` (the pipeline's data tables: typed columns, floats bit-exact,
read back with their column types checked) or CSV (reports that DVC plots or a person reads)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lib.errors import PipelineError
from lib.tables import DATE_COLUMNS, STRING_COLUMNS

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def clear_dir(path: str | os.PathLike) -> None:
    """Empty a folder that one stage owns entirely, so no file from an earlier run survives in it."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bytes(data: bytes, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write JSON; NaN/inf are refused so a report never holds invalid JSON."""
    write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", path)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table without its index; dates as YYYY-MM-DD, floats in exact round-trip text."""
    dates = {c: df[c].dt.strftime("%Y-%m-%d") for c in df.columns if pd.api.types.is_datetime64_any_dtype(df[c])}
    with atomic_path(path) as tmp:
        df.assign(**dates).to_csv(tmp, index=False)


def write_table(df: pd.DataFrame, path: str | os.PathLike, metadata: dict[bytes, bytes] | None = None) -> None:
    """Write a table without its index: Parquet (zstd) for `*.parquet`, else CSV (`write_csv`).

    The Parquet file holds only the Arrow schema (no pandas metadata) and `metadata` (key-value pairs of its
    schema, Parquet only), so its bytes depend on the values and the pinned pyarrow alone."""
    if Path(path).suffix != ".parquet":
        write_csv(df, path)
        return
    table = pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _kind(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "date"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        return "number"
    return str(t)


def _expected_kind(column: str) -> str:
    return "date" if column in DATE_COLUMNS else "string" if column in STRING_COLUMNS else "number"


def _read_parquet(path: Path) -> pd.DataFrame:
    """Read a Parquet table, checking every column's type: dates (DATE_COLUMNS) are timestamps,
    STRING_COLUMNS are strings, every other column is a number."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise PipelineError(
            f"{path}: not a readable Parquet file ({reason}); rerun the stage that writes it (dvc repro -f <stage>)"
        ) from None
    for field in table.schema:
        kind, expected = _kind(field.type), _expected_kind(field.name)
        if kind != expected:
            raise PipelineError(f"{path}: column {field.name!r} has type {field.type}, expected a {expected}")
    return table.to_pandas()


def read_table(path: str | os.PathLike, required: list[str]) -> pd.DataFrame:
    """Read a table written by a previous stage (Parquet by suffix, else CSV whose floats
    round-trip exactly); dates parsed, `required` columns present."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: file not found (run the stage that writes it: dvc repro)")
    df = _read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype={"ticker": str})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {missing}")
    for col in DATE_COLUMNS:
        if col in df.columns:
            dates = pd.to_datetime(df[col], errors="coerce")
            bad = dates.isna() & df[col].notna()
            if bad.any():
                i = int(bad.to_numpy().argmax())
                raise PipelineError(f"{path}, row {i + 1}: {col} {df[col].iloc[i]!r} does not parse as a date")
            df[col] = dates
    return df
