"""The torch training loop (its runtime: lib/ml/runtime.py; the LR schedule: lib/ml/schedule.py):
gradient accumulation, early stopping, a tqdm bar, and per-epoch resumable state; random or whole-date
batches and the per-date IC loss (lib/ml/by_date.py).

Resumable state lives in a cache folder (`RunCache`) that the train stage keys by the params
that matter and the features' sha256; it is written atomically after every completed epoch,
so a run killed at any point resumes from the last completed epoch and ends with the same
bits as an uninterrupted run on CPU (model, optimizer, schedule, grad scaler, both RNGs and
the early-stopping state are all restored).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from lib.errors import PipelineError
from lib.io import write_bytes
from lib.ml import distributed
from lib.ml.by_date import DateBatches, ic_loss
from lib.ml.panel import windows
from lib.ml.runtime import Amp, runtime_fingerprint
from lib.ml.schedule import Schedule
from lib.schema import result_params

log = logging.getLogger(__name__)
EVAL_BATCH = 4096


@dataclass(frozen=True)
class EpochLog:
    fold: str
    epoch: int
    train_loss: float
    val_loss: float
    lr: float
    seconds: float
    samples_per_s: float
    amp_dtype: str
    loss_scale: float
    cached: bool = False  # replayed from the resume cache (timings are not known)


def loss_fn(cfg: dict[str, Any]) -> nn.Module:
    return nn.HuberLoss(delta=cfg["huber_delta"]) if cfg["loss"] == "huber" else nn.MSELoss()


Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def objective(cfg: dict[str, Any]) -> Objective:
    """The training and early-stopping loss of (predictions, labels, the rows' anchor dates): mse or
    huber (`loss_fn`, dates unused), or ic (lib/ml/by_date.py `ic_loss`: minus the mean per-date IC)."""
    if cfg["loss"] == "ic":
        return ic_loss
    base = loss_fn(cfg)
    return lambda pred, y, dates: base(pred, y)


def torch_bytes(obj: Any) -> bytes:
    """torch.save to memory: torch.save names the archive after the file it writes to, so saving
    straight to a temporary file would put a random name in the bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch(obj: Any, path: Path) -> None:
    """`torch_bytes`, written atomically."""
    write_bytes(torch_bytes(obj), path)


class RunCache:
    """Per-epoch training state, one file per run tag (`fold_00`, `fold_00/m1`, `final/refit`)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @classmethod
    def for_run(cls, root: Path, params: dict[str, Any], data_hash: str, device: str) -> RunCache:
        """The folder under `root` keyed by everything that changes a trained weight (the model,
        train and walk_forward params but train.workers, the features' sha256, device, torch
        version, DDP world size, and `runtime_fingerprint`: the training code and the CPU), so a
        changed config, edited code or another machine never resumes stale state (which would
        mix another run's bits into the first folds, the ones a killed run leaves); the folders
        of other configs are removed."""
        kept = result_params(params)
        what = {s: kept[s] for s in ("model", "train", "walk_forward")} | {
            "data": data_hash,
            "device": device,
            "torch": str(torch.__version__),
            "world_size": distributed.world_size(),
            "runtime": runtime_fingerprint(),
        }
        folder = root / hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]
        for stale in root.glob("*") if root.is_dir() else []:
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
        return cls(folder)

    def _path(self, tag: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{tag.replace('/', '.')}.pt"

    def load(self, tag: str) -> dict[str, Any] | None:
        if self.folder is None or not self._path(tag).exists():
            return None
        try:
            return torch.load(self._path(tag), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged cache file only costs a restart of that run
            log.warning("%s: unreadable resume state (%s); training %s from scratch", self._path(tag), exc, tag)
            return None

    def save(self, tag: str, state: dict[str, Any]) -> None:
        if self.folder is not None:
            save_torch(state, self._path(tag))


@torch.inference_mode()
def predict_scaled(model: nn.Module, x: torch.Tensor, rows: torch.Tensor, seq_len: int, amp: Amp) -> torch.Tensor:
    model.eval()
    parts = []
    with amp.autocast():
        for b in range(0, len(rows), EVAL_BATCH):
            parts.append(model(windows(x, rows[b : b + EVAL_BATCH], seq_len)).float())
    return torch.cat(parts) if parts else torch.empty(0, device=x.device)


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


class _TorchFit:
    """One `fit_torch` run: the model and its rows, the optimiser and schedule, and the resumable
    early-stopping state (best loss, epoch and weights so far; the next epoch; done; the history).
    The early-stopping rows are `val_rows` (none: a refit for a fixed number of epochs); `dates`, each
    row's anchor date (int64), groups rows for by_date batches and the ic loss."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        fit_rows: torch.Tensor,
        val_rows: torch.Tensor,
        seq_len: int,
        cfg: dict[str, Any],
        amp: Amp,
        seed: int,
        n_epochs: int,
        dates: torch.Tensor | None = None,
    ) -> None:
        self.model, self.x, self.y, self.fit_rows, self.val_rows = model, x, y, fit_rows, val_rows
        self.dates = dates
        self.seq_len, self.cfg, self.amp, self.n_epochs = seq_len, cfg, amp, n_epochs
        self.early_stopping = len(val_rows) > 0
        self.gen = torch.Generator().manual_seed(seed)
        self.net = distributed.wrap(model)
        self.world = distributed.world_size()
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        self.schedule = Schedule(cfg)
        self.lossf = objective(cfg)
        self.by_date = DateBatches(fit_rows, _need(dates), cfg["batch_size"]) if cfg["batching"] == "by_date" else None
        if cfg["loss"] == "ic" and self.by_date is not None and self.by_date.widest < 2:
            raise PipelineError("train: train.loss ic needs dates with at least 2 tickers; every fit date has one")
        self.micro = math.ceil(cfg["batch_size"] / self.world)  # a rank's share of a micro-batch
        self.step_rows = cfg["batch_size"] * cfg["accumulate"]
        self.best_val, self.best_epoch, self.best_state = math.inf, -1, _clone(model.state_dict())
        self.next_epoch, self.done, self.history = 0, False, []

    def resume(self, saved: dict[str, Any], tag: str, on_epoch: Callable[[EpochLog], None]) -> None:
        """Restore the state `resume_state` saved, then replay its epochs' logs (as cached)."""
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["opt"])
        self.schedule.load_state_dict(saved["schedule"])
        if saved["scaler"]:
            self.amp.scaler.load_state_dict(saved["scaler"])
        self.gen.set_state(saved["gen"])
        torch.set_rng_state(saved["rng"][distributed.rank()])
        if self.x.device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"][distributed.rank()], self.x.device)
        self.best_val, self.best_epoch, self.best_state = saved["best_val"], saved["best_epoch"], saved["best_state"]
        self.next_epoch, self.done, self.history = saved["next_epoch"], saved["done"], saved["history"]
        log.info("resumed %s at epoch %d%s", tag, self.next_epoch, " (finished)" if self.done else "")
        for h in self.history:
            on_epoch(EpochLog(**{**h, "seconds": math.nan, "samples_per_s": math.nan, "cached": True}))

    def run_epoch(self, epoch: int, tag: str, interactive: bool, on_epoch: Callable[[EpochLog], None]) -> None:
        """Train one epoch, take the early-stopping loss, log it, and update the bookkeeping."""
        t0 = time.perf_counter()
        lr = self.schedule.lr(epoch)
        for group in self.opt.param_groups:
            group["lr"] = lr
        train_loss = self._train_epoch(interactive)
        val_loss = self._val_loss()
        if not math.isfinite(train_loss) or (self.early_stopping and not math.isfinite(val_loss)):
            raise PipelineError(
                f"train: loss is not finite in {tag} epoch {epoch}; lower train.lr or set train.grad_clip"
            )
        seconds = time.perf_counter() - t0
        entry = EpochLog(
            tag,
            epoch,
            train_loss,
            val_loss,
            lr,
            seconds,
            len(self.fit_rows) / seconds,
            self.amp.name,
            self.amp.loss_scale(),
        )
        on_epoch(entry)
        self.history.append({k: v for k, v in asdict(entry).items() if k not in ("seconds", "samples_per_s", "cached")})
        self._end_epoch(epoch, val_loss)

    def _train_epoch(self, interactive: bool) -> float:
        """One pass over the fit rows in a fresh order; the mean train loss over every rank."""
        self.net.train()
        n = len(self.fit_rows)
        total = torch.zeros((), device=self.x.device)
        with tqdm(total=n, unit="sample", leave=False, disable=not interactive) as batches:
            for group_rows, parts in self._steps():
                self._accumulate_gradients(group_rows, parts, total)
                batches.update(len(group_rows))
                self._optimizer_step()
        return float(distributed.all_reduce_sum(total)) / n

    def _steps(self) -> Iterator[tuple[torch.Tensor, list[tuple[torch.Tensor, int]]]]:
        """Each optimizer step's rows and this rank's micro-batches of them, in a fresh order: random rows,
        `batch_size * accumulate` a step in micro-batches of `batch_size`; or (by_date) `accumulate`
        whole-date batches a step, each batch one micro-batch (a rank takes every world-th row of it)."""
        if self.by_date is None:
            n = len(self.fit_rows)
            order = self.fit_rows[torch.randperm(n, generator=self.gen).to(self.fit_rows.device)]
            for g in range(0, n, self.step_rows):
                group_rows = order[g : g + self.step_rows]
                yield group_rows, distributed.micro_batches(group_rows, self.micro)
            return
        batches, acc = self.by_date.batches(self.gen), self.cfg["accumulate"]
        for g in range(0, len(batches), acc):
            step = batches[g : g + acc]
            yield torch.cat(step), [part for b in step for part in distributed.micro_batches(b, len(b))]

    def _loss(self, pred: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.lossf(pred, self.y[rows], None if self.dates is None else self.dates[rows])

    def _accumulate_gradients(
        self, group_rows: torch.Tensor, parts: list[tuple[torch.Tensor, int]], total: torch.Tensor
    ) -> None:
        """The gradients of one optimizer step's rows, micro-batch by micro-batch, each micro-batch's
        mean loss weighted by its share of the step's rows; adds the summed loss to `total`."""
        self.opt.zero_grad(set_to_none=True)
        for i, (rows, counted) in enumerate(parts):
            with distributed.no_sync(self.net, accumulate=i < len(parts) - 1):
                with self.amp.autocast():
                    loss = self._loss(self.net(windows(self.x, rows, self.seq_len)).float(), rows)
                share = counted * self.world / len(group_rows)
                self.amp.scaler.scale(loss if share == 1 else loss * share).backward()
            total += loss.detach() * counted

    def _optimizer_step(self) -> None:
        self.amp.scaler.unscale_(self.opt)
        if self.cfg["grad_clip"] > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["grad_clip"])
        self.amp.scaler.step(self.opt)
        self.amp.scaler.update()

    def _val_loss(self) -> float:
        """The loss on the early-stopping rows (NaN without them), over all of them at once (loss ic: the
        mean over the validation dates of each date's IC over all its rows). Every rank computes it; rank
        0's value decides early stopping everywhere."""
        if not self.early_stopping:
            return math.nan
        pred = predict_scaled(self.model, self.x, self.val_rows, self.seq_len, self.amp)
        return distributed.broadcast(float(self._loss(pred, self.val_rows)))

    def _end_epoch(self, epoch: int, val_loss: float) -> None:
        """The plateau schedule, the best epoch so far (its weights kept), and whether to stop."""
        self.schedule.observe(val_loss)
        if not self.early_stopping:
            self.best_epoch, self.best_val = epoch, math.nan
        elif val_loss < self.best_val:
            self.best_val, self.best_epoch, self.best_state = val_loss, epoch, _clone(self.model.state_dict())
        self.next_epoch = epoch + 1
        self.done = epoch + 1 >= self.n_epochs or (
            self.early_stopping and epoch - self.best_epoch >= self.cfg["patience"]
        )

    def resume_state(self) -> dict[str, Any]:
        """Everything `resume` restores, after the last completed epoch; the RNG states of every rank, in rank order."""
        cuda = self.x.device.type == "cuda"
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.amp.scaler.state_dict(),
            "gen": self.gen.get_state(),
            "rng": distributed.all_gather(torch.get_rng_state()),
            "cuda_rng": distributed.all_gather(torch.cuda.get_rng_state(self.x.device)) if cuda else None,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "next_epoch": self.next_epoch,
            "done": self.done,
            "history": self.history,
        }

    def finish(self) -> tuple[int, float, int]:
        """With early stopping, reload the best epoch's weights; (best_epoch, best_val_loss, epochs_run)."""
        if self.early_stopping:
            self.model.load_state_dict(self.best_state)
        return self.best_epoch, self.best_val, len(self.history)


