"""The permutation null of the strategy's Sharpe ratio: its draws (`shuffle_in_time`: each ticker's
predictions permuted in time; `relabel_tickers`: each ticker's whole series given to another ticker), the
loop (`permutation_test`, a statistic per draw) and the same draws at scale (`permutation_sharpes`: every
draw through one batched pass of the vectorized engine, `lib.portfolio.batch`, the same Sharpe ratio per
draw as the loop to float rounding; configs the batched engine cannot run, path-dependent controls, fall
back to the loop, `null_test`). Which draw: `relabels`; under the rank rule the null reads each date's
percentile ranks (`null_predictions`).

Why relabel under the rank rule: a cross-sectional score loads on trailing returns (with no signal lstm's
did, rank correlation -0.2 to +0.5 with the 5-day return), and a shuffle in time puts a score computed from
returns after a week into that week's book: the null then earns or loses what the score knew, and lstm's
null fired 3 times in 10 with no signal (stages.calibrate). Moving each ticker's whole series to another
ticker keeps the book's turnover and never meets a score with its own ticker's returns."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from lib.evaluation.performance import returns_of, sharpe_of
from lib.evaluation.resampling import finite_or_none
from lib.portfolio.backtest import portfolio_config, run_backtest
from lib.portfolio.batch import BatchedBacktest, batch_unsupported
from lib.portfolio.long_short import NOT_RANK, long_short_book
from lib.tables import LONG_SHORT, STRATEGY

log = logging.getLogger(__name__)
SETS_PER_PASS = 32  # shuffles drawn and run together (BatchedBacktest.equities chunks them further by size)


# ------------------------------------------------------------------ the draws and the loop


def shuffle_in_time(predictions: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The predictions with each ticker's values permuted across its own dates: the same
    distribution of signals per ticker (so exposure and turnover stay comparable), its timing
    destroyed. Rows keep their dates, tickers, folds and labels."""
    out = predictions.copy()
    out["prediction"] = shuffled_values(out["prediction"].to_numpy(float), ticker_groups(out), rng)
    return out


