"""Alpha158 (`features.set: alpha158`): the 158 price-volume features of Qlib's Alpha158 handler, written
from the definitions its loader publishes (qlib/contrib/data/loader.py, `Alpha158DL.get_feature_config`).

With o, h, l, c the adjusted open, high, low, close (`lib.data.prices.adjusted`; c = adj_close), v the
volume, d each window of `features.alpha158_windows` (Qlib's: 5, 10, 20, 30, 60) and every window trailing
(the d sessions ending at t, of the ticker's own rows):

* K-bar (9): KMID (c-o)/o, KLEN (h-l)/o, KMID2 (c-o)/(h-l), KUP (h-max(o,c))/o, KUP2 (h-max(o,c))/(h-l),
  KLOW (min(o,c)-l)/o, KLOW2 (min(o,c)-l)/(h-l), KSFT (2c-h-l)/o, KSFT2 (2c-h-l)/(h-l).
* Price ratios (4): OPEN0 o/c, HIGH0 h/c, LOW0 l/c, VWAP0 vwap/c. Our vendors give no VWAP: it is
  approximated by the typical price (h+l+c)/3.
* Rolling (29 per window): ROC c_{t-d}/c; MA, STD (ddof 1), QTLU, QTLD (80% and 20% quantiles, linear
  interpolation) of c over the window, each / c; BETA slope / c, RSQR R^2, RESI today's residual / c of the
  least-squares line of c on time; MAX max(h) / c, MIN min(l) / c; RANK today's percentile rank of c in its
  window (ties averaged, in (0, 1]); RSV (c - min l)/(max h - min l); IMAX, IMIN the 1-based position
  (1 = oldest) of the window's first max h / min l, over d, as Qlib's IdxMax/IdxMin; IMXD = IMAX - IMIN;
  CORR corr(c, log v), CORD corr(c/c_{t-1}, log(v/v_{t-1} + 1)); CNTP, CNTN the share of up / down closes,
  CNTD their difference; SUMP, SUMN gains / losses of c over sum |dc|, SUMD their difference; VMA mean(v)/v,
  VSTD std(v)/v, WVMA std/mean of |c/c_{t-1} - 1| v; VSUMP, VSUMN, VSUMD the same shares for v.

9 + 4 + 29 x len(windows) features (158 with Qlib's windows), named as Qlib names them (`ROC5`, `KMID`),
K-bar, price, then each rolling operator over the windows in turn.

Every feature is a ratio of prices to prices or of volumes to volumes, so rescaling a ticker's prices or its
volume by a constant changes nothing (to rounding): where Qlib adds 1e-12 to a denominator, a zero one (a flat
bar or window) gives 0 here, the value Qlib's gets; STD, VSTD and WVMA of a flat window are exactly 0, and CORR,
CORD 0 (Qlib: NaN, which its Fillna processor turns into 0); log volume is log v, not Qlib's log(v + 1). A zero
volume has no ratio: VMA and VSTD are NaN on that day, CORD the day after, CORR on every window holding it, so
up to max(windows) + 1 rows of that ticker drop out with the warm-up (`lib.data.features.labelled_table`: any
feature NaN); on the 402-ticker panel, 351 rows of 463k.

No look-ahead: every window ends at t and restarts at the ticker's first row (`_Groups`), so a value dated t
uses that ticker's bars up to t only. Vectorised over the long table: pandas' rolling kernels on
`_Groups.rolling` windows, and one numpy pass per offset into the window for RANK, IMAX and IMIN; no loop over
tickers. BETA, RSQR and RESI come from rolling sums in closed form. The basic set's keys (windows, calendar)
are not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lib.data.features import _Groups, _ratio, labelled_table, sorted_bars

KBAR = ("KMID", "KLEN", "KMID2", "KUP", "KUP2", "KLOW", "KLOW2", "KSFT", "KSFT2")
PRICE = ("OPEN0", "HIGH0", "LOW0", "VWAP0")
ROLLING = (
    "ROC", "MA", "STD", "BETA", "RSQR", "RESI", "MAX", "MIN", "QTLU", "QTLD", "RANK", "RSV", "IMAX", "IMIN",
    "IMXD", "CORR", "CORD", "CNTP", "CNTN", "CNTD", "SUMP", "SUMN", "SUMD", "VMA", "VSTD", "WVMA", "VSUMP",
    "VSUMN", "VSUMD",
)  # fmt: skip


def feature_names(windows: list[int]) -> list[str]:
    """The set's columns in order: K-bar, price ratios, then each rolling operator over `windows`."""
    return [*KBAR, *PRICE, *(f"{op}{d}" for op in ROLLING for d in windows)]


