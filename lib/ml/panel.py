"""Feature panel as arrays, windows of `seq_len` sessions gathered on the fly, fold scaling.

A sample is anchored at row i (one ticker, one date): its input is that ticker's feature
rows i-seq_len+1 .. i, its target the label at i, realised at the close of `label_end[i]`
(the ticker's own `horizon`-th next session). Windows are gathered by index at batch
time, so no (samples x seq_len x features) copy is ever built.

Training labels (`training_labels`): standardised by the fit rows' mean and sd (train.label_norm none),
or normalised within each anchor date (cs_zscore, cs_rank: Qlib's CSZScoreNorm, CSRankNorm).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler

from lib.data.cross_section import normalise_by_date
from lib.data.features import feature_columns
from lib.tables import LABEL, LABEL_END

LABEL_NORMS = {"cs_zscore": "zscore", "cs_rank": "rank"}  # train.label_norm -> normalise_by_date's method


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

    def training_labels(
        self, fit_idx: np.ndarray, val_idx: np.ndarray, label_norm: str
    ) -> tuple[np.ndarray, float, float]:
        """(labels of every row as float32, label_mean, label_std): the model fits `labels`, and a
        prediction maps back as prediction * label_std + label_mean.

        none: (label - mean) / sd with the fit rows' mean and sd, 0 where unknown. cs_zscore, cs_rank:
        each date's label normalised over that date's rows among `fit_idx` and `val_idx` only
        (lib/data/cross_section.py `normalise_by_date`), 0 elsewhere; mean 0 and sd 1, so predictions
        stay in that per-date space. Legal: a date's value uses only that date's labels of rows the
        fold already uses, each purged by its label end date, never another date's or a purged row's
        (tests/test_cross_section_training.py perturbs it)."""
        if label_norm == "none":
            label_mean, label_std = float(self.labels[fit_idx].mean()), float(self.labels[fit_idx].std()) or 1.0
            return ((np.nan_to_num(self.labels) - label_mean) / label_std).astype(np.float32), label_mean, label_std
        rows = np.concatenate([fit_idx, val_idx])
        frame = pd.DataFrame({LABEL: self.labels[rows]})
        y = np.zeros(len(self.labels), np.float64)
        y[rows] = normalise_by_date(frame, pd.Series(self.dates[rows]), LABEL_NORMS[label_norm])[LABEL].to_numpy()
        return y.astype(np.float32), 0.0, 1.0

    def scaled(self, mean: np.ndarray, scale: np.ndarray, clip: float) -> np.ndarray:
        x = (self.values - mean) / scale
        if clip > 0:
            x = np.clip(x, -clip, clip)
        return x.astype(np.float32)


def windows(x: torch.Tensor, rows: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Gather (batch, seq_len, features) inputs ending at `rows` from the (rows, features) table."""
    offsets = torch.arange(1 - seq_len, 1, device=x.device)
    return x[rows.unsqueeze(1) + offsets]
