"""Price providers behind one interface: bundled sample, local CSV, yfinance, FMP.

Every provider returns one long table with columns `COLUMNS`, sorted by ticker and date.
Network providers use timeouts and retries with backoff; a failure names the ticker and
says that `data.source=sample` works offline. The FMP key is never printed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import requests
from dotenv import dotenv_values

from lib.cli import redact, register_secret
from lib.errors import PipelineError
from lib.tables import ALL_TICKERS, COLUMNS, PRICE_COLUMNS

log = logging.getLogger(__name__)

OFFLINE_HINT = "offline? set data.source=sample (bundled prices) or data.source=csv"
DATE_CELL = r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?([+-]\d{2}:?\d{2})?)?"  # date, or timestamp (history())
_HEADER_ALIASES = {"adj close": "adj_close", "adjclose": "adj_close", "adj_close": "adj_close"}


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _with_retries(
    what: str, call: Callable[[], Any], retries: int, backoff_s: float, retry_on: tuple[type[BaseException], ...]
) -> Any:
    """Call `call`, retrying on `retry_on` with exponential backoff; re-raise the last failure."""
    for attempt in range(retries + 1):
        try:
            return call()
        except retry_on as exc:
            if attempt == retries:
                raise
            wait = backoff_s * 2**attempt
            log.warning("%s failed (%s), retry %d/%d in %.1fs", what, exc, attempt + 1, retries, wait)
            _sleep(wait)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- CSV files
def _canonical(name: str) -> str:
    key = str(name).strip().lower()
    return _HEADER_ALIASES.get(key, key.replace(" ", "_"))


def parse_price_csv(path: Path, ticker: str) -> pd.DataFrame:
    """Read one ticker's CSV: our header, Yahoo's, or yfinance's three-line header.

    Leading rows whose date does not parse (stray header rows) are dropped; a bad date or a
    non-numeric value further down is an error naming the file and line. A clean file (numeric
    columns, ISO dates) takes a fast path; anything else is read as text and checked cell by cell.
    """
    try:
        typed = pd.read_csv(path, skip_blank_lines=True, float_precision="round_trip")
        typed.columns = [_canonical(c) for c in typed.columns]
        if {"date", *PRICE_COLUMNS} <= set(typed.columns) and all(
            pd.api.types.is_numeric_dtype(typed[c]) for c in PRICE_COLUMNS
        ):
            dates = pd.to_datetime(typed["date"], format="%Y-%m-%d", errors="coerce")
            if dates.notna().all():
                return pd.DataFrame(
                    {"date": dates.to_numpy(), **{c: typed[c].to_numpy(dtype=float) for c in PRICE_COLUMNS}}
                )
        raw = pd.read_csv(path, dtype=str, skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise PipelineError(f"{path}: not a readable CSV file ({ticker}): {str(exc).splitlines()[0]}") from None
    raw.columns = [_canonical(c) for c in raw.columns]
    if "date" not in raw.columns and raw.columns[0] in ("price", "unnamed:_0", ""):
        raw = raw.rename(columns={raw.columns[0]: "date"})
    if "adj_close" not in raw.columns and "close" in raw.columns:
        log.warning(
            "%s: no adj_close column; close is used as given (if it is not dividend-adjusted, "
            "returns exclude dividends)",
            path,
        )
        raw["adj_close"] = raw["close"]
    missing = [c for c in ["date", *PRICE_COLUMNS] if c not in raw.columns]
    if missing:
        raise PipelineError(
            f"{path}: missing column(s) {missing} for {ticker}; expected "
            "date,open,high,low,close,adj_close,volume or Yahoo's Date,Open,High,Low,Close,Adj Close,Volume"
        )
    cells = raw["date"].str.strip()
    dates = pd.to_datetime(
        cells.str[:10].where(cells.str.fullmatch(DATE_CELL, na=False)), format="%Y-%m-%d", errors="coerce"
    )
    good = dates.notna().to_numpy()
    if not good.any():
        raise PipelineError(f"{path}: no rows with a date YYYY-MM-DD ({ticker})")
    first = int(good.argmax())
    bad = [i for i in range(first, len(raw)) if not good[i]]
    if bad:
        line = bad[0] + 2
        raise PipelineError(f"{path}, line {line}: date {raw['date'].iloc[bad[0]]!r} is not YYYY-MM-DD ({ticker})")
    raw, dates = raw.iloc[first:], dates.iloc[first:]
    out = pd.DataFrame({"date": dates.to_numpy()})
    for col in PRICE_COLUMNS:
        text = raw[col].str.strip()
        values = pd.to_numeric(text, errors="coerce")
        corrupt = values.isna() & text.notna() & (text != "") & (text.str.lower() != "nan")
        if corrupt.any():
            i = int(corrupt.to_numpy().argmax())
            raise PipelineError(
                f"{path}, line {first + i + 2}: column {col} has non-numeric value {text.iloc[i]!r} ({ticker})"
            )
        out[col] = values.to_numpy(dtype=float)
    return out


def _csv_file(folder: Path, ticker: str) -> Path:
    for name in (ticker, ticker.lstrip("^")):
        path = folder / f"{name}.csv"
        if path.exists():
            return path
    available = sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []
    raise PipelineError(f"ticker {ticker}: no file {folder / (ticker + '.csv')}; available in {folder}: {available}")


def from_csv_dir(folder: Path, tickers: list[str]) -> dict[str, pd.DataFrame]:
    """One file per ticker; `["*"]` reads every `<TICKER>.csv` in the folder (a universe)."""
    if not folder.is_dir():
        raise PipelineError(f"data.csv_dir: folder {folder} does not exist")
    if tickers == [ALL_TICKERS]:
        tickers = sorted(p.stem for p in folder.glob("*.csv"))
        if not tickers:
            raise PipelineError(f"data.tickers=['*']: no <TICKER>.csv file in {folder}")
    return {t: parse_price_csv(_csv_file(folder, t), t) for t in tickers}


# ---------------------------------------------------------------------------- yfinance
def normalize_yfinance(df: pd.DataFrame, ticker: str) -> pd.DataFrame:
    """Turn a yfinance download/history frame (flat or MultiIndex, tz-aware or not) into our layout."""
    if isinstance(df.columns, pd.MultiIndex):
        if "Ticker" in df.columns.names:
            level = df.columns.names.index("Ticker")
            symbols = list(df.columns.get_level_values(level).unique())
            if ticker not in symbols:
                raise PipelineError(f"yfinance: ticker {ticker} not in the response (got {symbols})")
            df = df.xs(ticker, axis=1, level="Ticker")
        else:
            df = df.droplevel(1, axis=1)
    df = df.rename(columns=_canonical)
    if "adj_close" not in df.columns:
        raise PipelineError(f"yfinance: no 'Adj Close' for {ticker} (call with auto_adjust=False)")
    idx = pd.DatetimeIndex(df.index)
    if idx.tz is not None:
        idx = idx.tz_convert("America/New_York").tz_localize(None)
    out = pd.DataFrame({c: df[c].to_numpy(dtype=float) for c in PRICE_COLUMNS})
    out.insert(0, "date", idx.normalize().astype("datetime64[ns]"))
    out = out.dropna(subset=["open", "high", "low", "close"])
    return out.drop_duplicates("date", keep="last").sort_values("date").reset_index(drop=True)


class _ToDebug(logging.Handler):
    """Re-emits another library's log records on our logger at DEBUG level."""

    def emit(self, record: logging.LogRecord) -> None:
        log.debug("yfinance: %s", record.getMessage())