@dataclass(frozen=True)
class _Bars:
    """The adjusted bars of `sorted_bars` and the day-on-day series the operators share."""

    o: pd.Series
    h: pd.Series
    l: pd.Series  # the low, as Qlib names it
    c: pd.Series
    v: pd.Series
    v_pos: pd.Series  # volume, NaN where it is 0 (no ratio to it)
    x: pd.Series  # the row's position in its ticker: the time axis of the regressions
    dc: pd.Series  # c_t - c_{t-1}
    dv: pd.Series  # v_t - v_{t-1}
    up: pd.Series  # 1.0 where c rose, else 0.0 (NaN on a ticker's first row)
    down: pd.Series
    wv: pd.Series  # |c_t / c_{t-1} - 1| v_t
    log_v: pd.Series
    ratio_c: pd.Series  # c_t / c_{t-1}
    log_ratio_v: pd.Series  # log(v_t / v_{t-1} + 1)
    repeats: dict[str, pd.Series]  # per series above: 1.0 where x_t = x_{t-1}, else 0.0 (NaN: no x_{t-1})


def _bars(g: pd.DataFrame, grp: _Groups) -> _Bars:
    c, v = g["adj_close"], g["volume"].astype(float)
    v_pos = v.where(v > 0)
    prev_c = grp.shift(c, 1)
    dc, dv = c - prev_c, v - grp.shift(v, 1)
    seen = dc.notna()
    ratio_c = c / prev_c
    wv, log_ratio_v = (ratio_c - 1).abs() * v, np.log(v / grp.shift(v_pos, 1) + 1)
    log_v = np.log(v_pos)
    series = {"c": c, "v": v, "wv": wv, "log_v": log_v, "ratio_c": ratio_c, "log_ratio_v": log_ratio_v}
    return _Bars(
        o=g["adj_open"],
        h=g["adj_high"],
        l=g["adj_low"],
        c=c,
        v=v,
        v_pos=v_pos,
        x=pd.Series(np.arange(len(g)) - grp.row_start, index=g.index, dtype=float),
        dc=dc,
        dv=dv,
        up=(dc > 0).astype(float).where(seen),
        down=(dc < 0).astype(float).where(seen),
        wv=wv,
        log_v=log_v,
        ratio_c=ratio_c,
        log_ratio_v=log_ratio_v,
        repeats={k: (x == grp.shift(x, 1)).astype(float).where(grp.shift(x, 1).notna()) for k, x in series.items()},
    )


def _kbar(b: _Bars) -> dict[str, pd.Series]:
    o, h, lo, c = b.o, b.h, b.l, b.c
    rng, top, bottom = h - lo, np.maximum(o, c), np.minimum(o, c)
    parts = {"KMID": c - o, "KUP": h - top, "KLOW": bottom - lo, "KSFT": 2 * c - h - lo}
    out = {"KMID": parts["KMID"] / o, "KLEN": rng / o}
    out["KMID2"] = _ratio(parts["KMID"], rng, 0.0)
    for name in ("KUP", "KLOW", "KSFT"):
        out[name], out[f"{name}2"] = parts[name] / o, _ratio(parts[name], rng, 0.0)
    return {name: out[name] for name in KBAR}


def _price_ratios(b: _Bars) -> dict[str, pd.Series]:
    vwap = (b.h + b.l + b.c) / 3  # typical price: the vendors give no VWAP
    return {"OPEN0": b.o / b.c, "HIGH0": b.h / b.c, "LOW0": b.l / b.c, "VWAP0": vwap / b.c}


