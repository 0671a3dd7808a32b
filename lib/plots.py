"""PNG figures for the report (matplotlib's Figure API: no display, no global state).

Each function returns the PNG's bytes, so a stage can render everything before it writes anything.
"""
from __future__ import annotations

import io

import pandas as pd
from matplotlib.figure import Figure

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