def ticker_groups(predictions: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each ticker's predictions, tickers in sorted order (the order of the draws)."""
    return list(predictions.groupby("ticker", sort=True).indices.values())


def shuffled_values(values: np.ndarray, groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """`values` with each group's entries permuted (one `rng.permutation` per group, in order):
    the draws of `shuffle_in_time`, without the table."""
    out = values.copy()
    for idx in groups:
        out[idx] = values[idx][rng.permutation(len(idx))]
    return out


MID_RANK = 0.5  # the middle of a date's percentile ranks: the score of a relabelled row with none


def ticker_cells(predictions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Each row's date code and ticker code (tickers in sorted order), and the numbers of dates and tickers."""
    dates, d = np.unique(predictions["date"].to_numpy(), return_inverse=True)
    tickers, k = np.unique(predictions["ticker"].to_numpy(), return_inverse=True)
    return d, k, len(dates), len(tickers)


def relabelled_values(
    values: np.ndarray, cells: tuple[np.ndarray, np.ndarray, int, int], rng: np.random.Generator, fill: float
) -> np.ndarray:
    """`values` with each ticker's whole series given to another ticker (one `rng.permutation` of the
    tickers, the same on every date): row (t, j) gets the value of (t, sigma(j)), or `fill` where that
    ticker has none on t. The draws of `relabel_tickers`, without the table."""
    d, k, n_dates, n_tickers = cells
    grid = np.full((n_dates, n_tickers), np.nan)
    grid[d, k] = values
    out = grid[d, rng.permutation(n_tickers)[k]]
    return np.where(np.isnan(out), fill, out)


def relabel_tickers(predictions: pd.DataFrame, rng: np.random.Generator, fill: float = MID_RANK) -> pd.DataFrame:
    """The predictions with each ticker's series of scores moved to another ticker, the same move on every
    date (`relabelled_values`): the book keeps its turnover and its dynamics, and no score meets the returns
    of the ticker it was computed from. `fill`: the score of a row whose new ticker has none that date.
    Rows keep their dates, tickers, folds and labels."""
    out = predictions.copy()
    out["prediction"] = relabelled_values(out["prediction"].to_numpy(float), ticker_cells(out), rng, fill)
    return out


def permutation_test(
    statistic: Callable[[pd.DataFrame], float | None],
    predictions: pd.DataFrame,
    n: int,
    seed: int,
    draw: Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame] = shuffle_in_time,
) -> dict:
    """Permutation null of skill: `statistic` (e.g. the strategy's Sharpe through the real backtest and
    costs) on the real predictions and on `n` copies drawn by `draw` (`shuffle_in_time`, within each
    ticker, or `relabel_tickers`; all from `default_rng(seed)`). p = (1 + #{null >= observed}) /
    (1 + kept), the add-one estimator that is never 0 (Phipson & Smyth 2010). Draws where the
    statistic is undefined are dropped and counted. Returns {"observed", "pvalue", "n", "dropped",
    "null" (the kept values in draw order), "reason"}."""
    if n < 1:
        raise ValueError(f"permutation_test: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    observed = statistic(predictions)
    return permutation_result(observed, [statistic(draw(predictions, rng)) for _ in range(n)])


def permutation_result(observed: float | None, null: list[float | None]) -> dict:
    """`permutation_test`'s dict from the statistic on the real predictions and on each shuffle."""
    observed, n = finite_or_none(observed), len(null)
    kept = np.array([v for v in map(finite_or_none, null) if v is not None], dtype=float)
    out: dict = {
        "observed": observed,
        "pvalue": None,
        "n": int(n),
        "dropped": int(n - kept.size),
        "null": [float(v) for v in kept],
        "reason": "",
    }
    if observed is None:
        out["reason"] = "statistic undefined on the real predictions"
    elif not kept.size:
        out["reason"] = "statistic undefined on every shuffle"
    else:
        out["pvalue"] = float((1 + np.sum(kept >= observed)) / (1 + kept.size))
    return out


# ------------------------------------------------------------------ batched


def permutation_sharpes(
    prices: pd.DataFrame,
    predictions: pd.DataFrame,
    bt: dict[str, Any],
    horizon: int,
    ppy: int,
    rf: float,
    n: int,
    seed: int,
    setup: BatchedBacktest | None = None,
    book: str = STRATEGY,
) -> dict:
    """`permutation_test(strategy_sharpe, predictions, n, seed)` with strategy_sharpe = the annualised
    Sharpe ratio (`sharpe_of`, excess of `rf`) of the strategy's equity of `run_backtest(prices,
    predictions, bt, horizon, ppy)` over the reported window: the same dict ({"observed", "pvalue",
    "n", "dropped", "null", "reason"}) and the same draws (`relabels`), with every set batched. Falls back to
    one backtest per shuffle, with a logged line, when the config needs the event engine or a
    prediction is not finite (a shuffle would then move the calendar). `setup`: a BatchedBacktest of
    the same arguments and book, to reuse (its set-up is most of the cost at 402 tickers). `book`:
    STRATEGY, or LONG_SHORT for the long-short book's null (`lib.portfolio.long_short`; its
    observed value and p-value are None with the reason under the threshold rule)."""
    if n < 1:
        raise ValueError(f"permutation_sharpes: n must be >= 1, got {n}")
    if book == LONG_SHORT and bt["rule"] != "rank":
        return permutation_result(None, [None] * n) | {"reason": NOT_RANK}
    why = batch_unsupported(portfolio_config(bt, horizon, ppy)) if book == STRATEGY else ""
    if not why and not np.isfinite(predictions["prediction"].to_numpy(float)).all():
        why = "some predictions are not finite"
    if why:
        log.info("evaluate: permutation null runs one backtest per shuffle (%d): %s", n, why)
        return null_test(lambda pr: _loop_sharpe(prices, pr, bt, horizon, ppy, rf, book), predictions, bt, n, seed)
    values = null_predictions(predictions, bt)
    setup = setup or BatchedBacktest(prices, values, bt, horizon, ppy, book)
    equity = setup.equities(_value_sets(values, n, seed, relabels(bt)))
    sharpes = [sharpe_of(returns_of(e), ppy, rf) for e in equity]
    return permutation_result(sharpes[0], sharpes[1:])


def relabels(bt: dict[str, Any]) -> bool:
    """The null's draw: under the rank rule with equal weights, tickers relabelled (`relabel_tickers`, on
    each date's percentile ranks); otherwise each ticker's predictions shuffled in time (`shuffle_in_time`)."""
    return bt["rule"] == "rank" and bt["rank_weighting"] == "equal"


def null_test(
    statistic: Callable[[pd.DataFrame], float | None], predictions: pd.DataFrame, bt: dict[str, Any], n: int, seed: int
) -> dict:
    """The null of a book of rule `bt` one statistic per draw: `permutation_test` on `null_predictions`
    with the draw `relabels` picks. `permutation_sharpes` batches exactly these draws."""
    draw = relabel_tickers if relabels(bt) else shuffle_in_time
    return permutation_test(statistic, null_predictions(predictions, bt), n, seed, draw)


def null_predictions(predictions: pd.DataFrame, bt: dict[str, Any]) -> pd.DataFrame:
    """The predictions the null shuffles in time. Under the rank rule with equal weights a book depends on
    each date's order only, so each date's predictions become their percentile ranks (the same book, ties
    included) and a shuffle cannot carry one date's level or scale into another: a score fit to the per-date
    IC (train.loss ic) fixes neither, and shuffling its raw values ranks tickers by the dates they were drawn
    from, a null that trades like no model would. Otherwise (levels matter) the predictions as they are."""
    if not relabels(bt):
        return predictions
    return predictions.assign(prediction=predictions.groupby("date")["prediction"].rank(pct=True))


def _value_sets(predictions: pd.DataFrame, n: int, seed: int, relabel: bool = False) -> Iterator[np.ndarray]:
    """The real prediction column, then `n` draws of it from `default_rng(seed)` exactly as
    `permutation_test` draws them (`relabel`: `relabel_tickers`, else `shuffle_in_time`), in blocks of
    SETS_PER_PASS rows."""
    rng = np.random.default_rng(seed)
    values = predictions["prediction"].to_numpy(float)
    groups, cells = (None, ticker_cells(predictions)) if relabel else (ticker_groups(predictions), None)
    block = [values]
    for _ in range(n):
        block.append(
            relabelled_values(values, cells, rng, MID_RANK) if relabel else shuffled_values(values, groups, rng)
        )
        if len(block) == SETS_PER_PASS:
            yield np.stack(block)
            block = []
    if block:
        yield np.stack(block)


def _loop_sharpe(
    prices: pd.DataFrame, pr: pd.DataFrame, bt: dict, horizon: int, ppy: int, rf: float, book: str = STRATEGY
) -> float | None:
    quiet = logging.getLogger("lib.portfolio.delisting")  # the backtest stage logged its delistings once
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        if book == LONG_SHORT:
            equity = long_short_book(prices, pr, bt, horizon, ppy)[0].equity[LONG_SHORT].to_numpy()
        else:
            equity = run_backtest(prices, pr, bt, horizon, ppy).equity[STRATEGY].to_numpy()
    finally:
        quiet.setLevel(level)
    return sharpe_of(returns_of(equity), ppy, rf)
