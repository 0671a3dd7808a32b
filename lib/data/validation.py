"""Data checks per ticker, vectorised over the long table, with a `fail` or `repair` policy and a full list
of findings (ticker, date, column, rule, detail, action)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lib.data.calendar import DEFAULT_CALENDAR, missing_sessions
from lib.errors import PipelineError
from lib.tables import ALL_TICKERS, COLUMNS, PRICE_COLUMNS

log = logging.getLogger(__name__)
PRICES = ["open", "high", "low", "close", "adj_close"]


@dataclass(frozen=True)
class Finding:
    ticker: str
    date: str | None
    column: str | None = field(default=None, kw_only=True)  # the column(s) the rule looked at, comma-separated
    rule: str
    detail: str
    # What was done: under `repair` the repair ("dropped row", "clamped high", "set to 0", ...) or
    # "kept"; under `fail` nothing is changed, so "none (policy fail; repair would ...)"; "fatal"
    # under either policy where no repair exists (an empty or missing ticker).
    action: str


# rule -> (action under `repair`, what repair would do, said under `fail`)
_ACTIONS = {
    "unsorted_dates": ("sorted", "sort the dates"),
    "duplicate_date": ("dropped earlier copy", "drop earlier copy"),
    "nan": ("dropped row", "drop row"),
    "non_positive_price": ("dropped row", "drop row"),
    "ohlc_high": ("clamped high", "clamp high"),
    "ohlc_low": ("clamped low", "clamp low"),
    "negative_volume": ("set to 0", "set volume to 0"),
    "kept": ("kept", "keep it"),
}
# The order of the findings of one ticker (the order in which the checks run).
_ORDER = [
    "unsorted_dates",
    "duplicate_date",
    "nan",
    "non_positive_price",
    "ohlc_high",
    "ohlc_low",
    "negative_volume",
    "gap",
    "one_day_move",
    "stale_close",
    "empty",
]


DROPPED = "ticker dropped"  # policy `drop`: the whole ticker leaves the run


def _action(key: str, policy: str) -> str:
    done, would = _ACTIONS[key]
    if policy == "drop" and key == "kept":
        return DROPPED
    return done if policy in ("repair", "drop") else f"none (policy {policy}; repair would {would})"


def check_schema(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Columns present, dates parse, prices numeric; returns the typed table."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PipelineError(f"{source}: missing column(s) {missing}")
    out = df[COLUMNS].copy()
    out["ticker"] = out["ticker"].astype(str)
    dates = pd.to_datetime(out["date"], errors="coerce")
    if dates.isna().any():
        i = int(dates.isna().to_numpy().argmax())
        raise PipelineError(
            f"{source}, row {i + 1}: date {df['date'].iloc[i]!r} does not parse ({out['ticker'].iloc[i]})"
        )
    out["date"] = dates
    for col in PRICE_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise PipelineError(
                f"{source}, row {i + 1}: {col} {out[col].iloc[i]!r} is not a number ({out['ticker'].iloc[i]})"
            )
        out[col] = values.astype(float)
    return out


def _days(dates: np.ndarray) -> np.ndarray:
    """datetime64 values -> 'YYYY-MM-DD' strings, for many rows at once."""
    return np.datetime_as_string(dates.astype("datetime64[D]"), unit="D")


def _columns(bad: np.ndarray, names: list[str]) -> list[str]:
    """For each row of a boolean (rows x columns) array: the names of its True columns, comma-separated."""
    return [",".join(n for n, b in zip(names, row, strict=True) if b) for row in bad]


class _Collector:
    """Findings of every ticker at once, put back in the per-ticker order of the checks at the end."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def add(
        self,
        step: str,
        rule: str,
        codes: np.ndarray,
        rows: np.ndarray,
        dates: np.ndarray | None,
        columns: list[str] | str | None,
        details: list[str] | str,
        action: str,
    ) -> None:
        """One finding per element of `codes` (ticker codes) and `rows` (positions in the sorted table);
        `step` places them among the checks (see _ORDER)."""
        n = len(codes)
        if n:
            self.parts.append(
                {
                    "rank": _ORDER.index(step),
                    "rule": rule,
                    "codes": codes,
                    "rows": rows,
                    "days": _days(dates) if dates is not None else [None] * n,
                    "columns": columns if isinstance(columns, list) else [columns] * n,
                    "details": details if isinstance(details, list) else [details] * n,
                    "action": action,
                }
            )

    def findings(self, tickers: Any) -> list[Finding]:
        if not self.parts:
            return []
        cat = {k: np.concatenate([p[k] for p in self.parts]) for k in ("codes", "rows")}
        rank = np.concatenate([np.full(len(p["codes"]), p["rank"]) for p in self.parts])
        flat = {k: [x for p in self.parts for x in p[k]] for k in ("days", "columns", "details")}
        rule = [p["rule"] for p in self.parts for _ in range(len(p["codes"]))]
        action = [p["action"] for p in self.parts for _ in range(len(p["codes"]))]
        return [
            Finding(
                tickers[cat["codes"][i]],
                None if flat["days"][i] is None else str(flat["days"][i]),
                column=flat["columns"][i],
                rule=rule[i],
                detail=flat["details"][i],
                action=action[i],
            )
            for i in np.lexsort((cat["rows"], rank, cat["codes"]))
        ]


