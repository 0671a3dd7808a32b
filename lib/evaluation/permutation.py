"""The permutation null of the strategy's Sharpe ratio at scale: every shuffle of the predictions
through one batched pass of the vectorized engine (`lib.portfolio.batch`) instead of one backtest
per shuffle. The same shuffles as `lib.evaluation.resampling.permutation_test` (same seed, same
permutation of each ticker's predictions in time; under the rank rule, of each date's percentile ranks:
`null_predictions`) and the same Sharpe ratio per shuffle, to float rounding; configs the batched engine
cannot run (path-dependent controls) fall back to that loop."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from lib.evaluation.performance import returns_of, sharpe_of
from lib.evaluation.resampling import permutation_result, permutation_test, shuffled_values, ticker_groups
from lib.portfolio.backtest import portfolio_config, run_backtest
from lib.portfolio.batch import BatchedBacktest, batch_unsupported
from lib.portfolio.long_short import NOT_RANK, long_short_book
from lib.tables import LONG_SHORT, STRATEGY

log = logging.getLogger(__name__)
SETS_PER_PASS = 32  # shuffles drawn and run together (BatchedBacktest.equities chunks them further by size)


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
    "n", "dropped", "null", "reason"}) and the same shuffles, with every set batched. Falls back to
    one backtest per shuffle, with a logged line, when the config needs the event engine or a
    prediction is not finite (a shuffle would then move the calendar). `setup`: a BatchedBacktest of
    the same arguments and book, to reuse (its set-up is most of the cost at 402 tickers). `book`:
    STRATEGY, or LONG_SHORT for the long-short book's null (`lib.portfolio.long_short`; its
    observed value and p-value are None with the reason under the threshold rule)."""
    if n < 1:
        raise ValueError(f"permutation_sharpes: n must be >= 1, got {n}")
    predictions = null_predictions(predictions, bt)
    if book == LONG_SHORT and bt["rule"] != "rank":
        return permutation_result(None, [None] * n) | {"reason": NOT_RANK}
    why = batch_unsupported(portfolio_config(bt, horizon, ppy)) if book == STRATEGY else ""
    if not why and not np.isfinite(predictions["prediction"].to_numpy(float)).all():
        why = "some predictions are not finite"
    if why:
        log.info("evaluate: permutation null runs one backtest per shuffle (%d): %s", n, why)
        return permutation_test(lambda pr: _loop_sharpe(prices, pr, bt, horizon, ppy, rf, book), predictions, n, seed)
    setup = setup or BatchedBacktest(prices, predictions, bt, horizon, ppy, book)
    equity = setup.equities(_value_sets(predictions, n, seed))
    sharpes = [sharpe_of(returns_of(e), ppy, rf) for e in equity]
    return permutation_result(sharpes[0], sharpes[1:])


def null_predictions(predictions: pd.DataFrame, bt: dict[str, Any]) -> pd.DataFrame:
    """The predictions the null shuffles in time. Under the rank rule with equal weights a book depends on
    each date's order only, so each date's predictions become their percentile ranks (the same book, ties
    included) and a shuffle cannot carry one date's level or scale into another: a score fit to the per-date
    IC (train.loss ic) fixes neither, and shuffling its raw values ranks tickers by the dates they were drawn
    from, a null that trades like no model would. Otherwise (levels matter) the predictions as they are."""
    if bt["rule"] != "rank" or bt["rank_weighting"] != "equal":
        return predictions
    return predictions.assign(prediction=predictions.groupby("date")["prediction"].rank(pct=True))


def _value_sets(predictions: pd.DataFrame, n: int, seed: int) -> Iterator[np.ndarray]:
    """The real prediction column, then `n` shuffles of it drawn from `default_rng(seed)` exactly as
    `permutation_test` draws them, in blocks of SETS_PER_PASS rows."""
    rng = np.random.default_rng(seed)
    values = predictions["prediction"].to_numpy(float)
    groups = ticker_groups(predictions)
    block = [values]
    for _ in range(n):
        block.append(shuffled_values(values, groups, rng))
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
