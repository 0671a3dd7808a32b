"""Sizing POLICY, vectorised over dates x tickers: predictions and prices -> target weights.

Every function takes (T, N) arrays (rows = sessions, columns = tickers) and uses, on row t,
only data known at the close of t (trailing windows include t, never t + 1). A target weight
is a fraction of the whole portfolio's equity; NaN means "no order for this ticker on this
row" (the position is held), 0 means flat. The pieces compose in this order
(`lib.portfolio.targets.target_book`): rule -> filters -> sizing -> limits.

Nothing here depends on the portfolio's path (fills, stops, drawdown): that part of the
policy runs inside the event engine (`lib.portfolio.event.run_event`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

# ----------------------------------------------------------------------------- prices


def alive(close: np.ndarray) -> np.ndarray:
    """True from a ticker's first price to its last one (gaps inside count as alive). The end of
    a ticker's prices is taken as known, like an announced delisting: the engines close such a
    position at its last price on the first session without one."""
    valid = np.isfinite(np.asarray(close, float))
    started = np.logical_or.accumulate(valid, axis=0)
    ended = np.logical_or.accumulate(valid[::-1], axis=0)[::-1]
    return started & ended


def live_close(close: np.ndarray) -> np.ndarray:
    """Close carried forward over gaps while the ticker is alive; NaN before its start and after its end."""
    c = pd.DataFrame(np.asarray(close, float)).ffill().to_numpy()
    return np.where(alive(close), c, np.nan)


def realised_vol(close: np.ndarray, window: int, periods_per_year: int) -> np.ndarray:
    """Annualised realised volatility: sample std (ddof = 1) of the last `window` daily log
    returns ending at t, times sqrt(periods_per_year). Gap days carry the last close (a zero
    return). NaN until `window` returns exist."""
    logp = np.log(live_close(close))
    ret = np.diff(logp, axis=0, prepend=np.nan)
    vol = pd.DataFrame(ret).rolling(window, min_periods=window).std(ddof=1).to_numpy()
    return vol * np.sqrt(periods_per_year)


# ----------------------------------------------------------------------------- rules


def target_weights(pred: np.ndarray, threshold: float, allow_short: bool) -> np.ndarray:
    """+1 when the predicted log return exceeds `threshold`, -1 below `-threshold` if shorting,
    else 0 (flat); NaN stays NaN (no prediction: no order)."""
    pred = np.asarray(pred, dtype=float)
    w = np.where(pred > threshold, 1.0, 0.0)
    if allow_short:
        w = np.where(pred < -threshold, -1.0, w)
    return np.where(np.isnan(pred), np.nan, w)


def threshold_rule(pred: np.ndarray, n_alive: np.ndarray, threshold: float, allow_short: bool) -> np.ndarray:
    """Long above `threshold`, short below `-threshold` if `allow_short`, else flat
    (`target_weights`), each position 1 / n of equity, n = tickers alive on the row
    (at least 1), so one ticker gives today's +1 / 0 / -1. NaN prediction -> NaN (no order)."""
    n = np.maximum(np.asarray(n_alive, float), 1.0)
    return target_weights(pred, threshold, allow_short) / n[:, None]


def _tied_share(pred: np.ndarray, has: np.ndarray, slots: np.ndarray, descending: bool) -> np.ndarray:
    """Each ticker's share of a side's `slots` per row: 1 for those strictly inside, 0 outside, and a
    block of m tied predictions on the boundary with r slots left shares them, r / m each. So a tie never
    favours a ticker by its column (its name), and the shares of a row sum to its slots exactly."""
    key = np.where(has, -pred if descending else pred, np.inf)  # missing last, never tied with a prediction
    first = stats.rankdata(key, method="min", axis=1)  # 1 + tickers strictly ahead
    tied = stats.rankdata(key, method="max", axis=1) - first + 1
    return np.where(has, np.clip((slots[:, None] - (first - 1)) / tied, 0.0, 1.0), 0.0)


