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
DATE_COLUMNS = ["date", LABEL_END]  # parsed as dates wherever a table is read
STRING_COLUMNS = ["ticker"]  # text in a table; every other column is a date or a number

STRATEGY = "strategy"
BASELINES = ["benchmark", "momentum"]  # buy-and-hold, and long when the trailing return is positive
BOOKS = [STRATEGY, *BASELINES]
BOOK_LABELS = {STRATEGY: "strategy", "benchmark": "buy-and-hold", "momentum": "momentum baseline"}


def weight_column(book: str) -> str:
    """Column of `equity.csv` with the book's gross exposure as a fraction of its equity."""
    return f"{book}_weight"
