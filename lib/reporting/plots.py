"""PNG figures for the report (matplotlib's Figure API: no display, no global state).

Each function returns the PNG's bytes, so a stage can render everything before it writes anything.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from lib.tables import BOOKS, STRATEGY


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def lines(df: pd.DataFrame, title: str, ylabel: str) -> bytes:
    """One line per book over `date`, each in its own colour."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for col in BOOKS:
        ax.plot(df["date"], df[col], label=col, linewidth=1.4 if col == STRATEGY else 0.9)
    ax.set_title(title)
    ax.set_xlabel("date")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def scatter(pred: pd.DataFrame) -> bytes:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(pred["prediction"], pred["label"], s=4, alpha=0.35)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("predicted log return")
    ax.set_ylabel("realized log return")
    ax.set_title("Out-of-sample: predicted vs realized")
    return _png(fig)


def equity_drawdown(equity: pd.DataFrame, dd: pd.DataFrame, labels: dict[str, str]) -> bytes:
    """Equity (top) and drawdown (bottom) of every book on one shared date axis."""
    fig = Figure(figsize=(10, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    for col in BOOKS:
        width = 1.6 if col == STRATEGY else 1.0
        top.plot(equity["date"], equity[col], label=labels.get(col, col), linewidth=width)
        bottom.plot(dd["date"], dd[col], linewidth=width)
    top.set_title("Equity after costs (out of sample)")
    top.set_ylabel("equity")
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(PercentFormatter(1.0))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend()
    return _png(fig)


def heatmap(table: pd.DataFrame, title: str) -> bytes:
    """Year x month returns, red for losses and green for gains, each cell labelled in %."""
    fig = Figure(figsize=(10, 0.42 * len(table) + 1.3))
    ax = fig.subplots()
    values = table.to_numpy(float)
    lim = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(12), ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"])
    ax.set_yticks(range(len(table)), [str(y) for y in table.index])
    for i, j in zip(*np.nonzero(np.isfinite(values)), strict=True):
        ax.text(j, i, f"{100 * values[i, j]:.1f}", ha="center", va="center", fontsize=8)
    ax.set_title(title + " (%)")
    fig.colorbar(im, ax=ax, format=PercentFormatter(1.0), fraction=0.03)
    return _png(fig)


def ic_panels(rolling: pd.DataFrame, per_date: pd.DataFrame, spread: pd.DataFrame, window: int, horizon: int) -> bytes:
    """Top: the pooled Rank IC over a trailing window (and the per-date cross-sectional Rank IC when
    there are enough tickers). Bottom: the cumulative top-minus-bottom quantile spread."""
    fig = Figure(figsize=(10, 6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    if len(per_date):
        top.plot(per_date["date"], per_date["rank_ic"], linewidth=0.4, alpha=0.4, label="per-date Rank IC")
    top.plot(rolling["date"], rolling["rolling_ic"], linewidth=1.4, label=f"pooled Rank IC, trailing {window} dates")
    top.axhline(0, color="grey", linewidth=0.8)
    top.set_ylabel("Rank IC")
    top.set_title("Information coefficient over time")
    top.legend(loc="upper left")
    if len(spread):
        bottom.plot(spread["date"], spread["spread"].cumsum() / horizon, linewidth=1.2)
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_ylabel("cumulative log return")
    bottom.set_title(f"Top minus bottom prediction group: cumulative spread (per date, / {horizon})")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _png(fig)


def cost_curve(curve: pd.DataFrame, break_even: float | None, current: float) -> bytes:
    """Annualised active return over buy-and-hold against the per-side cost, break-even marked."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(curve["cost_bps"], curve["active_annual"], marker="o")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(current, color="tab:orange", linestyle=":", label=f"current cost ({current:g} bps)")
    if break_even is not None:
        ax.axvline(break_even, color="tab:red", linestyle="--", label=f"break-even {break_even:.1f} bps")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("cost per side (bps of traded notional)")
    ax.set_ylabel("active return a year vs buy-and-hold")
    ax.set_title("Cost sensitivity")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def permutation_hist(null: list[float], observed: float | None, pvalue: float | None) -> bytes:
    """Sharpe ratios of the shuffled-prediction backtests, the real one marked."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    if null:
        ax.hist(
            null,
            bins=min(40, max(10, len(null) // 5)),
            color="tab:blue",
            alpha=0.7,
            label=f"{len(null)} shuffles in time",
        )
    if observed is not None:
        p = "n/a" if pvalue is None else f"{pvalue:.3f}"
        ax.axvline(observed, color="tab:red", linewidth=2, label=f"real Sharpe {observed:.2f} (p = {p})")
    ax.set_xlabel("annualised Sharpe ratio")
    ax.set_ylabel("shuffles")
    ax.set_title("Permutation null: predictions shuffled in time")
    ax.legend()
    return _png(fig)


def attribution_chart(contrib: pd.DataFrame) -> bytes:
    """Net contribution of each ticker to the strategy's return, split into long, short and costs."""
    df = contrib.sort_values("net")
    fig = Figure(figsize=(7, max(2.5, 0.3 * len(df) + 1)))
    ax = fig.subplots()
    equity0 = (df["net"] / df["contribution"]).dropna().iloc[0] if df["contribution"].ne(0).any() else 1.0
    y = range(len(df))
    ax.barh(y, (df["pnl_long"] + df["pnl_fill_day"]) / equity0, label="long (incl. fill days)", color="tab:green")
    ax.barh(y, df["pnl_short"] / equity0, label="short", color="tab:red", alpha=0.7)
    ax.barh(y, -df["costs"] / equity0, label="costs", color="grey")
    ax.scatter(df["contribution"], y, color="black", zorder=3, s=12, label="net")
    ax.set_yticks(list(y), df["ticker"])
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("contribution to total return")
    ax.set_title("Strategy P&L attribution")
    ax.legend(fontsize=8)
    return _png(fig)


def power_curves(summary: pd.DataFrame, alpha: float) -> bytes:
    """The calibration study's power curves: per test, the detection rate (the false-alarm rate at 0)
    against the planted Rank IC, one line per kind and family with its Wilson interval, the analytic power
    dashed, and the nominal level and 80 % marked."""
    tests = list(dict.fromkeys(summary["test"]))
    fig = Figure(figsize=(3.2 * max(len(tests), 1), 3.4))
    axes = np.atleast_1d(fig.subplots(1, max(len(tests), 1), sharey=True))
    for ax, test in zip(axes, tests, strict=False):
        for (kind, family), g in summary[summary["test"] == test].groupby(["kind", "family"], sort=True):
            g = g.sort_values("level")
            err = np.clip([g["rate"] - g["rate_low"], g["rate_high"] - g["rate"]], 0.0, None)  # float noise at 0, 1
            line = ax.errorbar(g["level"], g["rate"], yerr=err, marker="o", capsize=3, label=f"{family} ({kind})")
            if g["analytic_power"].notna().any():
                ax.plot(g["level"], g["analytic_power"], linestyle="--", color=line[0].get_color(), linewidth=0.9)
        ax.axhline(alpha, color="grey", linewidth=0.7, linestyle=":")
        ax.axhline(0.8, color="grey", linewidth=0.7, linestyle=":")
        ax.set_title(test, fontsize=9)
        ax.set_xlabel("planted Rank IC")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("detection rate (dashed: analytic power)")
    axes[0].legend(fontsize=7)
    return _png(fig)