def _flat(b: _Bars, name: str, grp: _Groups, d: int) -> pd.Series:
    """The d-row window of series `name` holds one value only: its d-1 day-on-day steps are all repeats
    (exactly; pandas' online variance of such a window is a rounding residue, not 0)."""
    return grp.rolling(b.repeats[name], d - 1).sum() == d - 1


def _std(b: _Bars, name: str, grp: _Groups, d: int) -> pd.Series:
    """Rolling standard deviation of series `name` (ddof 1, as Qlib's Std), exactly 0 on a flat window."""
    return grp.rolling(getattr(b, name), d).std().mask(_flat(b, name, grp, d), 0.0)


def _levels(b: _Bars, grp: _Groups, d: int) -> dict[str, pd.Series]:
    """ROC, MA, STD, MAX, MIN, QTLU, QTLD, RANK, RSV."""
    c = b.c
    roll = grp.rolling(c, d)
    hi, lo = grp.rolling(b.h, d).max(), grp.rolling(b.l, d).min()
    return {
        "ROC": grp.shift(c, d) / c,
        "MA": roll.mean() / c,
        "STD": _std(b, "c", grp, d) / c,
        "MAX": hi / c,
        "MIN": lo / c,
        "QTLU": roll.quantile(0.8) / c,
        "QTLD": roll.quantile(0.2) / c,
        "RANK": _rank(c, grp, d),
        "RSV": _ratio(c - lo, hi - lo, 0.0),
    }


def _rank(x: pd.Series, grp: _Groups, d: int) -> pd.Series:
    """Today's percentile rank in its d-row window, ties averaged (pandas' rolling rank, pct=True):
    (#{x_{t-k} < x_t} + (#{x_{t-k} = x_t} + 1) / 2) / d over k = 0..d-1, one pass per offset k (plain offsets:
    a full window lies within its ticker; a window that is not full gives NaN)."""
    values = x.to_numpy(dtype=float)
    n = len(values)
    less, equal = np.zeros(n), np.ones(n)  # x_t equals itself
    for k in range(1, d):
        older, now = values[: n - k], values[k:]
        less[k:] += older < now
        equal[k:] += older == now
    full = grp.rolling(x, d).count().to_numpy() == d
    return pd.Series(np.where(full, (less + (equal + 1) / 2) / d, np.nan), index=x.index)


def _trend(b: _Bars, grp: _Groups, d: int) -> dict[str, pd.Series]:
    """BETA, RSQR, RESI: the least-squares line c = a + slope x over the window (x: consecutive rows), from
    rolling sums: Sxx = d(d^2-1)/12, Sxy = sum(x c) - mean(x) sum(c), Syy = d var(c) (ddof 0);
    slope = Sxy/Sxx, R^2 = Sxy^2/(Sxx Syy) (0 on a flat window), residual c_t - mean(c) - slope (d-1)/2."""
    c, x = b.c, b.x
    roll = grp.rolling(c, d)
    sxx = d * (d * d - 1) / 12.0
    sxy = grp.rolling(x * c, d).sum() - (x - (d - 1) / 2) * roll.sum()
    syy = (roll.var(ddof=0) * d).mask(_flat(b, "c", grp, d), 0.0)
    slope = sxy / sxx
    resid = c - roll.mean() - slope * ((d - 1) / 2)
    return {"BETA": slope / c, "RSQR": _ratio(sxy * sxy, sxx * syy, 0.0), "RESI": resid / c}


def _extremum_position(x: pd.Series, extremum: pd.Series, d: int) -> pd.Series:
    """1-based position (1 = oldest) of the first row of each d-row window where x equals the window's
    `extremum` (its rolling max or min, NaN where the window is not full), over d. One pass per offset
    into the window: x_{t-k} for k = 0..d-1, the oldest match written last. A full window lies within its
    ticker, so the plain offsets never read another ticker's rows where the result is kept."""
    values, target = x.to_numpy(dtype=float), extremum.to_numpy(dtype=float)
    position = np.full(len(values), np.nan)
    for k in range(d):
        match = np.zeros(len(values), dtype=bool)
        match[k:] = values[: len(values) - k] == target[k:]
        position[match] = d - k
    return pd.Series(np.where(np.isnan(target), np.nan, position / d), index=x.index)


