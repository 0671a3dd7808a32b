"""Every book a run judges, on one calendar: the strategy, buy-and-hold and momentum (the backtest's
equity.csv), each baseline model family run through the strategy's rule, costs and engine
(baseline_equity.csv) and, under the rank rule, the strategy's long-short book (long_short.csv);
and each book's performance section for metrics.json."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lib.evaluation.estimate import Section
from lib.evaluation.performance import active, performance, returns_of
from lib.tables import BASELINES, BOOK_LABELS, BOOKS, LONG_SHORT, STRATEGY, weight_column


def book_label(book: str) -> str:
    """What a reader calls a book: buy-and-hold, momentum baseline, long-short, `<family> (baseline model)`."""
    return {**BOOK_LABELS, LONG_SHORT: "long-short (top - bottom)"}.get(book, f"{book} (baseline model)")


@dataclass(frozen=True)
class Books:
    """`equity`: date, then each book's equity and `<book>_weight` columns (equity.csv's dates);
    `trades`: every book's trades (`book` names it); `names`: the books in report order."""

    equity: pd.DataFrame
    trades: pd.DataFrame
    names: list[str]

    @property
    def families(self) -> list[str]:
        """The baseline model families' books."""
        return [b for b in self.names if b not in (*BOOKS, LONG_SHORT)]

    @property
    def labels(self) -> dict[str, str]:
        """What a reader calls each book (report order)."""
        return {b: book_label(b) for b in self.names}

    def returns(self) -> dict[str, np.ndarray]:
        """Daily simple returns of every book, on the same dates."""
        return {b: returns_of(self.equity[b].to_numpy()) for b in self.names}


def books_of(frames: list[pd.DataFrame], trades: list[pd.DataFrame]) -> Books:
    """The backtest's equity tables (equity.csv first, then baseline_equity.csv and long_short.csv, each
    `date` plus book and weight columns on the same dates) and their trades, as one set of books.
    Raises ValueError when a table is not on equity.csv's dates."""
    first = frames[0]
    for f in frames[1:]:
        if not f["date"].equals(first["date"]):
            raise ValueError("the backtest's book tables are not on the same dates: rerun the backtest stage")
    equity = pd.concat([first, *(f.drop(columns="date") for f in frames[1:])], axis=1)
    names = [c for c in equity.columns if c != "date" and not c.endswith("_weight")]
    return Books(equity, pd.concat(trades, ignore_index=True), names)


def book_sections(books: Books, ppy: int, rf: float) -> dict[str, Section]:
    """The strategy's active return over buy-and-hold and momentum, then each book's return, risk
    and activity (`performance.performance`), in report order."""
    e, s = books.equity, books.equity[STRATEGY].to_numpy()
    out = {f"vs_{b}": active(s, e[b].to_numpy(), ppy) for b in BASELINES}
    for b in books.names:
        traded = books.trades[books.trades["book"] == b]
        out[b] = performance(e[b].to_numpy(), e[weight_column(b)].to_numpy(), traded, ppy, rf)
    return out
