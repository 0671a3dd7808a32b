"""The training cutoff: the rows the models may train on at `train.cutoff` (stages/featurize.py writes them to
data/train_features.parquet; the weekly refresh moves the cutoff, lib/live/retrain.py)."""

from __future__ import annotations

import pandas as pd

from lib.tables import LABEL, LABEL_END


def cut_training_rows(features: pd.DataFrame, cutoff: str) -> pd.DataFrame:
    """Rows dated <= cutoff; label and label_end blanked where the label ends after the cutoff (it was
    not known then). Only what was known at the cutoff: later bars change nothing in the result."""
    end = pd.Timestamp(cutoff)
    out = features[features["date"] <= end].reset_index(drop=True)
    late = ~(out[LABEL_END] <= end)
    out.loc[late, LABEL] = float("nan")
    out.loc[late, LABEL_END] = pd.NaT
    return out
