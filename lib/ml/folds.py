"""Walk-forward folds on the session calendar, with purge and embargo before each test window."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from lib.errors import PipelineError

# Floors on a fold's split, not params keys: they decide which configs run at all and, through
# n_val, every fold's fit/val boundary. No recorded source: sanity floors set with the first
# walk-forward code (commit d85a19c), kept as they are.
# A fold must keep at least 40 fit sessions (about two trading months) after the val tail and the
# purge; fewer is an error that says how to get more.
MIN_FIT_SESSIONS = 40
# The early-stopping (val) tail is walk_forward.val_fraction of the window but never under 5
# sessions (one trading week), so that short windows still early-stop on more than a day or two.
MIN_VAL_SESSIONS = 5


@dataclass(frozen=True)
class Fold:
    """Date bounds (inclusive, ISO strings). `fit` trains, `val` early-stops, `test` is out of sample.

    Anchor dates are bounded by the calendar; labels by their end date: a fit label must be
    realised before `val_start`, a val (early-stopping) label before `labels_before` (the test start,
    less the embargo). name is `fold_00`, ... or `final` (all labelled data, no test window)."""

    name: str
    fit_start: str
    fit_end: str
    val_start: str
    val_end: str
    test_start: str | None = None
    test_end: str | None = None
    labels_before: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(ts: pd.Timestamp) -> str:
    return ts.date().isoformat()


def _train_val(
    name: str, sessions: pd.DatetimeIndex, last: int, cfg: dict[str, Any], test: tuple[str, str, str] | None
) -> Fold:
    """Split sessions [first, last] into fit and a purged early-stopping (val) tail."""
    first = max(0, last - cfg["train_sessions"] + 1) if cfg["window"] == "rolling" else 0
    n_val = max(MIN_VAL_SESSIONS, round(cfg["val_fraction"] * (last - first + 1)))
    val_start = last - n_val + 1
    fit_end = val_start - 1 - cfg["purge"]
    if fit_end - first + 1 < MIN_FIT_SESSIONS:
        raise PipelineError(
            f"walk_forward: {name} has {max(0, fit_end - first + 1)} training sessions (minimum {MIN_FIT_SESSIONS}) "
            f"before {test[0] if test else 'the end'}; lower walk_forward.folds or walk_forward.test_sessions, "
            "or start the data earlier (data.start)"
        )
    return Fold(
        name,
        _iso(sessions[first]),
        _iso(sessions[fit_end]),
        _iso(sessions[val_start]),
        _iso(sessions[last]),
        *(test or (None, None, None)),
    )


def make_folds(sessions: pd.DatetimeIndex, labelled_end: pd.Timestamp, cfg: dict[str, Any]) -> list[Fold]:
    """Test windows of `test_sessions` each, in sequence, ending at the last session.

    Training anchor dates for a fold end `purge + embargo` sessions before its test start, and
    every training label must be realised before the embargo that precedes the test start,
    counted in each ticker's own sessions (a ticker with holes looks further ahead).
    The last entry is the `final` model's fold: every labelled session, no test window.
    """
    n, k, size = len(sessions), cfg["folds"], cfg["test_sessions"]
    if k * size >= n:
        raise PipelineError(
            f"walk_forward: folds x test_sessions = {k * size} sessions, but the features span only {n}; "
            "lower walk_forward.folds or walk_forward.test_sessions"
        )
    folds = []
    for i in range(k):
        start = n - (k - i) * size
        test = (_iso(sessions[start]), _iso(sessions[start + size - 1]), _iso(sessions[start - cfg["embargo"]]))
        folds.append(_train_val(f"fold_{i:02d}", sessions, start - 1 - cfg["purge"] - cfg["embargo"], cfg, test))
    last_labelled = int(sessions.searchsorted(labelled_end, side="right")) - 1
    folds.append(_train_val("final", sessions, last_labelled, cfg, None))
    return folds