def rank_rule(
    pred: np.ndarray,
    *,
    top_k: int | None = None,
    top_fraction: float | None = None,
    allow_short: bool = False,
    weighting: str = "equal",
    min_tickers: int = 1,
) -> np.ndarray:
    """Cross-sectional rule: on each row rank the tickers that have a prediction, long the top k
    (`top_k`, or `floor(top_fraction * n)` with at least 1), and with `allow_short` short the
    bottom k (fewer when the two would overlap). Tied predictions on a side's boundary share its
    remaining slots (`_tied_share`). Weights: `equal` (share / k on a side) or `signal` (share x
    |prediction|, over the side's sum; equal if that sum is 0). Tickers without a prediction get 0
    on a valid row; a row with fewer than `min_tickers` predictions is not valid and gets NaN (no trade)."""
    pred = np.asarray(pred, float)
    rows = pred.shape[0]
    has = np.isfinite(pred)
    n = has.sum(axis=1)
    if top_k is not None:
        k = np.minimum(np.full(rows, int(top_k)), n)
    else:
        k = np.minimum(np.maximum(np.floor(float(top_fraction or 1.0) * n + 1e-9).astype(np.int64), 1), n)
    k_short = np.minimum(k, n - k) if allow_short else np.zeros(rows, np.int64)
    long = _tied_share(pred, has, k, descending=True)
    short = _tied_share(pred, has, k_short, descending=False)
    mag = np.where(has, np.abs(pred), 0.0)

    def side(share: np.ndarray, slots: np.ndarray) -> np.ndarray:
        equal = share / np.maximum(slots, 1)[:, None]  # the shares of a row sum to its slots
        if weighting != "signal":
            return equal
        total = (share * mag).sum(axis=1, keepdims=True)
        return np.where(total > 0, share * mag / np.where(total > 0, total, 1.0), equal)

    w = side(long, k) - side(short, k_short)
    valid = (n >= max(int(min_tickers), 1))[:, None]
    return np.where(valid, w, np.nan)


# ----------------------------------------------------------------------------- filters


def magnitude_filter(weights: np.ndarray, pred: np.ndarray, min_abs: float) -> np.ndarray:
    """Flat where |predicted return| < `min_abs` (a position needs a big enough forecast)."""
    weak = np.abs(np.nan_to_num(pred)) < min_abs
    return np.where(weak & np.isfinite(weights), 0.0, weights)


def trend_filter(weights: np.ndarray, close: np.ndarray, sma: np.ndarray) -> np.ndarray:
    """Keep a long only while close > its N-day simple average, a short only while close < it;
    otherwise flat (also flat while the average is undefined)."""
    up, down = close > sma, close < sma  # NaN compares False
    keep = np.where(weights > 0, up, np.where(weights < 0, down, True))
    return np.where(keep | np.isnan(weights), weights, 0.0)


def sma(close: np.ndarray, window: int) -> np.ndarray:
    """Trailing simple moving average of the live close over `window` sessions (NaN until full)."""
    return pd.DataFrame(live_close(close)).rolling(window, min_periods=window).mean().to_numpy()


def vol_regime_scale(vol: np.ndarray, window: int, quantile: float, scale: float) -> np.ndarray:
    """Multiplier: `scale` (0 = go flat) where the trailing realised vol is above its own
    `quantile` over the last `window` sessions (including t), else 1. Rows where that long-run
    quantile is not yet defined are not filtered."""
    q = pd.DataFrame(vol).rolling(window, min_periods=window).quantile(quantile).to_numpy()
    return np.where(vol > q, scale, 1.0)


# ----------------------------------------------------------------------------- sizing


def size_volatility(weights: np.ndarray, vol: np.ndarray, target_vol: float) -> np.ndarray:
    """Volatility targeting per position: w_i * target_vol / sigma_i, sigma_i = trailing annualised
    realised vol (Moreira & Muir 2017, "Volatility-Managed Portfolios", J. Finance 72(4), scale
    exposure inversely to recent risk; they use 1/variance, this is the common 1/vol variant
    studied by Harvey et al. 2018, "The Impact of Volatility Targeting"). Undefined or zero
    sigma -> flat. With sigma_i = target_vol the equal weights are unchanged."""
    ok = np.isfinite(vol) & (vol > 0)
    return np.where(np.isnan(weights), np.nan, np.where(ok, weights * target_vol / np.where(ok, vol, 1.0), 0.0))


