"""Model registry: `model.arch` names a class built from the `model` params section."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LSTMRegressor(nn.Module):
    """Stacked LSTM over a window of feature rows; a linear head on the last step's state."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(self.drop(out[:, -1])).squeeze(-1)


REGISTRY: dict[str, type[nn.Module]] = {"lstm": LSTMRegressor}


def build_model(cfg: dict[str, Any], n_features: int) -> nn.Module:
    return REGISTRY[cfg["arch"]](n_features, cfg["hidden"], cfg["layers"], cfg["dropout"])
