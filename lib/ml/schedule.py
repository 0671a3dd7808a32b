"""Learning rate per epoch (`train.lr_schedule`): constant | cosine | onecycle | plateau, times a
linear warm-up; closed forms of the epoch, so a resumed run sets exactly the same rates."""

from __future__ import annotations

import math
from typing import Any

# The one-cycle shape (Smith & Topping 2017, "Super-Convergence"), not params keys: changing one
# changes every onecycle run's weights. Rise and start are torch.optim.lr_scheduler.OneCycleLR's
# defaults (pct_start=0.3, div_factor=25, cosine annealing both ways); the floor is lr * 1e-4
# (OneCycleLR's final_div_factor=1e4 divides its start rate, lr/25, instead: a floor of lr/2.5e5).
ONECYCLE_PCT_START = 0.3  # share of the epochs spent rising (rounded, at least one epoch)
ONECYCLE_START_FRACTION = 1 / 25  # first epoch's rate, as a fraction of train.lr
ONECYCLE_END_FRACTION = 1e-4  # last epoch's rate, as a fraction of train.lr


class Schedule:
    """Learning rate per epoch: constant | cosine | onecycle | plateau, times a linear warm-up.

    Closed forms of the epoch (no recursion), so a resumed run sets exactly the same rates.
    onecycle rises from lr/25 to lr over the first 30 % of epochs, then falls to lr/1e4
    (`ONECYCLE_*`); plateau multiplies the rate by `plateau_factor` after `plateau_patience`
    epochs without a better early-stopping (val) loss. Warm-up scales epoch e < warmup_epochs by
    (e+1)/(warmup_epochs+1)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.scale, self.bad, self.best = 1.0, 0, math.inf

    def lr(self, epoch: int) -> float:
        c = self.cfg
        kind, total = c["lr_schedule"], c["epochs"]
        if kind == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * epoch / total))
        elif kind == "onecycle":
            f = _onecycle(epoch, total)
        elif kind == "plateau":
            f = self.scale
        else:
            f = 1.0
        if epoch < c["warmup_epochs"]:
            f *= (epoch + 1) / (c["warmup_epochs"] + 1)
        return c["lr"] * f

    def observe(self, val_loss: float) -> None:
        if self.cfg["lr_schedule"] != "plateau" or not math.isfinite(val_loss):
            return
        if val_loss < self.best:
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad >= self.cfg["plateau_patience"]:
                self.scale, self.bad = self.scale * self.cfg["plateau_factor"], 0

    def state_dict(self) -> dict[str, float]:
        return {"scale": self.scale, "bad": self.bad, "best": self.best}

    def load_state_dict(self, s: dict[str, float]) -> None:
        self.scale, self.bad, self.best = s["scale"], int(s["bad"]), s["best"]


def _onecycle(epoch: int, total: int) -> float:
    """The one-cycle factor of train.lr at `epoch` of `total`: a cosine rise, then a cosine fall."""
    up = max(1, round(ONECYCLE_PCT_START * total))
    start, end = ONECYCLE_START_FRACTION, ONECYCLE_END_FRACTION
    if epoch < up:
        return start + (1 - start) * 0.5 * (1.0 - math.cos(math.pi * epoch / up))
    return end + (1 - end) * 0.5 * (1.0 + math.cos(math.pi * (epoch - up) / max(1, total - 1 - up)))