@contextlib.contextmanager
def _quiet_yfinance() -> Iterator[None]:
    """yfinance reports a failed download with many log lines, prints and pandas warnings;
    send them all to DEBUG, so the user sees one clear message (ours)."""
    yf_log = logging.getLogger("yfinance")
    saved = yf_log.handlers[:], yf_log.propagate
    yf_log.handlers[:], yf_log.propagate = [_ToDebug()], False
    printed = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
        ):
            warnings.simplefilter("always")
            yield
    finally:
        yf_log.handlers[:], yf_log.propagate = saved
        for w in locals().get("caught") or []:
            log.debug("yfinance warning: %s", w.message)
        for line in printed.getvalue().splitlines():
            log.debug("yfinance printed: %s", line)


def from_yfinance(
    tickers: list[str], start: str | None, end: str | None, cfg: dict[str, Any]
) -> dict[str, pd.DataFrame]:
    import yfinance as yf  # slow import: only when this provider is chosen

    end_excl = (pd.Timestamp(end) + pd.Timedelta(days=1)).date().isoformat() if end else None
    out = {}
    for ticker in tickers:

        def call(t: str = ticker) -> pd.DataFrame:
            with _quiet_yfinance():
                df = yf.download(
                    t,
                    start=start,
                    end=end_excl,
                    auto_adjust=False,
                    multi_level_index=False,
                    progress=False,
                    threads=False,
                    timeout=cfg["timeout_s"],
                )
            if df is None or df.empty:
                raise _EmptyDownload("empty response")
            return df

        try:
            df = _with_retries(f"yfinance {ticker}", call, cfg["retries"], cfg["backoff_s"], (_EmptyDownload,))
        except _EmptyDownload:
            raise PipelineError(
                f"yfinance returned no data for ticker {ticker} after {cfg['retries'] + 1} tries "
                f"(unknown symbol, empty date range, or no network); {OFFLINE_HINT}"
            ) from None
        out[ticker] = normalize_yfinance(df, ticker)
    return out


