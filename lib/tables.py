"""Names shared by the stages, the library and the plots: each defined once, here.

(`dvc.yaml` names the plotted columns too;
`tests/test_dvc_yaml.py::test_plot_columns_are_the_names_the_code_writes` checks that it agrees.)
"""

from __future__ import annotations

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
COLUMNS = ["date", "ticker", *PRICE_COLUMNS]  # the long price table, raw and clean
ALL_TICKERS = "*"  # data.tickers: ["*"] = every <TICKER>.csv in data.csv_dir
KEYS = ["date", "ticker"]
LABEL = "label"  # forward log return over `features.horizon` of the ticker's own sessions
LABEL_END = "label_end"  # the session whose close realises the label (López de Prado's t1)
PREDICTIONS = ["date", "ticker", "fold", "prediction", LABEL]
# data.membership set: 1 where the ticker is a member on the row's date, else 0 (predictions.parquet, and each
# signal of signal.json as true/false); a (date, ticker) without a row is not a member. Absent: every ticker is.
IN_UNIVERSE = "in_universe"
BOOK = "book"  # the book a row belongs to (trades.csv; baseline_predictions.parquet: the baseline model's family)
BASELINE_PREDICTIONS = ["date", "ticker", "fold", BOOK, "prediction", LABEL]  # evaluate.baseline_models, long
DATE_COLUMNS = ["date", LABEL_END]  # parsed as dates wherever a table is read
STRING_COLUMNS = ["ticker", BOOK]  # text in a table; every other column is a date or a number

STRATEGY = "strategy"
BASELINES = ["benchmark", "momentum"]  # buy-and-hold, and long when the trailing return is positive
BOOKS = [STRATEGY, *BASELINES]
BOOK_LABELS = {STRATEGY: "strategy", "benchmark": "buy-and-hold", "momentum": "momentum baseline"}
LONG_SHORT = "long_short"  # rank rule: long the top, short the bottom names, dollar-neutral (not in BOOKS)


def baseline_book(family: str) -> str:
    """The book of a baseline model family (evaluate.baseline_models): its column in baseline_equity.csv, its
    `book` in baseline_predictions.parquet and baseline_trades.csv. The family's own name (`ridge`, `gbm`)."""
    return family


def weight_column(book: str) -> str:
    """Column of `equity.csv` with the book's gross exposure as a fraction of its equity."""
    return f"{book}_weight"
