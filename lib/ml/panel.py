"""Feature panel as arrays, windows of `seq_len` sessions gathered on the fly, fold scaling.

A sample is anchored at row i (one ticker, one date): its input is that ticker's feature
rows i-seq_len+1 .. i, its target the label at i, realised at the close of `label_end[i]`
(the ticker's own `horizon`-th next session). Windows are gathered by index at batch
time, so no (samples x seq_len x features) copy is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler

from lib.data.features import feature_columns
from lib.tables import LABEL, LABEL_END


@dataclass(frozen=True)
class WindowPanel:
    """The feature table as arrays, for models that read windows of `seq_len` rows ending at an anchor row."""

    values: np.ndarray  # (rows, features) float64, rows sorted by ticker then date
    labels: np.ndarray  # (rows,) float64, NaN where the label is not known yet
    label_end: np.ndarray  # (rows,) datetime64[ns]: when the label is realised (NaT if not yet)
    dates: np.ndarray  # (rows,) datetime64[ns]
    tickers: np.ndarray  # (rows,) str
    features: list[str]
    seq_len: int
    has_window: np.ndarray  # (rows,) bool: seq_len rows of the same ticker end here

    @classmethod
    def from_frame(cls, df: pd.DataFrame, seq_len: int) -> WindowPanel:
        df = df.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
        cols = feature_columns(df)
        position = df.groupby("ticker", sort=False).cumcount().to_numpy()
        return cls(
            df[cols].to_numpy(np.float64),
            df[LABEL].to_numpy(np.float64),
            df[LABEL_END].to_numpy("datetime64[ns]"),
            df["date"].to_numpy("datetime64[ns]"),
            df["ticker"].to_numpy(str),
            cols,
            seq_len,
            position >= seq_len - 1,
        )

    def rows(
        self, start: str, end: str, labelled: bool, stride: int = 1, labels_before: str | None = None
    ) -> np.ndarray:
        """Anchor rows dated in [start, end] with a full window (and a label if asked), every `stride`-th.

        `labels_before` purges by label end date: a row is kept only if its label is realised
        strictly before that date (López de Prado 2018, ch. 7.4.1), whatever holes its ticker has."""
        d = self.dates
        keep = (d >= np.datetime64(start)) & (d <= np.datetime64(end)) & self.has_window
        if labelled:
            keep &= ~np.isnan(self.labels)
        if labels_before is not None:
            keep &= self.label_end < np.datetime64(labels_before)  # NaT compares False: dropped
        return np.flatnonzero(keep)[::stride]

    def fit_scaler(self, start: str, end: str) -> StandardScaler:
        """Standardise with mean/std of the feature rows dated in [start, end] (a fold's fit rows)."""
        d = self.dates
        rows = (d >= np.datetime64(start)) & (d <= np.datetime64(end))
        return StandardScaler().fit(self.values[rows])

    def scaled(self, mean: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
        x = (self.values - mean) / scale
        if clip > 0:
            x = np.clip(x, -clip, clip)
        return x.astype(np.float32)


def windows(x: torch.Tensor, rows: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Gather (batch, seq_len, features) inputs ending at `rows` from the (rows, features) table."""
    offsets = torch.arange(1 - seq_len, 1, device=x.device)
    return x[rows.unsqueeze(1) + offsets]