@dataclass
class _Rows:
    """The rows being checked, sorted by ticker then date: the table, each row's ticker code and
    date, and its position in the sorted table (the position findings are ordered by)."""

    table: pd.DataFrame
    code: np.ndarray
    date: np.ndarray
    pos: np.ndarray

    def where(self, keep: np.ndarray) -> _Rows:
        return _Rows(self.table[keep].reset_index(drop=True), self.code[keep], self.date[keep], self.pos[keep])

    def first_of_ticker(self) -> np.ndarray:
        first = np.ones(len(self.table), dtype=bool)
        first[1:] = self.code[1:] != self.code[:-1]
        return first


def _add(
    found: _Collector,
    rule: str,
    rows: _Rows,
    bad: np.ndarray,
    columns: list[str] | str | None,
    details: list[str] | str,
    action: str,
    step: str | None = None,
) -> None:
    """One finding per row where `bad` (step: `rule` unless named)."""
    found.add(step or rule, rule, rows.code[bad], rows.pos[bad], rows.date[bad], columns, details, action)


def validate_prices(
    df: pd.DataFrame, cfg: dict[str, Any], tickers: list[str], calendar: str = DEFAULT_CALENDAR
) -> tuple[pd.DataFrame, list[Finding]]:
    """Run every check on every ticker at once (one pass over the long table, segment boundaries
    per ticker). Under `fail` any finding is fatal and its action says what `repair` would do;
    under `repair` only the unrepairable ones (an empty or missing ticker) are; `drop` repairs
    what `repair` repairs and drops every ticker with a finding it cannot repair (a gap, a big
    move, a stale run, no usable rows), so one broken ticker does not stop a universe. Returns the
    cleaned (repaired) table, sorted by ticker (in order of first appearance) then date, and the
    findings, per ticker in the order of the checks. Gaps count the sessions of exchange `calendar`
    (`data.calendar`) missing between two rows, so a holiday is no gap."""
    policy = cfg["policy"]
    unusable = DROPPED if policy == "drop" else "fatal"
    findings = _missing_tickers(df, tickers, unusable)
    codes, names = pd.factorize(df["ticker"], sort=False)  # order of first appearance, as groupby(sort=False)
    keep = codes >= 0
    if not keep.any():
        return df.iloc[:0][COLUMNS], findings
    found = _Collector()
    rows = _sorted_rows(df.loc[keep, COLUMNS] if not keep.all() else df[COLUMNS], codes[keep], found, policy)
    rows = _drop_unusable_rows(rows, found, policy)
    _repair_ohlc_bounds(rows, cfg["ohlc_tolerance"], found, policy)
    _repair_negative_volume(rows, found, policy)
    # Suspicious but not repairable: kept under `repair`, fatal under `fail`.
    first, kept = rows.first_of_ticker(), _action("kept", policy)
    _check_gaps(rows, first, cfg["max_gap_sessions"], calendar, found, kept)
    _check_one_day_moves(rows, first, cfg["max_move"], found, kept)
    _check_stale_closes(rows, first, cfg["max_stale_run"], found, kept)
    empty = np.setdiff1d(np.arange(len(names)), rows.code)
    found.add("empty", "empty", empty, np.zeros(len(empty), dtype=np.int64), None, None, "no usable rows", unusable)
    findings += found.findings(names)
    return _apply_drop_policy(rows.table[COLUMNS], findings, policy)