def _positions(b: _Bars, grp: _Groups, d: int) -> dict[str, pd.Series]:
    """IMAX, IMIN, IMXD."""
    imax = _extremum_position(b.h, grp.rolling(b.h, d).max(), d)
    imin = _extremum_position(b.l, grp.rolling(b.l, d).min(), d)
    return {"IMAX": imax, "IMIN": imin, "IMXD": imax - imin}


def _corr(b: _Bars, a: str, z: str, grp: _Groups, d: int) -> pd.Series:
    """Pearson correlation of series a and z over the window; 0 where either is flat."""
    flat = _flat(b, a, grp, d) | _flat(b, z, grp, d)
    return grp.rolling(getattr(b, a), d).corr(getattr(b, z)).mask(flat, 0.0)


def _correlations(b: _Bars, grp: _Groups, d: int) -> dict[str, pd.Series]:
    """CORR, CORD."""
    return {"CORR": _corr(b, "c", "log_v", grp, d), "CORD": _corr(b, "ratio_c", "log_ratio_v", grp, d)}


def _counts(b: _Bars, grp: _Groups, d: int) -> dict[str, pd.Series]:
    """CNTP, CNTN, CNTD."""
    up, down = grp.rolling(b.up, d).mean(), grp.rolling(b.down, d).mean()
    return {"CNTP": up, "CNTN": down, "CNTD": up - down}


def _sums(b: _Bars, grp: _Groups, d: int) -> dict[str, pd.Series]:
    """SUMP, SUMN, SUMD."""
    return _shares(b.dc, grp, d, "")


def _shares(change: pd.Series, grp: _Groups, d: int, prefix: str) -> dict[str, pd.Series]:
    """SUMP, SUMN, SUMD (prefix "") or VSUMP, VSUMN, VSUMD (prefix "V"): the window's gains and losses of
    a series as shares of its total absolute change (0 on a flat window), and their difference."""
    gain = grp.rolling(change.clip(lower=0), d).sum()
    loss = grp.rolling((-change).clip(lower=0), d).sum()
    total = grp.rolling(change.abs(), d).sum()
    return {
        f"{prefix}SUMP": _ratio(gain, total, 0.0),
        f"{prefix}SUMN": _ratio(loss, total, 0.0),
        f"{prefix}SUMD": _ratio(gain - loss, total, 0.0),
    }


def _volumes(b: _Bars, grp: _Groups, d: int) -> dict[str, pd.Series]:
    """VMA, VSTD, WVMA, VSUMP, VSUMN, VSUMD."""
    return {
        "VMA": grp.rolling(b.v, d).mean() / b.v_pos,
        "VSTD": _std(b, "v", grp, d) / b.v_pos,
        "WVMA": _ratio(_std(b, "wv", grp, d), grp.rolling(b.wv, d).mean(), 0.0),
        **_shares(b.dv, grp, d, "V"),
    }


FAMILIES = (_levels, _trend, _positions, _correlations, _counts, _sums, _volumes)


def alpha158_features(g: pd.DataFrame, grp: _Groups, windows: list[int]) -> dict[str, pd.Series]:
    """The set's columns (`feature_names(windows)`) over the rows of `sorted_bars`, NaN in each window's warm-up."""
    b = _bars(g, grp)
    f = {**_kbar(b), **_price_ratios(b)}
    for d in windows:
        per_window = {k: v for family in FAMILIES for k, v in family(b, grp, d).items()}
        f |= {f"{op}{d}": per_window[op] for op in ROLLING}
    return {name: f[name] for name in feature_names(windows)}


def build_alpha158(prices: pd.DataFrame, cfg: dict[str, Any]) -> pd.DataFrame:
    """Long table `date, ticker, <alpha158 features>, label, label_end`, sorted by ticker then date, with
    the label and warm-up rule of the basic set (`lib.data.features.labelled_table`): the first
    max(windows) rows of each ticker drop out. Reads `features.alpha158_windows` and `features.horizon`."""
    g, grp = sorted_bars(prices)
    return labelled_table(g, grp, alpha158_features(g, grp, cfg["alpha158_windows"]), cfg["horizon"])