class _EmptyDownload(Exception):
    """yfinance's way of failing: an empty frame."""


# ---------------------------------------------------------------------------- FMP
def fmp_key(env_file: Path = Path(".env")) -> str:
    """FMP_API_KEY from the environment, else from a git-ignored `.env` file."""
    key = os.environ.get("FMP_API_KEY", "").strip()
    if not key and env_file.exists():  # python-dotenv: comments, `export`, quotes; nothing enters os.environ
        key = (dotenv_values(env_file, encoding="utf-8").get("FMP_API_KEY") or "").strip()
    if not key:
        raise PipelineError(
            "data.source=fmp needs an API key: set FMP_API_KEY in the environment or in .env "
            "(copy .env.example); or use data.source=sample"
        )
    register_secret(key)
    return key


class _Retryable(Exception):
    """A failure worth retrying; its message says what happened (`ConnectionError`, `HTTP 503`)."""


def _fmp_get(
    session: requests.Session, path: str, query: dict[str, str], key: str, ticker: str, cfg: dict[str, Any]
) -> Any:
    """GET one FMP endpoint and return its JSON; every failure names the ticker, never the key."""

    def call() -> requests.Response:
        try:
            base = os.environ.get("FMP_BASE_URL", "https://financialmodelingprep.com")  # a proxy, or tests
            resp = session.get(f"{base}{path}", params={**query, "apikey": key}, timeout=cfg["timeout_s"])
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(type(exc).__name__) from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}")
        return resp

    try:
        resp = _with_retries(f"FMP {ticker}", call, cfg["retries"], cfg["backoff_s"], (_Retryable,))
    except _Retryable as exc:
        raise PipelineError(
            f"FMP request for ticker {ticker} failed after {cfg['retries'] + 1} tries ({exc}: network "
            f"unreachable or service down); {OFFLINE_HINT}"
        ) from None
    except requests.RequestException as exc:
        raise PipelineError(f"FMP request for ticker {ticker} failed: {redact(str(exc))}") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "Error Message" in body:
        raise PipelineError(
            f"FMP error for ticker {ticker} (HTTP {resp.status_code}): {redact(str(body['Error Message']))}"
        )
    if resp.status_code != 200 or body is None:
        raise PipelineError(f"FMP error for ticker {ticker} (HTTP {resp.status_code}): {redact(resp.text[:200])}")
    return body