def _missing_tickers(df: pd.DataFrame, tickers: list[str], action: str) -> list[Finding]:
    present = set(df["ticker"].dropna().unique())
    return [
        Finding(t, None, "missing_ticker", "no rows for this ticker", action)
        for t in tickers
        if t not in present and t != ALL_TICKERS
    ]


def _sorted_rows(table: pd.DataFrame, codes: np.ndarray, found: _Collector, policy: str) -> _Rows:
    """Sort by ticker, then date (stable: equal dates keep their order, the last copy wins);
    a ticker whose dates go backwards is a finding."""
    dates = table["date"].to_numpy()
    by_ticker = np.argsort(codes, kind="stable")
    c, d = codes[by_ticker], dates[by_ticker]
    back = np.flatnonzero((c[1:] == c[:-1]) & (d[1:] < d[:-1]))
    unsorted = np.unique(c[1:][back])
    found.add(
        "unsorted_dates",
        "unsorted_dates",
        unsorted,
        np.zeros(len(unsorted), dtype=np.int64),
        None,
        None,
        "dates are not in ascending order",
        _action("unsorted_dates", policy),
    )
    order = np.lexsort((dates, codes)) if len(unsorted) else by_ticker
    return _Rows(table.take(order).reset_index(drop=True), codes[order], dates[order], np.arange(len(order)))


def _drop_unusable_rows(rows: _Rows, found: _Collector, policy: str) -> _Rows:
    """Duplicate dates (the earlier copy), NaN prices or volume, non-positive prices: the rows left."""
    code, date = rows.code, rows.date
    dup = np.zeros(len(rows.table), dtype=bool)
    dup[:-1] = (code[:-1] == code[1:]) & (date[:-1] == date[1:])
    _add(found, "duplicate_date", rows, dup, None, "date appears more than once", _action("duplicate_date", policy))
    values = rows.table[PRICE_COLUMNS].to_numpy(dtype=float)
    isnan = np.isnan(values)
    nan = isnan.any(axis=1) & ~dup
    cols = _columns(isnan[nan], PRICE_COLUMNS)
    _add(found, "nan", rows, nan, cols, [f"missing {c.split(',')}" for c in cols], _action("nan", policy))
    nonpos_cells = values[:, : len(PRICES)] <= 0
    nonpos = nonpos_cells.any(axis=1) & ~nan & ~dup
    _add(
        found,
        "non_positive_price",
        rows,
        nonpos,
        _columns(nonpos_cells[nonpos], PRICES),
        "a price is <= 0",
        _action("non_positive_price", policy),
    )
    return rows.where(~(dup | nan | nonpos))


def _repair_ohlc_bounds(rows: _Rows, tol: float, found: _Collector, policy: str) -> None:
    """high below max(open, close) or low above min(open, close), beyond `tol`: clamped to it."""
    s = rows.table
    high, low = s["high"].to_numpy(), s["low"].to_numpy()
    top = np.maximum(s["open"].to_numpy(), s["close"].to_numpy())
    bottom = np.minimum(s["open"].to_numpy(), s["close"].to_numpy())
    high_bad = high < top * (1 - tol)
    low_bad = low > bottom * (1 + tol)
    _add(
        found,
        "ohlc_bounds",
        rows,
        high_bad,
        "high",
        [f"high {h} < max(open, close) {t}" for h, t in zip(high[high_bad], top[high_bad], strict=True)],
        _action("ohlc_high", policy),
        step="ohlc_high",
    )
    _add(
        found,
        "ohlc_bounds",
        rows,
        low_bad,
        "low",
        [f"low {lo} > min(open, close) {b}" for lo, b in zip(low[low_bad], bottom[low_bad], strict=True)],
        _action("ohlc_low", policy),
        step="ohlc_low",
    )
    s["high"] = np.where(high_bad, top, high)
    s["low"] = np.where(low_bad, bottom, low)


def _repair_negative_volume(rows: _Rows, found: _Collector, policy: str) -> None:
    volume = rows.table["volume"].to_numpy()
    neg_vol = volume < 0
    _add(
        found,
        "negative_volume",
        rows,
        neg_vol,
        "volume",
        [f"volume {v}" for v in volume[neg_vol]],
        _action("negative_volume", policy),
    )
    rows.table["volume"] = np.where(neg_vol, 0.0, volume)


