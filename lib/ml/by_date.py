"""Training on the cross-section: whole-date batches (`train.batching: by_date`) and the per-date IC
loss (`train.loss: ic`), as the field trains ranking models (each step compares tickers on the same day).

Both group rows by their anchor date only. Which rows are fit or early-stopping rows is decided before
(the fold's dates and its purge by label end date, lib/ml/folds.py), so grouping them by date moves no
information across dates: a batch or a date's IC holds rows of one date, whose labels every fit row
already has to be realised before the validation window.

Per-date work is vectorised: rows go into a (dates x max rows per date) padded matrix, never a loop
over rows; the sampler loops over dates only.
"""

from __future__ import annotations

import torch

# A date's sum of squared deviations from its mean must exceed this fraction of its sum of squares to
# count as varying: float32 rounding leaves a constant column about 1e-14 of it, real spread far more.
REL_VARIANCE_FLOOR = 1e-10


class DateBatches:
    """The fit rows as batches of whole dates: every row of a date lands in the same batch.

    Each epoch the dates are shuffled by the run's seeded generator and cut into batches of
    `per_batch` dates, where per_batch = max(1, round(batch_size x dates / rows)): about
    `batch_size` rows a batch at the mean number of rows per date, at least one date (a date with more
    rows than batch_size is one batch). Within a batch, rows come date by date, in the rows' own order."""

    def __init__(self, rows: torch.Tensor, dates: torch.Tensor, batch_size: int) -> None:
        d = dates[rows]
        order = torch.argsort(d, stable=True)
        _, counts = torch.unique_consecutive(d[order], return_counts=True)
        self.by_date = list(rows[order].split(counts.tolist()))  # one tensor per date, in time order
        self.widest = int(counts.max()) if len(counts) else 0  # the most rows on one date
        self.per_batch = max(1, round(batch_size * len(self.by_date) / max(1, len(rows))))

    def batches(self, gen: torch.Generator) -> list[torch.Tensor]:
        """One epoch's batches (row tensors) in a fresh order drawn from `gen`."""
        perm = torch.randperm(len(self.by_date), generator=gen).tolist()
        k = self.per_batch
        return [torch.cat([self.by_date[i] for i in perm[b : b + k]]) for b in range(0, len(perm), k)]


def _padded(dates: torch.Tensor, *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each column as a (dates, max rows per date) matrix, 0 where a date has fewer rows, and the 0/1 mask."""
    _, group, counts = torch.unique(dates, return_inverse=True, return_counts=True)
    order = torch.argsort(group, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(group)
    position[order] = torch.arange(len(group), device=group.device) - starts[group[order]]
    width = int(counts.max()) if len(counts) else 0
    flat = group * width + position
    size = len(counts) * width

    def pad(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(size, dtype=v.dtype, device=v.device).index_put((flat,), v).view(len(counts), width)

    return (*(pad(c) for c in columns), pad(torch.ones_like(columns[0])))


def per_date_ic(pred: torch.Tensor, y: torch.Tensor, dates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pearson correlation of predictions and labels across the rows of each date (differentiable in
    `pred`), and which dates count: at least 2 rows and both sides varying (others give 0 here)."""
    p, t, w = _padded(dates, pred.float(), y.float())
    n = w.sum(1, keepdim=True)
    dp = (p - p.sum(1, keepdim=True) / n) * w
    dt = (t - t.sum(1, keepdim=True) / n) * w
    vp, vt = (dp * dp).sum(1), (dt * dt).sum(1)
    valid = (
        (n.squeeze(1) >= 2) & (vp > REL_VARIANCE_FLOOR * (p * p).sum(1)) & (vt > REL_VARIANCE_FLOOR * (t * t).sum(1))
    )
    ic = (dp * dt).sum(1) / torch.sqrt(torch.where(valid, vp * vt, torch.ones_like(vp)))
    return torch.where(valid, ic, torch.zeros_like(ic)), valid


def ic_loss(pred: torch.Tensor, y: torch.Tensor, dates: torch.Tensor | None) -> torch.Tensor:
    """`train.loss: ic`: minus the mean over the dates of the rows of the per-date Pearson IC
    (`per_date_ic`; dates with fewer than 2 rows or no variance are left out; none left: 0)."""
    if dates is None:
        raise ValueError("train.loss ic needs each row's anchor date")
    ic, valid = per_date_ic(pred, y, dates)
    return -ic.sum() / valid.sum().clamp(min=1)