def _fmp_records(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        return body.get("historical") or []
    return []


def parse_fmp(records: list[dict[str, Any]], adjusted: list[dict[str, Any]] | None, ticker: str) -> pd.DataFrame:
    """FMP records (newest first) to our layout; `adjusted` holds /dividend-adjusted records (stable API)."""
    if not records:
        raise PipelineError(f"FMP returned no data for ticker {ticker} (unknown symbol or empty date range)")
    df = pd.DataFrame.from_records(records)
    missing = [c for c in ("date", "open", "high", "low", "close", "volume") if c not in df.columns]
    if missing:
        raise PipelineError(f"FMP response for ticker {ticker} lacks field(s) {missing}")
    if adjusted is not None:
        adj = pd.DataFrame.from_records(adjusted or [{"date": None, "adjClose": None}])[["date", "adjClose"]]
        df = df.drop(columns=["adjClose"], errors="ignore").merge(adj, on="date", how="left")
    elif "adjClose" not in df.columns:
        raise PipelineError(f"FMP response for ticker {ticker} lacks field adjClose")
    out = pd.DataFrame({"date": pd.to_datetime(df["date"].astype(str).str[:10], format="%Y-%m-%d", errors="coerce")})
    for ours, theirs in zip(PRICE_COLUMNS, ["open", "high", "low", "close", "adjClose", "volume"], strict=True):
        out[ours] = pd.to_numeric(df[theirs], errors="coerce").to_numpy(dtype=float)
    if out["date"].isna().any():
        raise PipelineError(f"FMP response for ticker {ticker} has an unparsable date")
    return out.sort_values("date").reset_index(drop=True)


def from_fmp(tickers: list[str], start: str | None, end: str | None, cfg: dict[str, Any]) -> dict[str, pd.DataFrame]:
    key = fmp_key()
    span = {k: v for k, v in (("from", start), ("to", end)) if v}
    out = {}
    with requests.Session() as session:
        for ticker in tickers:
            if cfg["fmp_endpoint"] == "v3":
                body = _fmp_get(session, f"/api/v3/historical-price-full/{ticker}", span, key, ticker, cfg)
                out[ticker] = parse_fmp(_fmp_records(body), None, ticker)
            else:
                query = {"symbol": ticker, **span}
                full = _fmp_get(session, "/stable/historical-price-eod/full", query, key, ticker, cfg)
                adj = _fmp_get(session, "/stable/historical-price-eod/dividend-adjusted", query, key, ticker, cfg)
                out[ticker] = parse_fmp(_fmp_records(full), _fmp_records(adj), ticker)
    return out


# ---------------------------------------------------------------------------- interface
def download(cfg: dict[str, Any], sample_dir: Path) -> pd.DataFrame:
    """Fetch `cfg['tickers']` from `cfg['source']` into one long table, cut to [start, end]."""
    source, tickers, start, end = cfg["source"], cfg["tickers"], cfg["start"], cfg["end"]
    if source == "sample":
        frames = from_csv_dir(sample_dir, tickers)
    elif source == "csv":
        frames = from_csv_dir(Path(cfg["csv_dir"]), tickers)
    elif source == "yfinance":
        frames = from_yfinance(tickers, start, end, cfg)
    else:
        frames = from_fmp(tickers, start, end, cfg)
    return long_table(frames, cfg)


def fetch_bars(cfg: dict[str, Any], ticker: str, start: str | None) -> pd.DataFrame:
    """One ticker's bars from the network source `cfg['source']` (yfinance or fmp), from `start` (inclusive; None:
    all history) to `data.end`: what `stages.refresh` asks for when it wants only the bars after the stored ones."""
    if cfg["source"] == "yfinance":
        return from_yfinance([ticker], start, cfg["end"], cfg)[ticker]
    if cfg["source"] == "fmp":
        return from_fmp([ticker], start, cfg["end"], cfg)[ticker]
    raise PipelineError(f"data.source={cfg['source']} is not a network source (yfinance or fmp)")


def long_table(frames: dict[str, pd.DataFrame], cfg: dict[str, Any]) -> pd.DataFrame:
    """Per-ticker bars (in the order given) -> one long table `COLUMNS`, each ticker cut to [data.start, data.end];
    a ticker left without rows is an error naming it."""
    source, start, end = cfg["source"], cfg["start"], cfg["end"]
    parts = []
    for ticker, df in frames.items():
        keep = pd.Series(True, index=df.index)
        if start:
            keep &= df["date"] >= pd.Timestamp(start)
        if end:
            keep &= df["date"] <= pd.Timestamp(end)
        df = df[keep]
        if df.empty:
            raise PipelineError(f"ticker {ticker}: no rows between data.start={start} and data.end={end} ({source})")
        parts.append(df.assign(ticker=ticker))
    return pd.concat(parts, ignore_index=True)[COLUMNS]
