"""Atomic file output (temp file in the same folder, then rename) and table input."""
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

from lib.errors import PipelineError
from lib.tables import DATE_COLUMNS

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


def read_table(path: str | os.PathLike, required: list[str]) -> pd.DataFrame:
    """Read a CSV written by a previous stage (floats round-trip exactly) and parse its dates."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: file not found (run the stage that writes it: dvc repro)")
    df = pd.read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PipelineError(f"{path}: missing column(s) {missing}")
    for col in DATE_COLUMNS:
        if col in df.columns:
            df[col] = pd.to_datetime(df[col])
    return df