def _check_gaps(rows: _Rows, first: np.ndarray, max_gap: int, calendar: str, found: _Collector, kept: str) -> None:
    """More than `max_gap` sessions of the exchange `calendar` missing between two rows of a ticker."""
    missing = np.zeros(len(rows.table), dtype=np.int64)
    if len(missing) > 1:
        missing[1:] = missing_sessions(calendar, rows.date[:-1], rows.date[1:])
    gap = ~first & (missing > max_gap)
    details = [f"{m} {calendar} sessions missing before this date" for m in missing[gap]]
    _add(found, "gap", rows, gap, None, details, kept)


def _check_one_day_moves(rows: _Rows, first: np.ndarray, max_move: float, found: _Collector, kept: str) -> None:
    """|adj_close / previous adj_close - 1| above `max_move` (an unadjusted split?)."""
    adj = rows.table["adj_close"].to_numpy()
    prev = np.full_like(adj, np.nan)
    prev[1:] = adj[:-1]
    prev[first] = np.nan
    move = np.abs(adj / prev - 1)
    big = np.nan_to_num(move) > max_move
    _add(
        found,
        "one_day_move",
        rows,
        big,
        "adj_close",
        [f"|move| {m:.3f} > validate.max_move {max_move} (unadjusted split?)" for m in move[big]],
        kept,
    )


def _check_stale_closes(rows: _Rows, first: np.ndarray, max_run: int, found: _Collector, kept: str) -> None:
    """A run of at least `max_run` identical closes, reported at its last row."""
    close = rows.table["close"].to_numpy()
    same = np.zeros(len(rows.table), dtype=bool)
    same[1:] = close[1:] == close[:-1]
    same &= ~first
    run_id = np.cumsum(~same)
    run_len = np.bincount(run_id)[run_id]
    run_end = np.ones(len(rows.table), dtype=bool)
    run_end[:-1] = run_id[1:] != run_id[:-1]
    stale = run_end & (run_len >= max_run)
    _add(
        found, "stale_close", rows, stale, "close", [f"{r} identical closes ending here" for r in run_len[stale]], kept
    )


def _apply_drop_policy(clean: pd.DataFrame, findings: list[Finding], policy: str) -> tuple[pd.DataFrame, list[Finding]]:
    """Under `drop`: every ticker with a finding marked DROPPED leaves the table (none left: fatal)."""
    if policy != "drop":
        return clean, findings
    dropped = sorted({f.ticker for f in findings if f.action == DROPPED})
    clean = clean[~clean["ticker"].isin(dropped)]
    if dropped:
        log.warning("validate.policy=drop: %d ticker(s) dropped: %s", len(dropped), ", ".join(dropped))
    if clean.empty:
        findings.append(Finding("*", None, "no_ticker_left", "every ticker was dropped", "fatal"))
    return clean, findings


def fatal_findings(findings: list[Finding], policy: str) -> list[Finding]:
    return [f for f in findings if policy == "fail" or f.action == "fatal"]


def report(df_in: pd.DataFrame, clean: pd.DataFrame, findings: list[Finding], policy: str) -> dict[str, Any]:
    fatal = fatal_findings(findings, policy)
    dates = clean.groupby("ticker", sort=False)["date"]
    rows_out, first, last = dates.size(), dates.min(), dates.max()
    rows_in = df_in["ticker"].value_counts().reindex(rows_out.index, fill_value=0)
    per_ticker = {
        t: {"rows_in": int(n_in), "rows_out": int(n_out), "first": str(a), "last": str(b)}
        for t, n_in, n_out, a, b in zip(
            rows_out.index,
            rows_in.to_numpy(),
            rows_out.to_numpy(),
            _days(first.to_numpy()),
            _days(last.to_numpy()),
            strict=True,
        )
    }
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.rule] = counts.get(f.rule, 0) + 1
    return {
        "policy": policy,
        "passed": not fatal,
        "n_findings": len(findings),
        "by_rule": counts,
        "tickers": per_ticker,
        "findings": [asdict(f) for f in findings],
    }


def failure_message(fatal: list[Finding], report_path: str) -> str:
    """One line naming the first fatal finding's ticker, date and column (where it has them) and rule."""
    first = fatal[0]
    where = " ".join(str(x) for x in (first.ticker, first.date, first.column) if x)
    more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
    return (
        f"validation failed: {where} rule={first.rule}: {first.detail}{more}; all findings in {report_path}; "
        "validate.policy=repair fixes what can be fixed"
    )
