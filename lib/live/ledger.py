"""The ledger of live decisions, `track/ledger.csv`: one row per ticker per weekly entry, hash-chained.

Layout (LEDGER): `entry` (1, 2, ...), the decision (`as_of`, `executes`, `scheduled_rebalance`),
the model that made it (`model_sha256` of models/final.pt, `params_hash` of the params it records,
`data_hash` of the features it was trained on, `cutoff`, `retrain`), `drift_alarm`, then per
ticker its `prediction` and the row of reports/orders.csv (ORDERS_COPIED), then `prev_hash` and
`entry_hash`. entry_hash = sha256(prev_hash + "\\n" + the entry's CSV lines without their last
field, joined by "\\n"); the first entry's prev_hash is 64 zeros. So an entry edited by hand, or
any entry before it, breaks the chain, and `read_ledger` stops naming the first broken entry. (Anyone can
recompute sha256: what anchors the chain against a rewrite of the whole file is git's history of it.)

Entries are never rewritten: `append_entry` writes the whole file to a temporary file and renames
it. The same as-of date twice is idempotent when the entry is identical (nothing written) and
refused when it differs (a decision, once recorded, stands).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lib.errors import PipelineError
from lib.io import write_text
from lib.portfolio.backtest import ORDERS

GENESIS = "0" * 64
MODEL = ["model_sha256", "params_hash", "data_hash", "cutoff", "retrain"]
# the order row of reports/orders.csv as the ledger keeps it (the ticker is the row's key; weight_now follows from it)
ORDERS_COPIED = [c for c in ORDERS if c not in ("ticker", "weight_now")]
LEDGER = [
    "entry",
    "as_of",
    "executes",
    "scheduled_rebalance",
    *MODEL,
    "drift_alarm",
    "ticker",
    "prediction",
    *ORDERS_COPIED,
    "prev_hash",
    "entry_hash",
]
_TEXT = {"as_of": str, "executes": str, "ticker": str, "side": str, "note": str, "cutoff": str, "retrain": str}


@dataclass(frozen=True)
class Entry:
    """One decision before it is chained: its header fields and one row per ticker."""

    as_of: str
    executes: str
    scheduled_rebalance: bool
    model: dict[str, Any]  # MODEL keys
    drift_alarm: bool
    rows: pd.DataFrame  # ticker, prediction, ORDERS_COPIED


def _body(lines: list[str]) -> list[str]:
    return [line.rsplit(",", 1)[0] for line in lines]


def entry_hash(prev_hash: str, lines: list[str]) -> str:
    """sha256 of the previous entry's hash and this entry's CSV lines without their last field."""
    return hashlib.sha256("\n".join([prev_hash, *_body(lines)]).encode()).hexdigest()


def _fields(line: str) -> list[str]:
    return next(csv.reader([line]))


def _chain(path: Path, text: str) -> list[tuple[int, str, str, list[str]]]:
    """(entry id, as_of, hash, lines) of every entry, the chain checked; one line on the first break."""
    lines = text.splitlines()
    if not lines or _fields(lines[0]) != LEDGER:
        raise PipelineError(f"{path}: not a ledger (the header must be {','.join(LEDGER)}); restore it from git")
    groups: list[tuple[int, str, str, list[str]]] = []
    for n, line in enumerate(lines[1:], start=2):
        f = _fields(line)
        if len(f) != len(LEDGER) or not f[0].isdigit():
            raise PipelineError(f"{path}, line {n}: not a ledger row (edited by hand?); restore it from git")
        if not groups or int(f[0]) != groups[-1][0]:
            groups.append((int(f[0]), f[1], f[-1], []))
        groups[-1][3].append(line)
    prev = GENESIS
    for k, (eid, as_of, digest, group) in enumerate(groups, start=1):
        ok = eid == k and all(_fields(x)[-2] == prev and _fields(x)[-1] == digest for x in group)
        if not ok or entry_hash(prev, group) != digest:
            raise PipelineError(
                f"{path}: entry {eid} (as of {as_of}) was changed after it was recorded (its hash chain breaks); "
                "restore the ledger from git (git checkout -- track/ledger.csv)"
            )
        prev = digest
    return groups


def read_ledger(path: str | Path) -> pd.DataFrame:
    """The ledger's rows (LEDGER columns), the hash chain verified; an empty table when there is no file."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=LEDGER)
    text = path.read_text(encoding="utf-8")
    _chain(path, text)
    df = pd.read_csv(io.StringIO(text), dtype=_TEXT, keep_default_na=False, na_values={"prediction": [""]})
    return df.replace({"cutoff": {"": None}})


def _entry_lines(entry: Entry, eid: int, prev: str) -> list[str]:
    rows = entry.rows.sort_values("ticker", kind="stable")
    df = pd.DataFrame(
        {
            "entry": eid,
            "as_of": entry.as_of,
            "executes": entry.executes,
            "scheduled_rebalance": bool(entry.scheduled_rebalance),
            **{k: ("" if entry.model[k] is None else entry.model[k]) for k in MODEL},
            "drift_alarm": bool(entry.drift_alarm),
            "ticker": rows["ticker"].astype(str).to_numpy(),
            "prediction": rows["prediction"].to_numpy(float),
            **{c: rows[c].to_numpy() for c in ORDERS_COPIED},
            "prev_hash": prev,
            "entry_hash": "",
        }
    )[LEDGER]
    df["note"] = df["note"].fillna("").astype(str)
    lines = df.to_csv(index=False, header=False, lineterminator="\n").splitlines()
    digest = entry_hash(prev, lines)
    return [f"{x},{digest}" for x in _body(lines)]


def append_entry(path: str | Path, entry: Entry) -> bool:
    """Chain `entry` onto the ledger and write it atomically; True when written, False when the same
    as-of date is already recorded with identical content. A different entry for a recorded as-of
    date, or a broken chain: one line, nothing written."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ",".join(LEDGER) + "\n"
    groups = _chain(path, text)
    prev = groups[-1][2] if groups else GENESIS
    same = [g for g in groups if g[1] == entry.as_of]
    if same:
        eid, _, _, old = same[0]
        before = groups[eid - 2][2] if eid > 1 else GENESIS
        if _body(_entry_lines(entry, eid, before)) == _body(old):
            return False
        raise PipelineError(
            f"{path}: entry {eid} already records the decision as of {entry.as_of}, with other content; "
            "a recorded decision is never rewritten (run once per week, after the week's last session)"
        )
    if groups and entry.as_of < groups[-1][1]:
        raise PipelineError(
            f"{path}: as-of date {entry.as_of} is before the last entry's ({groups[-1][1]}); the ledger only grows"
        )
    lines = _entry_lines(entry, len(groups) + 1, prev)
    write_text(text.rstrip("\n") + "\n" + "\n".join(lines) + "\n", path)
    return True


def entries(ledger: pd.DataFrame) -> pd.DataFrame:
    """One row per entry: entry, as_of, executes, the model fields and drift_alarm (first row of each)."""
    keep = ["entry", "as_of", "executes", "scheduled_rebalance", *MODEL, "drift_alarm"]
    return ledger.drop_duplicates("entry")[keep].reset_index(drop=True)