def size_book_volatility(
    weights: np.ndarray, returns: np.ndarray, rows: np.ndarray, window: int, target_vol: float, periods_per_year: int
) -> np.ndarray:
    """Volatility targeting for the whole book: scale row r's weights by target_vol / sigma_book,
    sigma_book = annualised sample std of the book's trailing `window` daily returns
    sum_i w_i * r_i (r = the tickers' log returns, missing = 0) with row r's weights held
    (Moreira & Muir 2017, applied to the portfolio). `rows[j]` is the session of weights row j.
    Undefined or zero sigma_book -> flat."""
    out = np.array(weights, float)
    ret = np.nan_to_num(returns)
    for j, t in enumerate(np.asarray(rows, int).tolist()):
        w = np.nan_to_num(out[j])
        if not w.any():
            continue
        sigma = np.nan
        if t + 1 >= window:
            sigma = (ret[t + 1 - window : t + 1] @ w).std(ddof=1) * np.sqrt(periods_per_year)
        out[j] = np.where(np.isnan(out[j]), np.nan, out[j] * (target_vol / sigma) if sigma > 0 else 0.0)
    return out


def size_kelly(
    weights: np.ndarray,
    pred: np.ndarray,
    vol: np.ndarray,
    *,
    fraction: float,
    cap: float,
    horizon: int,
    periods_per_year: int,
) -> np.ndarray:
    """Fractional Kelly: |w| = min(fraction * mu / sigma^2, cap) in the rule's direction, with
    mu = the predicted log return over `horizon` sessions and sigma^2 = horizon * trailing daily
    variance (vol^2 / periods_per_year), so mu / sigma^2 is the growth-optimal fraction of a
    continuous-time bet (Kelly 1956, "A New Interpretation of Information Rate"; Thorp 2006,
    "The Kelly Criterion in Blackjack, Sports Betting and the Stock Market", f* = (mu - r) / sigma^2,
    here r = 0). A forecast against the rule's direction, or an undefined sigma, gives 0.
    `fraction` = 0.5 is half-Kelly."""
    var = horizon * np.square(vol) / periods_per_year
    ok = np.isfinite(var) & (var > 0)
    f = fraction * np.nan_to_num(pred) / np.where(ok, var, 1.0)
    side = np.sign(np.nan_to_num(weights))
    mag = np.clip(side * f, 0.0, cap)
    return np.where(np.isnan(weights), np.nan, np.where(ok, side * mag, 0.0))


# ----------------------------------------------------------------------------- limits


def apply_limits(
    weights: np.ndarray, *, max_position: float, max_gross: float, max_net: float, fixed: np.ndarray | None = None
) -> np.ndarray:
    """Per-position cap |w_i| <= max_position (clip), then the gross limit sum |w_i| <= max_gross
    (all scaled down together), then the net limit |sum w_i| <= max_net (the side in excess
    scaled down). Tickers without a target (NaN) do not count. `fixed` (bool, same shape) marks
    weights that cannot change (a holding that cannot trade today): they count towards the
    limits but are neither clipped nor scaled; the others make room for them."""
    w = np.asarray(weights, float)
    free = np.ones(w.shape, bool) if fixed is None else ~np.asarray(fixed, bool)
    w = np.where(free, np.clip(w, -max_position, max_position), w)

    def sums(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.where(mask, np.nan_to_num(w), 0.0)
        return np.maximum(z, 0).sum(axis=-1, keepdims=True), np.maximum(-z, 0).sum(axis=-1, keepdims=True)

    long_free, short_free = sums(free)
    long_fixed, short_fixed = sums(~free)
    gross, room = long_free + short_free, np.maximum(max_gross - long_fixed - short_fixed, 0.0)
    scale = np.where(gross > room, room / np.where(gross > 0, gross, 1.0), 1.0)
    w = np.where(free, w * scale, w)
    long_free, short_free = long_free * scale, short_free * scale
    net = long_free + long_fixed - short_free - short_fixed
    long_room = np.maximum(max_net + short_free + short_fixed - long_fixed, 0.0)
    short_room = np.maximum(max_net + long_free + long_fixed - short_fixed, 0.0)
    long_scale = np.where(net > max_net, long_room / np.where(long_free > 0, long_free, 1.0), 1.0)
    short_scale = np.where(-net > max_net, short_room / np.where(short_free > 0, short_free, 1.0), 1.0)
    return np.where(free & (w > 0), w * long_scale, np.where(free & (w < 0), w * short_scale, w))
