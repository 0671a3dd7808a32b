"""PNG figures for the report (matplotlib's Figure API: no display, no global state)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from lib.io import atomic_path

BOOKS = ["strategy", "benchmark", "momentum"]


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def lines(df: pd.DataFrame, title: str, ylabel: str, path: Path) -> None:
    """One line per book over `date`."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    for col in BOOKS:
        ax.plot(df["date"], df[col], label=col, linewidth=1.2 if col == "strategy" else 0.9)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def scatter(pred: pd.DataFrame, path: Path) -> None:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.scatter(pred["prediction"], pred["label"], s=6, alpha=0.5)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("predicted log return")
    ax.set_ylabel("realized log return")
    ax.set_title("Out-of-sample: predicted vs realized")
    _save(fig, path)