def _need(dates: torch.Tensor | None) -> torch.Tensor:
    if dates is None:
        raise ValueError("train.batching by_date needs each row's anchor date (fit_torch dates=...)")
    return dates


def fit_torch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    fit_rows: torch.Tensor,
    val_rows: torch.Tensor,
    seq_len: int,
    cfg: dict[str, Any],
    amp: Amp,
    tag: str,
    on_epoch: Callable[[EpochLog], None],
    seed: int,
    epochs: int | None = None,
    cache: RunCache | None = None,
    dates: torch.Tensor | None = None,
) -> tuple[int, float, int]:
    """Train; with early-stopping (val) rows, stop early and reload the best epoch's weights;
    without (a refit), run exactly `epochs` epochs and keep the last weights. `dates` (each row's
    anchor date as int64) is needed by train.batching by_date and train.loss ic.

    One optimizer step per `batch_size * accumulate` rows; each micro-batch's mean loss is
    weighted by its share of the step's rows, so the step equals one on the large batch.
    Under torchrun both sizes are global: the ranks split each step's rows (lib/ml/distributed.py).
    by_date: a step is `accumulate` whole-date batches of about `batch_size` rows (lib/ml/by_date.py).
    Returns (best_epoch, best_val_loss, epochs_run)."""
    cache = cache or RunCache(None)
    n_epochs = epochs if epochs is not None else cfg["epochs"]
    run = _TorchFit(model, x, y, fit_rows, val_rows, seq_len, cfg, amp, seed, n_epochs, dates)
    distributed.seed_rank(seed)
    saved = distributed.broadcast(cache.load(tag))  # rank 0 holds the resume state
    if saved is not None:
        run.resume(saved, tag, on_epoch)
    interactive = sys.stderr.isatty() and distributed.is_main()
    with tqdm(
        total=run.n_epochs,
        initial=run.next_epoch,
        desc=tag,
        unit="epoch",
        disable=not interactive or run.done,
        leave=False,
    ) as bar:
        for epoch in range(run.next_epoch, run.n_epochs):
            if run.done:
                break
            run.run_epoch(epoch, tag, interactive, on_epoch)
            cache.save(tag, run.resume_state())
            bar.update(1)
    return run.finish()
